"""diff_changes: a tar of what a layer changed, for layers without a tar-split (a
writable layer changed through its mount).

overlay: the layer's own directory *is* the change set (its upper dir): every entry
is emitted; 0:0 character devices become ``.wh.NAME`` and directories marked
``trusted.overlay.opaque=y`` get a ``.wh..wh..opq`` entry.

fuse-overlayfs: an upper dir too, holding whatever fuse-overlayfs writes or reads:
besides the kernel's forms, ``.wh.NAME`` files (whiteouts, emitted as they are), and
opaque directories marked by ``user.overlay.opaque`` or ``user.fuseoverlayfs.opaque``
or holding a ``.wh..wh..opq`` file (fuse-overlayfs writes the file *and* an xattr; one
marker is emitted).

delete: the layer is a full tree; it is compared with its parent's full tree. Entries
that are new, or differ in type, mode, owner, size, mtime, link target, device or
xattrs, are emitted (with their parent directories, so the tar applies on its own);
entries the parent had and the layer lacks become ``.wh.NAME``. A regular file with
the same size and mtime is taken as unchanged (what containers-storage and moby do:
reading every byte of both trees would cost as much as copying them).

Walks hold directory fds and never follow symlinks. Times are written in whole seconds
(as moby and containers-storage do, so that diffs are reproducible).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from eventstore.archive import writer
from eventstore.archive.extract import RESERVED_XATTRS
from eventstore.errors import InvalidArgument, StorageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SKIPPED_XATTRS = RESERVED_XATTRS  # the overlay drivers' own: never part of a layer's content
WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"
OPAQUE_XATTR = b"trusted.overlay.opaque"
FUSE_OPAQUE_XATTRS = (OPAQUE_XATTR, b"user.overlay.opaque", b"user.fuseoverlayfs.opaque")
FORMATS = ("overlay", "delete", "fuse-overlayfs")
READ_CHUNK = 1 << 20


def diff_changes(layer_dir: Path, parent_dirs: list[Path], whiteout_format: str
                 ) -> Iterator[bytes]:
    """A tar (ending with the end-of-archive blocks) of the layer's changes."""
    if whiteout_format not in FORMATS:
        raise InvalidArgument(f"whiteout_format must be one of {FORMATS}, not {whiteout_format!r}")
    layer_fd = _open_dir(layer_dir)
    parent_fd = None
    if whiteout_format == "delete" and parent_dirs:
        try:
            parent_fd = _open_dir(parent_dirs[0])
        except BaseException:
            os.close(layer_fd)
            raise
    return _Diff(layer_fd, parent_fd, whiteout_format != "delete", whiteout_format == "fuse-overlayfs").run()


