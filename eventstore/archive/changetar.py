"""export_changes: a tar of a change list (``eventstore.changeset``), read from the tree
the changes lead to — what ``diff ID REF`` writes, and the diff of an ID-mapped layer.

Each added or modified path is one entry with its metadata (owners shown as the content
sees them, through the layer's ID mapping); a directory entry carries no contents (its
changed children have their own entries); a deleted path is a ``.wh.NAME`` whiteout,
timed as its parent directory so that the same layers give the same tar. Hardlinked
files are stored once, then as links. The tar applies on top of the other layer with
any tool that knows OCI whiteouts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from eventstore.archive import writer
from eventstore.archive.extract import RESERVED_XATTRS
from eventstore.changeset import DELETE, Change
from eventstore.errors import StorageError
from eventstore.idmap import Owners

_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "chardev"),
          (stat.S_ISBLK, "blockdev"), (stat.S_ISFIFO, "fifo"))
_SKIPPED_XATTRS = RESERVED_XATTRS  # the overlay drivers' own: never part of a layer's content
_CHUNK = 1 << 20


def export_changes(root: Path, changes: Iterable[Change], owners: Owners | None = None) -> Iterator[bytes]:
    """The tar (ending with its end-of-archive blocks) of ``changes`` over ``root``."""
    owners = owners or Owners()
    base = os.fsencode(root)
    first_of_inode: dict[tuple[int, int], bytes] = {}
    for change in changes:
        path = os.fsencode(change.path).lstrip(b"/")
        if change.kind == DELETE:
            yield _whiteout(base, path, owners)
            continue
        try:
            st = os.lstat(base + b"/" + path)
        except FileNotFoundError:
            continue  # gone since the list was made
        yield from _entry(base, path, st, owners, first_of_inode)
    yield writer.END_OF_ARCHIVE


def _whiteout(base: bytes, path: bytes, owners: Owners) -> bytes:
    parent, _, name = path.rpartition(b"/")
    try:
        st = os.lstat(base + b"/" + parent if parent else base)
        mtime, uid, gid = int(st.st_mtime), *owners.container(st.st_uid, st.st_gid)
    except OSError:
        mtime, uid, gid = 0, 0, 0
    marker = (parent + b"/" if parent else b"") + b".wh." + name
    return writer.header(marker, "file", mode=0, uid=uid, gid=gid, mtime=mtime)


def _entry(base: bytes, path: bytes, st: os.stat_result, owners: Owners,
           first_of_inode: dict[tuple[int, int], bytes]) -> Iterator[bytes]:
    kind = next((name for test, name in _KINDS if test(st.st_mode)), None)
    if kind is None:
        return  # a socket: no tar can hold it
    full = base + b"/" + path
    uid, gid = owners.container(st.st_uid, st.st_gid)
    fields = dict(mode=stat.S_IMODE(st.st_mode), uid=uid, gid=gid, mtime=int(st.st_mtime), xattrs=_xattrs(full))
    if kind == "dir":
        yield writer.header(path + b"/", "dir", **fields)
    elif kind == "symlink":
        yield writer.header(path, "symlink", linkname=os.readlink(full), **fields)
    elif kind in ("chardev", "blockdev"):
        yield writer.header(path, kind, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev), **fields)
    elif kind == "fifo":
        yield writer.header(path, "fifo", **fields)
    elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in first_of_inode:
        yield writer.header(path, "hardlink", linkname=first_of_inode[(st.st_dev, st.st_ino)], **fields)
    else:
        if st.st_nlink > 1:
            first_of_inode[(st.st_dev, st.st_ino)] = path
        yield writer.header(path, "file", size=st.st_size, **fields)
        yield from _content(full, st.st_size)
        yield writer.padding(st.st_size)


def _xattrs(full: bytes) -> list[tuple[bytes, bytes]]:
    try:
        names = sorted(os.fsencode(n) for n in os.listxattr(full, follow_symlinks=False))
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(_SKIPPED_XATTRS):
            continue
        try:
            found.append((name, os.getxattr(full, name, follow_symlinks=False)))
        except OSError:
            continue
    return found


def _content(full: bytes, size: int) -> Iterator[bytes]:
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = size
        while left:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        os.close(fd)
    if left:
        raise StorageError(f"{os.fsdecode(full)} shrank while the diff was read; stop what writes it and try again")
