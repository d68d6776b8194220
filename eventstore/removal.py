"""Removing a directory tree without ever leaving its filesystem (DESIGN §4).

(Interim: refuses when anything is mounted inside, then removes. The fd-relative walk
that checks every directory's mount comes with the security work, issue #12.)
"""

from __future__ import annotations

import os
import shutil

from eventstore.errors import LayerInUse
from eventstore.mounts import mount_points


def remove_tree(path: str | os.PathLike) -> None:
    """Remove ``path`` and everything below it, on its own filesystem only."""
    inside = mount_points(path)
    if inside:
        raise LayerInUse(f"{sorted(inside)[0]} is mounted inside {path}: unmount it first; nothing was removed")
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
