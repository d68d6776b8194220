"""Removing a directory tree without ever leaving its filesystem (DESIGN §4).

Container engines bind-mount volumes into layer paths every day; a recursive delete
that walks into such a mount deletes the volume's files. ``remove_tree``:

1. reads the mount table first: anything mounted at or below the tree is refused
   (``ForeignMount``, naming the mount point) before a single entry is removed;
2. walks with directory fds (``openat`` with ``O_DIRECTORY | O_NOFOLLOW``, ``unlinkat``,
   ``rmdir`` with ``dir_fd``), so no path string is resolved twice and no symlink is
   ever followed, and checks that every directory it enters lies on the tree's own
   mount: by mount id, not only ``st_dev`` (a bind mount of a directory of the same
   filesystem has the same ``st_dev``). A mount made during the walk stops it there;
3. holds one directory fd at a time whatever the depth, and goes back up through
   ``..``, checking it arrived in the directory it came from (device and inode): a
   directory moved during the walk stops the walk instead of sending it elsewhere.

Every open, unlink, rmdir and fsync goes through ``os`` at call time, so the power-loss
simulation (replay/powerloss.py), which interposes those, sees each of them.
"""

from __future__ import annotations

import errno
import os
import stat

from eventstore.errors import ForeignMount, StorageError
from eventstore.mounts import mount_id_of, mounts_under, real_path
from eventstore.names import shown

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: directories found refilled (by a process still writing there) that are emptied again
MAX_RESCANS = 16


def refuse_mounts(path: str | os.PathLike) -> None:
    """Raise ForeignMount when anything is mounted at or below ``path``."""
    inside = mounts_under(path)
    if inside:
        first = inside[0]
        more = f" (and {len(inside) - 1} more mount(s) below)" if len(inside) > 1 else ""
        raise ForeignMount(f"{shown(first.point)} is mounted inside {shown(path)} ({first.fstype} from "
                           f"{shown(first.source)}){more}: unmount it first; nothing was removed", first.point)


def remove_tree(path: str | os.PathLike) -> None:
    """Remove ``path`` and everything below it, on its own filesystem only; nothing
    when it does not exist (a symlink or file at ``path`` is unlinked, not followed).

    Raises ForeignMount when something is mounted inside (before removing anything,
    or, for a mount made during the walk, before entering it), StorageError when the
    tree is moved under the walk, OSError for what the kernel refuses (EPERM on an
    immutable file, EROFS). The parent directory is fsync'd after a removal.
    """
    path = real_path(path)
    refuse_mounts(path)
    parent, name = os.path.split(path)
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if _remove_entry(parent_fd, name, path):
            os.fsync(parent_fd)
    finally:
        os.close(parent_fd)


def _remove_entry(parent_fd: int, name: str, path: str) -> bool:
    """Remove ``name`` in ``parent_fd``; False when there was nothing to remove."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        _unlink(parent_fd, name, path)
        return True
    top_fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        parent_st = os.fstat(parent_fd)
        _same_mount(top_fd, parent_st.st_dev, mount_id_of(parent_fd), path)
    except BaseException:
        os.close(top_fd)
        raise
    _Walk(top_fd, path).run()
    _rmdir(parent_fd, name, path)
    return True


def _same_mount(fd: int, dev: int, mount_id: int, path: str) -> os.stat_result:
    """The stat of ``fd``; ForeignMount when it is not on mount ``mount_id``."""
    st = os.fstat(fd)
    if st.st_dev != dev or mount_id_of(fd) != mount_id:
        raise ForeignMount(f"{shown(path)} is a mount point (another filesystem, or a bind mount): "
                           "unmount it first; nothing below it was removed", path)
    return st


def _unlink(dir_fd: int, name: str, path: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno == errno.EBUSY:  # a file bind-mounted over this one
            raise ForeignMount(f"{shown(path)} is a mount point: unmount it first", path) from None
        raise OSError(err.errno, err.strerror, path) from None  # the whole path, for the message


def _rmdir(dir_fd: int, name: str, path: str) -> None:
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno == errno.EBUSY:  # mounted on after the walk emptied it
            raise ForeignMount(f"{shown(path)} is a mount point: unmount it first", path) from None
        raise OSError(err.errno, err.strerror, path) from None


class _Frame:
    """A directory on the way down: its name in its parent, its identity, and the
    subdirectories still to empty."""

    __slots__ = ("name", "path", "ident", "subdirs")

    def __init__(self, name: str, path: str, st: os.stat_result):
        self.name, self.path = name, path
        self.ident = (st.st_dev, st.st_ino)
        self.subdirs: list[str] = []


class _Walk:
    """Empties the directory ``top_fd`` (which it takes over and closes)."""

    def __init__(self, top_fd: int, top_path: str):
        self.fd = top_fd
        top = os.fstat(top_fd)
        self.dev, self.mount_id = top.st_dev, mount_id_of(top_fd)
        self.stack = [_Frame("", top_path, top)]
        self.rescans = 0

    def run(self) -> None:
        try:
            self._scan()
            while True:
                frame = self.stack[-1]
                if frame.subdirs:
                    self._down(frame.subdirs.pop())
                elif len(self.stack) == 1:
                    return
                else:
                    self._up()
        finally:
            os.close(self.fd)

    def _scan(self) -> None:
        """Unlink every entry of the current directory but its subdirectories, which
        are remembered (listed first: a directory changed while read may skip names)."""
        frame = self.stack[-1]
        with os.scandir(self.fd) as entries:
            listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for name, is_dir in listed:
            if is_dir:
                frame.subdirs.append(name)
                continue
            try:
                _unlink(self.fd, name, f"{frame.path}/{name}")
            except IsADirectoryError:  # replaced by a directory since it was listed
                frame.subdirs.append(name)

    def _down(self, name: str) -> None:
        frame = self.stack[-1]
        path = f"{frame.path}/{name}"
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            _unlink(self.fd, name, path)  # replaced by a symlink or a file since it was listed
            return
        try:
            st = _same_mount(fd, self.dev, self.mount_id, path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self.fd)
        self.fd = fd
        self.stack.append(_Frame(name, path, st))
        self._scan()

    def _up(self) -> None:
        done = self.stack.pop()
        parent = self.stack[-1]
        up = os.open("..", _DIR_FLAGS, dir_fd=self.fd)
        st = os.fstat(up)
        if (st.st_dev, st.st_ino) != parent.ident:
            os.close(up)
            raise StorageError(f"{shown(done.path)} was moved while being removed; stopped there")
        os.close(self.fd)
        self.fd = up
        try:
            _rmdir(up, done.name, done.path)
        except OSError as err:
            if err.errno != errno.ENOTEMPTY or self.rescans >= MAX_RESCANS:
                raise
            self.rescans += 1  # something wrote into it meanwhile: empty it again
            parent.subdirs.append(done.name)