def _open_dir(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise InvalidArgument(f"cannot open layer directory {path}: {err.strerror}") from None


class _Node:
    """One directory entry as the diff sees it."""

    __slots__ = ("name", "st", "link", "xattrs")

    def __init__(self, dir_fd: int, name: bytes):
        self.name = name
        self.st = os.lstat(name, dir_fd=dir_fd)
        self.link = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(self.st.st_mode) else b""
        self.xattrs = _xattrs(dir_fd, name)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    def same_as(self, other: "_Node") -> bool:
        a, b = self.st, other.st
        if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
            return False
        if self.link != other.link or self.xattrs != other.xattrs:
            return False
        if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
            return a.st_rdev == b.st_rdev
        if stat.S_ISDIR(a.st_mode):
            return a.st_mtime_ns == b.st_mtime_ns
        return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


class _Diff:
    def __init__(self, layer_fd: int, parent_fd: int | None, overlay: bool, fuse: bool = False):
        self._layer_fd = layer_fd
        self._parent_fd = parent_fd
        self._overlay = overlay
        self._fuse = fuse
        self._links: dict[tuple[int, int], bytes] = {}
        # directories on the current path whose header is not out yet (delete format:
        # a directory is emitted only when something under it changed)
        self._pending_dirs: list[tuple[bytes, _Node]] = []

    def run(self) -> Iterator[bytes]:
        try:
            yield from self._walk()
            yield writer.END_OF_ARCHIVE
        finally:
            os.close(self._layer_fd)
            if self._parent_fd is not None:
                os.close(self._parent_fd)

    def _walk(self) -> Iterator[bytes]:
        if self._overlay and _opaque(self._layer_fd, None, self._fuse):
            yield self._marker(b"", OPAQUE, os.fstat(self._layer_fd))
        # Only the current directory's fds are held (one per tree, plus the parent
        # tree's fd from where a layer-only subtree began): the way back up is "..",
        # so no depth of directories runs the process out of descriptors.
        self._here = os.dup(self._layer_fd)
        self._here_parent = None if self._parent_fd is None else os.dup(self._parent_fd)
        # frames: [path, names left (reversed), parent-tree fd kept aside, has parent dir]
        stack = [[b"", self._names(), None, self._here_parent is not None]]
        try:
            while stack:
                path, names, _, _ = frame = stack[-1]
                if names:
                    name = names.pop()
                    yield from self._visit(stack, path + name, name)
                    continue
                stack.pop()
                if path:
                    self._leave(frame)
                    if self._pending_dirs and self._pending_dirs[-1][0] == path:
                        self._pending_dirs.pop()
        finally:
            for fd in [self._here, self._here_parent] + [f[2] for f in stack]:
                if fd is not None:
                    os.close(fd)

    def _enter(self, stack, path: bytes, name: bytes, with_parent: bool) -> None:
        down = os.open(name, _DIR_FLAGS, dir_fd=self._here)
        os.close(self._here)
        self._here = down
        kept = None
        if with_parent:
            down = os.open(name, _DIR_FLAGS, dir_fd=self._here_parent)
            os.close(self._here_parent)
            self._here_parent = down
        else:  # nothing below here in the parent tree; its fd waits for the way back
            kept, self._here_parent = self._here_parent, None
        stack.append([path, self._names(), kept, with_parent])

    def _leave(self, frame) -> None:
        up = os.open(b"..", _DIR_FLAGS, dir_fd=self._here)
        os.close(self._here)
        self._here = up
        if frame[3]:
            up = os.open(b"..", _DIR_FLAGS, dir_fd=self._here_parent)
            os.close(self._here_parent)
            self._here_parent = up
        else:
            self._here_parent, frame[2] = frame[2], None

    def _names(self) -> list[bytes]:
        """Names to visit in the current directory, in reverse order (popped)."""
        names = set(_list(self._here))
        if self._here_parent is not None:
            names.update(_list(self._here_parent))
        return sorted(names, reverse=True)

    def _visit(self, stack, child: bytes, name: bytes) -> Iterator[bytes]:
        layer_fd, parent_fd = self._here, self._here_parent
        try:
            node = _Node(layer_fd, name)
        except FileNotFoundError:
            node = None
        old = None
        if parent_fd is not None:
            try:
                old = _Node(parent_fd, name)
            except FileNotFoundError:
                old = None
        if node is None:  # only the parent has it: deleted
            yield from self._flush_pending()
            yield self._marker(child.rpartition(b"/")[0], WHITEOUT + name, old.st)
            return
        if node.is_dir:
            same_dir = old is not None and old.is_dir
            if self._overlay or not same_dir or not node.same_as(old):
                yield from self._flush_pending()
                yield self._entry(child + b"/", node, layer_fd)
            else:
                self._pending_dirs.append((child + b"/", node))
            if self._overlay and _opaque(layer_fd, name, self._fuse):
                yield self._marker(child, OPAQUE, node.st)
            self._enter(stack, child + b"/", name, same_dir)
            return
        if old is not None and old.same_as(node):
            return
        yield from self._flush_pending()
        whiteout = self._overlay and stat.S_ISCHR(node.st.st_mode) and node.st.st_rdev == 0
        if self._fuse and (whiteout or name.startswith(WHITEOUT)):
            tar_name = WHITEOUT + name if whiteout else name
            if tar_name != OPAQUE:  # an opaque dir's marker went out with the dir
                yield self._marker(child.rpartition(b"/")[0], tar_name, node.st)
            return
        if whiteout:
            yield self._marker(child.rpartition(b"/")[0], WHITEOUT + name, node.st)
            return
        yield from self._file(child, node, layer_fd)

    def _flush_pending(self) -> Iterator[bytes]:
        for path, node in self._pending_dirs:
            yield self._entry(path, node, None)
        self._pending_dirs.clear()

    def _marker(self, directory: bytes, name: bytes, st: os.stat_result) -> bytes:
        path = directory.rstrip(b"/") + b"/" + name if directory.rstrip(b"/") else name
        return writer.header(path, "file", mode=0o644 if name == OPAQUE else 0,
                             uid=st.st_uid, gid=st.st_gid, mtime=int(st.st_mtime))

    def _entry(self, path: bytes, node: _Node, dir_fd: int | None, **extra) -> bytes:
        st = node.st
        return writer.header(path, extra.pop("kind", _kind(st.st_mode)),
                             mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                             mtime=int(st.st_mtime), xattrs=node.xattrs, **extra)

    def _file(self, path: bytes, node: _Node, dir_fd: int) -> Iterator[bytes]:
        st = node.st
        kind = _kind(st.st_mode)
        if kind is None:
            return  # sockets cannot be in a tar
        if kind == "symlink":
            yield self._entry(path, node, dir_fd, linkname=node.link)
            return
        if kind in ("chardev", "blockdev"):
            yield self._entry(path, node, dir_fd, devmajor=os.major(st.st_rdev),
                              devminor=os.minor(st.st_rdev))
            return
        if kind == "fifo":
            yield self._entry(path, node, dir_fd)
            return
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key)
            if first is not None:
                yield self._entry(path, node, dir_fd, kind="hardlink", linkname=first)
                return
            self._links[key] = path
        yield self._entry(path, node, dir_fd, size=st.st_size)
        yield from _content(dir_fd, node.name, st.st_size, path)
        yield writer.padding(st.st_size)


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode):
        return "chardev"
    if stat.S_ISBLK(mode):
        return "blockdev"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return None


