"""Whether this user may use a store root at all: one line instead of a traceback.

Kept apart from ``eventstore.private`` (which makes and fixes modes) so that the CLI's
fast read path, which runs this on every call, imports nothing but ``os`` and ``stat``
for it (docs/security.md, "Who can reach layer data").
"""

from __future__ import annotations

import os
import stat

from eventstore.errors import AccessDenied
from eventstore.names import shown


def check_access(root: str | os.PathLike, write: bool) -> None:
    """AccessDenied, one line, when this user may not read (or ``write``) the store at
    ``root``; nothing when it may, or when there is no store there yet."""
    for path in (os.fspath(root), os.path.join(root, "log")):
        try:
            st = os.stat(path)
        except PermissionError:
            raise AccessDenied(f"cannot reach the layer store at {shown(root)}: permission denied on "
                               "a directory on the way") from None
        except OSError:
            return  # missing (a new store), or not a directory: the open says which
        if not _may(path, os.R_OK | os.X_OK):
            raise AccessDenied(f"cannot read the layer store at {shown(root)}: permission denied on {shown(path)} "
                               f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); "
                               "run as its owner")
        if write and not _may(path, os.W_OK):
            if os.statvfs(path).f_flag & os.ST_RDONLY:
                raise AccessDenied(f"cannot change the layer store at {shown(root)}: it is on a read-only "
                                   "filesystem")
            raise AccessDenied(f"cannot change the layer store at {shown(root)}: permission denied on {shown(path)} "
                               f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); "
                               "run as its owner")


def _may(path: str, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
