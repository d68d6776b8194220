"""The storage driver interface (DESIGN §6).

A driver owns the bytes of layers under its ``home`` directory and knows nothing of the
log: the store decides *what* happens (and records it first), the driver does it. Every
method is idempotent where recovery may call it twice: ``remove`` of a missing layer and
``unmount`` of an unmounted one succeed quietly.

Mount *counts* are the store's business (they live in the log); the driver only mounts
for real, unmounts for real, and tells whether the kernel has a layer mounted.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import msgspec

from eventstore.errors import ForeignMount, InvalidArgument
from eventstore.names import forbidden_char, shown


class FsInfo(msgspec.Struct, frozen=True):
    """Usage of one layer's own data (not its parents')."""

    used_bytes: int
    inodes_used: int
    mountpoint: str


def is_valid_layer_id(layer_id: str) -> bool:
    """True when ``layer_id`` is safe as one path component (DESIGN §1's id rule)."""
    return bool(layer_id) and ".." not in layer_id and "/" not in layer_id and forbidden_char(layer_id) is None


def checked_layer_id(layer_id: str) -> str:
    """``layer_id`` when it is safe as one path component, else InvalidArgument.

    The store validates ids too; drivers check again because they build paths from
    the id and ``rmtree`` them: an id like ``..`` must never reach a path.
    """
    if not is_valid_layer_id(layer_id):
        raise InvalidArgument(f"layer {layer_id!r}: not a valid layer id")
    return layer_id


def tree_usage(root: Path, mountpoint: Path) -> FsInfo:
    """Bytes (allocated blocks) and inodes under ``root``, ``root`` included.

    Every inode is counted once, so hardlinks do not double the size; symlinks are not
    followed, and other filesystems mounted inside are not entered (not the layer's data).
    """
    top = os.lstat(root)
    seen = {(top.st_dev, top.st_ino)}
    used_bytes = top.st_blocks * 512
    pending = [os.fspath(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    used_bytes += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False) and st.st_dev == top.st_dev:
                    pending.append(entry.path)
    return FsInfo(used_bytes=used_bytes, inodes_used=len(seen), mountpoint=str(mountpoint))


class Driver(abc.ABC):
    """What every storage driver does; ``tests/drivers/contract.py`` checks it."""

    name: str = ""
    #: how the driver wants tar whiteouts stored: "overlay" (0:0 char devices and
    #: trusted.overlay.opaque) or "delete" (apply them by deleting from a full copy)
    whiteout_format: str = "delete"
    #: the directory under the store root the driver keeps its layers in; "" means
    #: ``name`` (drivers with one layout share one: fuse-overlayfs uses overlay's)
    home_name: str = ""

    #: True when a layer's ``diff_path`` holds only its own changes and its parents show
    #: through a mount (overlay's layout): its changes are its own directory, and a
    #: whole view of it is a mount. False for drivers whose layer directory is the
    #: whole tree (vfs copies, btrfs snapshots). It also means a child's ``create``
    #: neither reads nor copies its parent's data, so the layers of a chain can be
    #: filled side by side once each is created (``eventstore.oci.parallel``).
    stacks_layers: bool = False

    def __init__(self, home: Path):
        self.home = Path(home)

    @classmethod
    def supported(cls, home: Path) -> str | None:
        """None when the driver can run here, else the reason it cannot."""
        return None

    @abc.abstractmethod
    def create(self, layer_id: str, parent_id: str | None, writable: bool) -> None:
        """Make the layer's directories (a vfs child starts as a copy of its parent)."""

    @abc.abstractmethod
    def remove(self, layer_id: str) -> None:
        """Unmount if needed and delete every byte of the layer; missing is fine."""

    @abc.abstractmethod
    def exists(self, layer_id: str) -> bool:
        """True when the driver has data for the layer."""

    @abc.abstractmethod
    def layers(self) -> set[str]:
        """Every layer id the driver has data for (recovery finds orphans with it)."""

    @abc.abstractmethod
    def mount(self, layer_id: str, mount_label: str = "") -> Path:
        """Mount the layer for real and return the path; mounted already is fine."""

    @abc.abstractmethod
    def unmount(self, layer_id: str) -> None:
        """Unmount for real (retrying a busy mount briefly); not mounted is fine."""

    @abc.abstractmethod
    def is_mounted(self, layer_id: str) -> bool:
        """True when the kernel has the layer mounted now (drivers without real
        mounts answer from their own records)."""

    @abc.abstractmethod
    def mount_path(self, layer_id: str) -> Path:
        """Where ``mount`` puts the layer's merged view."""

    @abc.abstractmethod
    def diff_path(self, layer_id: str) -> Path:
        """The directory a tar diff is extracted into (the layer's own files)."""

    @abc.abstractmethod
    def metadata(self, layer_id: str) -> dict[str, str]:
        """The driver's view of the layer (overlay: LowerDir, UpperDir, WorkDir, MergedDir)."""

    @abc.abstractmethod
    def fs_info(self, layer_id: str) -> FsInfo:
        """Bytes and inodes of the layer's own data."""

    # --- damage: what recovery and ``check`` ask of a driver (defaults: nothing to do) ----

    def mounted(self) -> set[str]:
        """The layers the kernel has mounted now (recovery unmounts the ones the log
        says nobody mounted). Drivers without real mounts have none."""
        return set()

    def set_aside(self, layer_id: str, target: Path) -> None:
        """Move every byte of a layer the log does not account for to ``target`` (a
        path on the same filesystem), unmounting it first; never delete it. A driver
        that cannot raises DriverError, and the data stays where it is."""
        from eventstore.errors import DriverError

        raise DriverError(f"layer {layer_id}: the {self.name} driver cannot move layer data aside")

    def check_layer(self, layer_id: str, parents: list[str]) -> list[str]:
        """What is wrong with the driver's metadata of a complete layer whose parents
        (nearest first) are ``parents``: one line each, [] when it can be mounted."""
        return []

    def repair_layer(self, layer_id: str, parents: list[str]) -> list[str]:
        """Rebuild what ``check_layer`` finds wrong and can be derived from the parent
        chain (never layer data); what was done, one line each."""
        return []

    def foreign_mounts(self, layer_id: str) -> list[str]:
        """Mount points at or below the layer's data that the driver did not make (a
        volume bind-mounted into a container's root, a tmpfs), outermost first.

        This default covers drivers whose data is ``diff_path`` and whose own mount,
        if any, is exactly ``mount_path``; a driver with another layout overrides it.
        """
        from eventstore.mounts import mount_table, mounts_under, real_path

        table = mount_table()
        own = real_path(self.mount_path(layer_id))
        diff = real_path(self.diff_path(layer_id))
        found = {m.point for m in mounts_under(diff, table)}
        found |= {m.point for m in mounts_under(own, table) if m.point != own or own == diff}
        return sorted(found, key=lambda p: p.count("/"))

    def check_removable(self, layer_id: str) -> None:
        """Raise ForeignMount when something the driver did not mount is mounted inside
        the layer: ``remove`` would refuse, so a delete refuses before it begins."""
        foreign = self.foreign_mounts(layer_id)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise ForeignMount(f"layer {layer_id}: {shown(foreign[0])} is mounted inside it{more}, "
                               "not by the store: unmount it first", foreign[0])
    def staging_path(self, layer_id: str) -> Path:
        """Where a staged copy of the layer's data is built (``applydiff``): on the
        filesystem of ``diff_path`` (it is swapped in by a rename), never listed by
        ``layers``. Drivers whose home lists every directory as a layer override it."""
        return self.home / "staging" / checked_layer_id(layer_id)

    def stage(self, layer_id: str) -> Path:
        """A writable copy of the layer's data at ``staging_path`` (``applydiff``
        applies a tar to it, then exchanges it with the data); the copy's path. This
        default copies with ``cp -a``, sharing extents where the filesystem can."""
        import subprocess

        from eventstore.errors import StorageError

        source, target = self.diff_path(layer_id), self.staging_path(layer_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        # cp -a keeps owners, modes, times, xattrs (overlay's opaque markers too),
        # device nodes and hardlinks
        done = subprocess.run(["cp", "-a", "--reflink=auto", "--no-target-directory", "--", str(source),
                               str(target)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode:
            lines = done.stderr.strip().splitlines()
            raise StorageError(f"cannot stage a copy of {source}: {lines[-1] if lines else done.returncode}")
        return target

    def unstage(self, layer_id: str) -> None:
        """Remove what ``staging_path`` holds (the staged copy, or after the exchange
        the old data), never crossing a mount; nothing there is fine."""
        from eventstore.removal import remove_tree

        path = self.staging_path(layer_id)
        if os.path.lexists(path):
            remove_tree(path)

    def view_dirs(self, layer_id: str) -> list[Path]:
        """For a driver that stacks layers (whiteout format "overlay"): the dirs a
        read-only view of the layer stacks, top first. A copying driver's
        ``diff_path`` is its whole view already."""
        return [self.diff_path(layer_id)]

    def status(self) -> dict[str, str]:
        """Facts about the driver for ``layerstore info``."""
        return {"driver": self.name, "home": str(self.home)}

    def sync(self, layer_id: str) -> None:
        """Make the layer's data durable (called before the completion event)."""
        from eventstore.fsutil import sync_tree

        sync_tree(self.diff_path(layer_id))
