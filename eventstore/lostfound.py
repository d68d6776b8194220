"""``<root>/lost+found/``: data the log does not account for, moved aside, never deleted.

Recovery's sweep moves here the drivers' layer data and the tar-splits of layers no
event names, and stray entries of the store's directories (docs/integrity.md). Each
entry is named ``<UTC time>-<what>-<name>`` so that two sweeps never collide and an
operator sees when and what. Only the operator deletes from here
(``layerstore lost+found --purge``), and never across a mount.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

from eventstore.errors import InvalidArgument, LayerInUse, StorageError
from eventstore.fsutil import fsync_dir
from eventstore.mounts import mount_points

DIRECTORY = "lost+found"


class Entry(NamedTuple):
    name: str
    path: Path
    size: int  # bytes, counted without crossing into mounts


def lost_found_dir(root: Path) -> Path:
    return Path(root) / DIRECTORY


def lost_found_path(root: Path, what: str, name: str) -> Path:
    """A fresh path in lost+found for ``name`` (``what``: driver, tar-split, stray)."""
    directory = lost_found_dir(root)
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fsync_dir(directory.parent)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{stamp}-{what.replace(' ', '-')}-{name}"
    path, n = directory / base, 0
    while path.exists():
        n += 1
        path = directory / f"{base}.{n}"
    return path


def entries(root: Path) -> list[Entry]:
    """What lost+found holds, oldest first."""
    directory = lost_found_dir(root)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [Entry(name, directory / name, _size(directory / name)) for name in names]


def _size(path: Path) -> int:
    total = 0
    top = os.lstat(path)
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == top.st_dev]
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total or top.st_size


def purge(root: Path, name: str) -> Path:
    """Delete the lost+found entry ``name`` for good; refused while anything is mounted
    inside it. Its path."""
    from eventstore.removal import remove_tree

    if not name or "/" in name or name in (".", ".."):
        raise InvalidArgument(f"invalid lost+found entry {name!r}")
    path = lost_found_dir(root) / name
    if not os.path.lexists(path):
        raise InvalidArgument(f"lost+found has no entry {name!r} (see 'layerstore lost+found')")
    inside = mount_points(path)
    if inside:
        raise LayerInUse(f"lost+found entry {name}: {sorted(inside)[0]} is mounted inside; unmount it first")
    try:
        remove_tree(path)
    except OSError as exc:
        raise StorageError(f"lost+found entry {name}: cannot delete {exc.filename or path}: {exc.strerror}") from exc
    fsync_dir(path.parent)
    return path
