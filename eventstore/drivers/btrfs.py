"""The btrfs driver: every layer a btrfs subvolume; a child starts as a snapshot of its parent.

    <home>/subvolumes/<id>   the layer's subvolume: its files, and its mounted view
    <home>/read-only/<id>    an empty file: the layer was created read-only

Decisions, and why (docs/drivers.md has the operator's side):

- ioctls (``btrfs_ioctl``), not the ``btrfs`` command: a layer is one syscall (a
  snapshot, which the kernel commits before it returns) where the command is a process
  per layer; errors come back as errnos, not as text to parse; and running a store needs
  no btrfs-progs (only making the filesystem does).
- a child is a writable snapshot of its parent: no byte is copied whatever the parent's
  size, and the two share extents until one of them writes.
- ``mount`` returns the subvolume itself and mounts nothing, as containers-storage's
  btrfs driver does: a subvolume already is a directory of a mounted filesystem, so a
  bind mount would only add a kernel mount to leak after a crash and to reconcile.
  Like vfs, ``is_mounted`` means the subvolume exists and the store keeps the counts.
- read-only layers get btrfs's read-only property when the first child is snapshotted
  from them, not when they complete: the store's contract lets a caller write into a
  complete layer's diff dir (overlay allows it too: who may write is the store's rule,
  not the filesystem's), and from the moment another layer is built on one, its content
  is final. The ``read-only/<id>`` mark remembers which layers to freeze.
- whiteouts are applied by deletion (``whiteout_format = "delete"``): a subvolume is a
  full tree, as a vfs copy is.
- ``fs_info``: with quotas enabled, ``used_bytes`` is the subvolume's *exclusive* size
  from its qgroup, what it does not share with its parent (read after a syncfs, which
  brings the kernel's accounting up to date); without quotas (or with inconsistent
  ones), the allocated blocks of a walk, as vfs. Inodes always come from the walk:
  qgroups do not count them.
- ``remove`` never deletes across a mount: whatever is mounted inside the subvolume (a
  container runtime mounts /proc and /dev into the rootfs it was given) makes it refuse,
  naming the mount. Subvolumes made inside a layer (by a container) are deleted first.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from eventstore import faults
from eventstore.drivers import btrfs_ioctl as ioctl
from eventstore.drivers.base import Driver, FsInfo, checked_layer_id, is_valid_layer_id, tree_usage
from eventstore.errors import DriverError
from eventstore.fsutil import fsync_dir
from eventstore.removal import refuse_mounts
from eventstore.rootless import is_rootless

SYSFS_BTRFS = Path("/sys/fs/btrfs")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BtrfsDriver(Driver):
    """Layers as btrfs subvolumes, children as snapshots."""

    name = "btrfs"
    whiteout_format = "delete"

    def __init__(self, home: Path):
        super().__init__(Path(home).absolute())
        self.subvolumes_dir = self.home / "subvolumes"
        self.read_only_dir = self.home / "read-only"

    @classmethod
    def supported(cls, home: Path) -> str | None:
        base = _nearest_existing(Path(home).absolute())
        try:
            fs_type = ioctl.filesystem_type(base)
        except OSError as err:
            return f"cannot statfs {base}: {err.strerror}"
        if fs_type != ioctl.BTRFS_SUPER_MAGIC:
            return f"{base} is not on btrfs (statfs f_type {fs_type:#x}, btrfs is {ioctl.BTRFS_SUPER_MAGIC:#x})"
        if is_rootless():
            return "deleting btrfs subvolumes needs root (CAP_SYS_ADMIN in the initial user namespace)"
        return None

    # --- create and remove -----------------------------------------------------------

    def create(self, layer_id: str, parent_id: str | None, writable: bool) -> None:
        checked_layer_id(layer_id)
        source = self._open_parent(layer_id, parent_id) if parent_id is not None else None
        try:
            self.subvolumes_dir.mkdir(parents=True, exist_ok=True)
            self.read_only_dir.mkdir(exist_ok=True)
            self._make_subvolume(layer_id, parent_id, source)
        except OSError as err:
            if err.errno == errno.EEXIST:
                raise DriverError(f"layer {layer_id}: already exists in the btrfs driver") from None
            raise DriverError(f"layer {layer_id}: create failed: {err.strerror or err}") from err
        finally:
            if source is not None:
                os.close(source)
        try:
            faults.point("driver.btrfs.create.after-subvolume")
            self._mark(layer_id, writable)
        except BaseException as err:
            try:
                self._destroy(layer_id)
            except (OSError, DriverError):
                pass  # left for recovery: the layer is incomplete
            if isinstance(err, OSError):
                raise DriverError(f"layer {layer_id}: create failed: {err.strerror or err}") from err
            raise

    def _open_parent(self, layer_id: str, parent_id: str) -> int:
        try:
            return os.open(self._dir(parent_id), _DIR_FLAGS)
        except FileNotFoundError:
            raise DriverError(f"layer {layer_id}: parent {parent_id} does not exist in the btrfs driver") from None
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot open parent {parent_id}: {err.strerror}") from None

    def _make_subvolume(self, layer_id: str, parent_id: str | None, source: int | None) -> None:
        dir_fd = os.open(self.subvolumes_dir, _DIR_FLAGS)
        try:
            if source is None or parent_id is None:
                ioctl.create_subvolume(dir_fd, layer_id)
            else:
                self._freeze_if_read_only(parent_id, source)
                ioctl.snapshot(source, dir_fd, layer_id)
        finally:
            os.close(dir_fd)

    def _freeze_if_read_only(self, layer_id: str, fd: int) -> None:
        """Give a layer created read-only btrfs's read-only property: its content is
        final now that something builds on it."""
        if (self.read_only_dir / layer_id).exists() and not ioctl.is_readonly(fd):
            ioctl.set_readonly(fd)

    def _mark(self, layer_id: str, writable: bool) -> None:
        """Record whether the layer was created read-only (a mark left by an earlier
        layer of the same id is replaced, never trusted)."""
        mark = self.read_only_dir / layer_id
        if writable:
            mark.unlink(missing_ok=True)
        else:
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        fsync_dir(self.read_only_dir)  # durable with the layer (its completion follows)

    def remove(self, layer_id: str) -> None:
        path = self._dir(layer_id)
        self.check_removable(layer_id)  # never delete through a mount: ForeignMount, nothing deleted
        faults.point("driver.btrfs.remove.before-destroy")
        try:
            self._destroy(layer_id)
            faults.point("driver.btrfs.remove.after-destroy")
            self._unmark(layer_id)
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot remove {err.filename or path}: {err.strerror}") from err

    def set_aside(self, layer_id: str, target: Path) -> None:
        """Rename the subvolume to ``target`` (same filesystem: a rename, read-only
        subvolumes included); something mounted inside it keeps it where it is."""
        if not self._dir(layer_id).is_dir():
            return
        self.check_removable(layer_id)
        try:
            os.rename(self._dir(layer_id), target)
        except FileNotFoundError:
            return
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot move it aside to {target}: {err.strerror}") from err
        self._unmark(layer_id)

    def _unmark(self, layer_id: str) -> None:
        """Remove the read-only mark, durably: a mark that came back after a power loss
        would name a layer the log says is gone (an orphan until the next boot's sweep)."""
        mark = self.read_only_dir / layer_id
        if os.path.lexists(mark):
            mark.unlink()
            fsync_dir(self.read_only_dir)

    def stage(self, layer_id: str) -> Path:
        """A writable snapshot of the layer's subvolume (the data stays a subvolume once
        ``applydiff`` exchanges the two: its children are snapshots of it)."""
        staging = self.staging_path(layer_id)
        staging.parent.mkdir(parents=True, exist_ok=True)
        source = self._open_subvolume(layer_id, self._existing_dir(layer_id))
        try:
            dir_fd = os.open(staging.parent, _DIR_FLAGS)
            try:
                ioctl.snapshot(source, dir_fd, staging.name)
            finally:
                os.close(dir_fd)
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot stage a snapshot of it: {err.strerror or err}") from err
        finally:
            os.close(source)
        return staging

    def unstage(self, layer_id: str) -> None:
        staging = self.staging_path(layer_id)
        if not os.path.lexists(staging):
            return
        refuse_mounts(staging)  # never delete through a mount
        dir_fd = os.open(staging.parent, _DIR_FLAGS)
        try:
            _destroy_in(dir_fd, staging.name)
        finally:
            os.close(dir_fd)

    def check_layer(self, layer_id: str, parents: list[str]) -> list[str]:
        return [] if self._dir(layer_id).is_dir() else [f"layer {layer_id}: driver data missing"]

    def _destroy(self, layer_id: str) -> None:
        """Delete the layer's subvolume (subvolumes inside it first); missing is fine."""
        try:
            dir_fd = os.open(self.subvolumes_dir, _DIR_FLAGS)
        except FileNotFoundError:
            return
        try:
            _destroy_in(dir_fd, layer_id)
        finally:
            os.close(dir_fd)

    # --- what exists -----------------------------------------------------------------

    def exists(self, layer_id: str) -> bool:
        return self._dir(layer_id).is_dir()

    def layers(self) -> set[str]:
        """Every subvolume in home, and every read-only mark (a delete killed between the
        two leaves a mark alone; recovery must see it to remove it)."""
        found = set()
        for directory, want_dir in ((self.subvolumes_dir, True), (self.read_only_dir, False)):
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            found.update(e.name for e in entries
                         if e.is_dir(follow_symlinks=False) == want_dir and is_valid_layer_id(e.name))
        return found

    # --- mounting: the subvolume is the view -----------------------------------------

    def mount(self, layer_id: str, mount_label: str = "") -> Path:
        return self._existing_dir(layer_id)

    def unmount(self, layer_id: str) -> None:
        checked_layer_id(layer_id)  # nothing is mounted for real; the store keeps the counts

    def is_mounted(self, layer_id: str) -> bool:
        return self.exists(layer_id)

    # --- paths and facts -------------------------------------------------------------

    def mount_path(self, layer_id: str) -> Path:
        return self._dir(layer_id)

    def diff_path(self, layer_id: str) -> Path:
        return self._dir(layer_id)

    def metadata(self, layer_id: str) -> dict[str, str]:
        path = self._existing_dir(layer_id)
        fd = self._open_subvolume(layer_id, path)
        try:
            return {"Dir": str(path), "SubvolumeID": str(ioctl.subvolume_id(fd)),
                    "ReadOnly": "true" if ioctl.is_readonly(fd) else "false"}
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot read its subvolume: {err.strerror}") from None
        finally:
            os.close(fd)

    def fs_info(self, layer_id: str) -> FsInfo:
        path = self._existing_dir(layer_id)
        walked = tree_usage(path, mountpoint=path)
        exclusive = self._exclusive_bytes(layer_id, path)
        if exclusive is None:
            return walked
        return FsInfo(used_bytes=exclusive, inodes_used=walked.inodes_used, mountpoint=str(path))

    def _exclusive_bytes(self, layer_id: str, path: Path) -> int | None:
        """The subvolume's qgroup exclusive bytes; None when quotas are off or unreliable."""
        fd = self._open_subvolume(layer_id, path)
        try:
            qgroups = SYSFS_BTRFS / ioctl.filesystem_uuid(fd) / "qgroups"
            if _read_sysfs(qgroups / "enabled") != "1" or _read_sysfs(qgroups / "inconsistent") != "0":
                return None
            from eventstore.fsutil import sync_tree

            sync_tree(path)  # the kernel accounts qgroups when it commits a transaction
            exclusive = _read_sysfs(qgroups / f"0_{ioctl.subvolume_id(fd)}" / "exclusive")
            return int(exclusive) if exclusive and exclusive.isdigit() else None
        except OSError:
            return None
        finally:
            os.close(fd)

    def status(self) -> dict[str, str]:
        return {**super().status(), "layout": "subvolumes"}

    # --- helpers ---------------------------------------------------------------------

    def _dir(self, layer_id: str) -> Path:
        return self.subvolumes_dir / checked_layer_id(layer_id)

    def _existing_dir(self, layer_id: str) -> Path:
        path = self._dir(layer_id)
        if not path.is_dir():
            raise DriverError(f"layer {layer_id}: does not exist in the btrfs driver")
        return path

    def _open_subvolume(self, layer_id: str, path: Path) -> int:
        try:
            return os.open(path, _DIR_FLAGS)
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot open {path}: {err.strerror}") from None


def _destroy_in(dir_fd: int, name: str) -> None:
    """Delete subvolume ``name`` of ``dir_fd``; subvolumes nested in it go first."""
    try:
        ioctl.destroy_subvolume(dir_fd, name)
        return
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno == errno.EINVAL and not _is_subvolume(dir_fd, name):
            import shutil  # a plain directory where a subvolume belongs: not made by us,

            shutil.rmtree(name, dir_fd=dir_fd)  # but under our home, and ours to remove
            return
        if err.errno != errno.ENOTEMPTY:
            raise OSError(err.errno, err.strerror, name) from None
    # ENOTEMPTY: it holds subvolumes of its own (the only way a subvolume is not empty
    # to this ioctl); a read-only one must be made writable to unlink them
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        if ioctl.is_readonly(fd):
            ioctl.set_readonly(fd, False)
        _destroy_nested(fd)
    finally:
        os.close(fd)
    ioctl.destroy_subvolume(dir_fd, name)


def _is_subvolume(dir_fd: int, name: str) -> bool:
    st = os.lstat(name, dir_fd=dir_fd)
    return st.st_ino == ioctl.FIRST_FREE_OBJECTID and st.st_dev != os.fstat(dir_fd).st_dev


def _destroy_nested(top_fd: int) -> None:
    """Delete every subvolume nested in the subvolume ``top_fd`` (a nested one has
    another st_dev and the subvolume root's inode number). Directories to visit are
    kept as paths, not descriptors, so no width of tree runs out of descriptors."""
    top_dev = os.fstat(top_fd).st_dev
    pending = [b"."]
    while pending:
        rel = pending.pop()
        here = os.open(rel, _DIR_FLAGS, dir_fd=top_fd)
        try:
            if os.fstat(here).st_dev != top_dev:
                continue  # swapped for something else since it was listed
            nested = []
            with os.scandir(here) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if st.st_dev == top_dev:
                        pending.append(rel + b"/" + os.fsencode(entry.name))
                    elif st.st_ino == ioctl.FIRST_FREE_OBJECTID:
                        nested.append(entry.name)
            for name in nested:
                _destroy_in(here, name)
        finally:
            os.close(here)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (home is made on first create)."""
    return next(p for p in (path, *path.parents) if p.is_dir())


def _read_sysfs(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
