"""Drivers a user might register, for the harness tests: one with failpoints of its
own (the harness crashes there too), and two with planted bugs the harness must find."""

from __future__ import annotations

import shutil

from eventstore import faults
from eventstore.drivers.vfs import VfsDriver

faults.declare("mydriver.create.after-mkdir", "my driver: the layer dir exists, nothing in it yet")
faults.declare("mydriver.remove.half-done", "my driver: half of the layer is deleted")


class MyDriver(VfsDriver):
    """A vfs copy with failpoints of its own, as a user's driver would declare them."""

    name = "mydriver"

    def create(self, layer_id: str, parent_id: str | None, writable: bool) -> None:
        super().create(layer_id, parent_id, writable)
        faults.point("mydriver.create.after-mkdir")

    def remove(self, layer_id: str) -> None:
        target = self._dir(layer_id)
        if target.is_dir():
            for child in sorted(target.iterdir())[:1]:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            faults.point("mydriver.remove.half-done")
        super().remove(layer_id)


class NoSyncDriver(VfsDriver):
    """Planted bug: never makes layer data durable (a power loss loses it)."""

    name = "nosync"

    def sync(self, layer_id: str) -> None:
        pass


class LeakyDriver(VfsDriver):
    """Planted bug: ``layers`` hides what it cannot name, so recovery never removes a
    half-made layer's data (it leaks as an orphan the harness must see)."""

    name = "leaky"

    def remove(self, layer_id: str) -> None:
        if (self._dir(layer_id) / ".keep").exists():
            return  # "busy": silently leaves the data
        super().remove(layer_id)

    def create(self, layer_id: str, parent_id: str | None, writable: bool) -> None:
        super().create(layer_id, parent_id, writable)
        (self._dir(layer_id) / ".keep").write_bytes(b"")
        faults.point("leaky.create.after-keep")
        (self._dir(layer_id) / ".keep").unlink()


faults.declare("leaky.create.after-keep", "leaky: the layer is marked busy")
