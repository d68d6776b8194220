"""The vfs driver: every layer is a full copy of its parent, in ``<home>/dir/<id>``.

It needs nothing from the kernel, so it works anywhere and is the fallback when overlay
cannot mount. A child starts as ``cp -a`` of its parent: hardlinks, device nodes,
owners, modes, xattrs and times survive, and on filesystems that can share extents
(btrfs, xfs) the copy is a reflink. There is no kernel mount: a layer's directory *is*
its mounted view, so ``mount`` returns it and ``is_mounted`` means the directory exists.
Tar whiteouts are applied by deleting from the copy (``whiteout_format = "delete"``).
"""

from __future__ import annotations

import os
from pathlib import Path

from eventstore import faults
from eventstore.drivers.base import Driver, FsInfo, checked_layer_id, is_valid_layer_id, tree_usage
from eventstore.errors import DriverError


class VfsDriver(Driver):
    """A directory per layer, each a full copy of its parent."""

    name = "vfs"
    whiteout_format = "delete"

    def __init__(self, home: Path):
        super().__init__(Path(home).absolute())
        self.layers_dir = self.home / "dir"

    def create(self, layer_id: str, parent_id: str | None, writable: bool) -> None:
        target = self._dir(layer_id)
        if target.exists():
            raise DriverError(f"layer {layer_id}: already exists in the vfs driver")
        source = self._dir(parent_id) if parent_id is not None else None
        if source is not None and not source.is_dir():
            raise DriverError(f"layer {layer_id}: parent {parent_id} does not exist in the vfs driver")
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        if source is None:
            try:
                target.mkdir(mode=0o755)
            except FileExistsError:
                raise DriverError(f"layer {layer_id}: already exists in the vfs driver") from None
        try:
            # The copy lands directly under its final name, not under a temporary one:
            # after a crash half-way ``layers()`` still lists it and recovery removes
            # it, where a temporary name would leak unseen.
            if source is not None:
                self._copy_tree(layer_id, source, target)
            faults.point("driver.vfs.create.after-copy")
        except BaseException as err:
            import shutil  # (copying and removing import these; a mount needs neither)

            shutil.rmtree(target, ignore_errors=True)
            if isinstance(err, OSError):
                raise DriverError(f"layer {layer_id}: create failed: {err.strerror or err}") from err
            raise

    def _copy_tree(self, layer_id: str, source: Path, target: Path) -> None:
        command = ["cp", "-a", "--reflink=auto", "--no-target-directory", "--", str(source), str(target)]
        try:
            import subprocess

            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot run cp: {err.strerror}") from err
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            reason = lines[-1] if lines else f"exit {result.returncode}"
            raise DriverError(f"layer {layer_id}: copying the parent failed: {reason}")

    def remove(self, layer_id: str) -> None:
        target = self._dir(layer_id)
        faults.point("driver.vfs.remove.before-rmtree")
        try:
            import shutil

            shutil.rmtree(target)
        except FileNotFoundError:
            return
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot remove {err.filename}: {err.strerror}") from err

    def set_aside(self, layer_id: str, target: Path) -> None:
        try:
            os.rename(self._dir(layer_id), target)
        except FileNotFoundError:
            return
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot move it aside to {target}: {err.strerror}") from err

    def check_layer(self, layer_id: str, parents: list[str]) -> list[str]:
        return [] if self._dir(layer_id).is_dir() else [f"layer {layer_id}: driver data missing"]

    def exists(self, layer_id: str) -> bool:
        return self._dir(layer_id).is_dir()

    def layers(self) -> set[str]:
        try:
            entries = list(os.scandir(self.layers_dir))
        except FileNotFoundError:
            return set()
        return {e.name for e in entries if e.is_dir(follow_symlinks=False) and is_valid_layer_id(e.name)}

    def mount(self, layer_id: str, mount_label: str = "") -> Path:
        target = self._dir(layer_id)
        if not target.is_dir():
            raise DriverError(f"layer {layer_id}: cannot mount, it does not exist in the vfs driver")
        return target

    def unmount(self, layer_id: str) -> None:
        # Nothing is mounted for real; the store keeps the counts.
        checked_layer_id(layer_id)

    def is_mounted(self, layer_id: str) -> bool:
        return self.exists(layer_id)

    def mount_path(self, layer_id: str) -> Path:
        return self._dir(layer_id)

    def diff_path(self, layer_id: str) -> Path:
        return self._dir(layer_id)

    def metadata(self, layer_id: str) -> dict[str, str]:
        return {"Dir": str(self._existing_dir(layer_id))}

    def fs_info(self, layer_id: str) -> FsInfo:
        target = self._existing_dir(layer_id)
        return tree_usage(target, mountpoint=target)

    def _dir(self, layer_id: str) -> Path:
        return self.layers_dir / checked_layer_id(layer_id)

    def _existing_dir(self, layer_id: str) -> Path:
        target = self._dir(layer_id)
        if not target.is_dir():
            raise DriverError(f"layer {layer_id}: does not exist in the vfs driver")
        return target