def _list(fd: int) -> list[bytes]:
    with os.scandir(fd) as it:
        return [os.fsencode(e.name) for e in it]


def _xattr_target(dir_fd: int, name: bytes | None) -> tuple[int | bytes, bool]:
    if name is None:
        return dir_fd, True
    return b"/proc/self/fd/%d/%s" % (dir_fd, name), False


def _opaque(dir_fd: int, name: bytes | None, fuse: bool = False) -> bool:
    target, follow = _xattr_target(dir_fd, name)
    for xattr in FUSE_OPAQUE_XATTRS if fuse else (OPAQUE_XATTR,):
        try:
            if os.getxattr(target, xattr, follow_symlinks=follow) == b"y":
                return True
        except OSError:
            continue
    return fuse and _has_opaque_entry(dir_fd, name)


def _has_opaque_entry(dir_fd: int, name: bytes | None) -> bool:
    """fuse-overlayfs's opaque marker entries: a ``.wh..wh..opq`` file, or a whiteout
    (0:0 device) of the name ``.wh..opq``, which reads the same in a tar."""
    prefix = b"" if name is None else name + b"/"
    for entry, is_marker in ((OPAQUE, lambda st: True),
                             (b".wh..opq", lambda st: stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)):
        try:
            if is_marker(os.lstat(prefix + entry, dir_fd=dir_fd)):
                return True
        except OSError:
            continue
    return False


def _xattrs(dir_fd: int, name: bytes | None) -> list[tuple[bytes, bytes]]:
    """Sorted xattrs of an entry (the directory itself when name is None), without
    overlayfs's own."""
    target, follow = _xattr_target(dir_fd, name)
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError:
        return []
    out = []
    for xname in sorted(os.fsencode(n) for n in names):
        if xname.startswith(_SKIPPED_XATTRS):
            continue
        try:
            out.append((xname, os.getxattr(target, xname, follow_symlinks=follow)))
        except OSError:
            continue
    return out


def _content(dir_fd: int, name: bytes, size: int, path: bytes) -> Iterator[bytes]:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        left = size
        while left:
            chunk = os.read(fd, min(left, READ_CHUNK))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
        if left or os.read(fd, 1):
            shown = path.decode("utf-8", "backslashreplace")
            raise StorageError(f"{shown} changed size while the diff was read; "
                               "stop the container and try again")
    finally:
        os.close(fd)
