"""Drivers with planted bugs the damage harness must catch (registered with
``--driver-module tests.damage.userdrivers:CLASS``, as a user registers theirs)."""

from __future__ import annotations

import shutil

from eventstore.drivers.vfs import VfsDriver


class _ParentRecordingDriver(VfsDriver):
    """vfs, plus a record of each layer's parent (outside the layers' data)."""

    def create(self, layer_id: str, parent_id: str | None, writable: bool) -> None:
        super().create(layer_id, parent_id, writable)
        if parent_id is not None:
            records = self.home / "parents"
            records.mkdir(parents=True, exist_ok=True)
            (records / layer_id).write_text(parent_id)

    def parent_of(self, layer_id: str) -> str | None:
        record = self.home / "parents" / layer_id
        return record.read_text() if record.exists() else None


class GreedyDriver(_ParentRecordingDriver):
    """Planted bug: removing a layer removes its parent's data too ("the chain it made")."""

    name = "greedy"

    def remove(self, layer_id: str) -> None:
        parent = self.parent_of(layer_id)
        if parent is not None:
            shutil.rmtree(self._dir(parent), ignore_errors=True)
        super().remove(layer_id)


class BrittleDriver(_ParentRecordingDriver):
    """Planted bug: removing a child layer fails with an exception nobody expects, which
    the CLI shows as a Python traceback (the workload only ever removes a base layer)."""

    name = "brittle"

    def remove(self, layer_id: str) -> None:
        if self.parent_of(layer_id) is not None:
            raise KeyError(f"no entry for {layer_id[:12]} in the driver's chain table")
        super().remove(layer_id)
