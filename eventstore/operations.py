"""The layer operations containers-storage has beyond the seed's: names, changes and
diffs against any layer, diff sizes, applying a diff, layer data, mount state, status.

``LayerStore`` inherits them (``class LayerStore(LayerOperations)``); they use only the
store's public face — ``writing()``, ``lookup``, ``usable``, ``driver``, ``parents`` —
and keep their machinery in modules of their own (``applydiff``, ``layerdata``,
``changeset``, ``views``, ``status``). Every change goes through the write session, so
it is in the log like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from eventstore import events as ev
from eventstore.names import check_name

if TYPE_CHECKING:
    from eventstore.changeset import Change
    from eventstore.state import LayerRecord


class LayerOperations:
    """Mixed into ``LayerStore``."""

    # --- names ------------------------------------------------------------------------

    def add_names(self, ref: str, names: list[str]) -> list[str]:
        """Give the layer more names (a name another layer has is refused); its names."""
        names = [check_name(n) for n in names]
        with self.writing() as w:
            rec = self.lookup(ref)
            w.append(ev.NamesChanged(layer=rec.id, names=list(dict.fromkeys([*rec.names, *names]))))
            return w.layer(rec.id).names

    def remove_names(self, ref: str, names: list[str]) -> list[str]:
        """Take names from the layer (names it does not have are ignored); its names."""
        names = [check_name(n) for n in names]
        with self.writing() as w:
            rec = self.lookup(ref)
            w.append(ev.NamesChanged(layer=rec.id, names=[n for n in rec.names if n not in names]))
            return w.layer(rec.id).names

    # --- what changed -------------------------------------------------------------------

    def changes(self, ref: str, against: str | None = None) -> list["Change"]:
        """What the layer changed against its parent, or against the layer ``against``
        (a layer without a parent: against nothing)."""
        from eventstore.changeset import tree_changes, upper_changes
        from eventstore.idmap import Owners
        from eventstore.views import layer_view

        rec, other = self._compared(ref, against)
        if other is None and rec.parent:
            other = self.lookup(rec.parent)
        stacked = self.driver.stacks_layers
        if stacked and (other is None or other.id == rec.parent):
            # an overlay layer's own dir holds its changes: walked, as containers-storage does
            return upper_changes(self.driver.diff_path(rec.id), self.driver.view_dirs(rec.id)[1:] if other else [])
        owners = Owners(rec.uid_map, rec.gid_map)
        if other is None:
            return tree_changes(self.driver.diff_path(rec.id), None, owners)
        with layer_view(self.driver, rec.id) as new, layer_view(self.driver, other.id) as old:
            return tree_changes(new, old, owners, Owners(other.uid_map, other.gid_map))

    def diff_size(self, ref: str, against: str | None = None) -> int:
        """Bytes the layer added or modified against its parent (or ``against``): the
        sizes of the files its changes name, as containers-storage's ``diffsize``."""
        from eventstore.changeset import changes_size, tree_size
        from eventstore.views import layer_view

        rec, other = self._compared(ref, against)
        if self.driver.stacks_layers and (other is None or other.id == rec.parent):
            return tree_size(self.driver.diff_path(rec.id))  # an overlay layer's own dir is its changes
        changes = self.changes(rec.id, other.id if other else None)
        with layer_view(self.driver, rec.id) as view:
            return changes_size(view, changes)

    def diff_against(self, ref: str, against: str) -> Iterator[bytes]:
        """A tar of what the layer changed against the layer ``against``."""
        from eventstore.archive.changetar import export_changes
        from eventstore.idmap import Owners
        from eventstore.views import layer_view

        rec = self.usable(ref)
        changes = self.changes(rec.id, against)
        with layer_view(self.driver, rec.id) as view:
            yield from export_changes(view, changes, Owners(rec.uid_map, rec.gid_map))

    def _compared(self, ref: str, against: str | None) -> tuple["LayerRecord", "LayerRecord | None"]:
        rec = self._readable(ref)
        other = self._readable(against) if against is not None else None
        return rec, other

    def _readable(self, ref: str) -> "LayerRecord":
        from eventstore.state import require_not_applying

        return require_not_applying(self.usable(ref))

    # --- applying a diff ------------------------------------------------------------------

    def apply_diff(self, ref: str, content: BinaryIO, *, max_size: int | None = None,
                   progress: Callable[[int], None] | None = None) -> "LayerRecord":
        """Apply the tar ``content`` (plain or compressed) to the writable layer ``ref``,
        which nothing is mounted from or built on; its record afterwards. Crash-safe:
        the layer has its old data or the new, never a mix (``eventstore.applydiff``)."""
        from eventstore import applydiff

        layer_id = applydiff.apply(self, ref, content, max_size=max_size, progress=progress)
        return self.lookup(layer_id)

    # --- layer data -------------------------------------------------------------------------

    def set_layer_data(self, ref: str, key: str, data: bytes) -> str:
        """Keep ``data`` with the layer under ``key`` (replacing any); its digest."""
        from eventstore import layerdata

        return layerdata.set_item(self, ref, key, data)

    def layer_data(self, ref: str, key: str) -> bytes:
        """The layer's data item ``key`` (LayerNotFound when it has none)."""
        from eventstore import layerdata

        return layerdata.get_item(self, ref, key)

    def list_layer_data(self, ref: str) -> dict[str, dict]:
        """The layer's data items: key -> digest and size, sorted by key."""
        from eventstore import layerdata

        return layerdata.list_items(self, ref)

    def remove_layer_data(self, ref: str, key: str) -> None:
        """Remove the layer's data item ``key``."""
        from eventstore import layerdata

        layerdata.remove_item(self, ref, key)

    # --- mounts and the store -------------------------------------------------------------

    def mounted(self, ref: str) -> int:
        """The layer's mount count (0: not mounted)."""
        return self.lookup(ref).mount_count

    def status(self) -> list[tuple[str, str]]:
        """Facts about the store and its driver, in ``layerstore status`` order."""
        from eventstore.status import status

        return status(self)

    def layer_path(self, ref: str) -> Path:
        """The directory holding the layer's own files (the upper dir on overlay)."""
        return self.driver.diff_path(self.usable(ref).id)
