"""The store's state as a pure fold over events: no I/O, no clock, no kernel.

``check(state, event)`` raises the ``RuleViolation`` an event would cause (DESIGN §1
rules and the invariants: hold refs never negative, one owner per name, parents exist
and outlive their children); ``apply(state, lsn, event)`` folds a valid event in. The
store checks before it appends; replay applies what the log says.

State is reached only through a handful of lookups (``get``, ``owner_of``,
``has_children``) and updates (``put``, ``drop``), so the same fold runs over the
in-memory ``State`` (replay, checkpoints, the model) and over the SQLite read model
(``eventstore.index.IndexState``), which loads only the layers an operation touches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from eventstore import errors
from eventstore import events as ev
from eventstore.events import Holder, IDMapping, Snapshot


class DataItem(msgspec.Struct, frozen=True):
    """One layer data item: the blob ``digest`` of ``size`` bytes (``eventstore.layerdata``)."""

    digest: str
    size: int


class LayerRecord(msgspec.Struct, kw_only=True, gc=False):  # no cycles: untracked (events.py)
    """Everything the store knows of one layer."""

    id: str
    parent: str | None = None
    names: list[str] = []
    created: int = 0  # ns since the epoch, from the intent event
    compressed_digest: str = ""
    compressed_size: int = -1
    diff_digest: str = ""
    diff_size: int = -1
    compression: str = ""
    incomplete: bool = True
    deleting: bool = False
    writable: bool = False
    driver: str = ""
    owner: Holder | None = None  # the creating (or deleting) process while incomplete
    holds: list[Holder] = []
    mount_count: int = 0
    mount_point: str = ""
    mount_boot: str = ""
    mount_label: str = ""
    has_tarsplit: bool = False
    quarantined: str = ""
    created_lsn: int = 0
    updated_lsn: int = 0
    snapshot: Snapshot | None = None  # containerd's view of the layer, when it made it
    uid_map: list[IDMapping] = []
    gid_map: list[IDMapping] = []
    applying: Holder | None = None  # the process applying a diff (``eventstore.applydiff``)
    data: dict[str, DataItem] = {}  # layer data items by key

    @property
    def hold_refs(self) -> int:
        return len(self.holds)


class State:
    """The whole state in memory: layers by id, name owners, children by parent."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerRecord] = {}
        self.names: dict[str, str] = {}
        self.children: dict[str, set[str]] = {}
        self.lsn = 0

    # lookups the fold uses
    def get(self, layer_id: str) -> LayerRecord | None:
        return self.layers.get(layer_id)

    def owner_of(self, name: str) -> str | None:
        return self.names.get(name)

    def has_children(self, layer_id: str) -> bool:
        return bool(self.children.get(layer_id))

    def incomplete_ids(self) -> list[str]:
        return sorted(rec.id for rec in self.layers.values() if rec.incomplete)

    # updates the fold makes
    def put(self, rec: LayerRecord, old_names: Iterable[str] = ()) -> None:
        for name in old_names:
            if self.names.get(name) == rec.id:
                del self.names[name]
        for name in rec.names:
            self.names[name] = rec.id
        if rec.id not in self.layers and rec.parent:
            self.children.setdefault(rec.parent, set()).add(rec.id)
        self.layers[rec.id] = rec

    def drop(self, layer_id: str) -> None:
        rec = self.layers.pop(layer_id)
        for name in rec.names:
            if self.names.get(name) == layer_id:
                del self.names[name]
        if rec.parent and rec.parent in self.children:
            self.children[rec.parent].discard(layer_id)
            if not self.children[rec.parent]:
                del self.children[rec.parent]

    def __iter__(self) -> Iterator[LayerRecord]:
        return iter(self.layers.values())


# --- rules --------------------------------------------------------------------------------

def _existing(state: State, layer_id: str) -> LayerRecord:
    rec = state.get(layer_id)
    if rec is None:
        raise errors.LayerNotFound(f"layer {layer_id}: not found")
    return rec


def require_usable(rec: LayerRecord) -> LayerRecord:
    """``rec``, unless it may not be used (built on, held, mounted, renamed): quarantined
    or incomplete layers are refused."""
    if rec.quarantined:
        raise errors.LayerQuarantined(f"layer {rec.id}: quarantined ({rec.quarantined})")
    if rec.incomplete:
        raise errors.LayerIncomplete(f"layer {rec.id}: incomplete (being created or deleted)")
    return rec


def _usable(state: State, layer_id: str) -> LayerRecord:
    return require_usable(_existing(state, layer_id))


def _check_parent(state: State, parent_id: str, owner: Holder | None) -> None:
    """A new layer's parent must be usable, or still being created by the same process:
    a chain filled in parallel (``eventstore.oci.parallel``) records every intent first.
    Such a parent completes before its child (``LayerCompleted`` checks), and recovery
    removes abandoned children before their parents."""
    rec = _existing(state, parent_id)
    if owner is not None and rec.owner == owner and rec.incomplete and not rec.deleting \
            and not rec.quarantined:
        return
    require_not_applying(require_usable(rec))


def _check_names(state: State, layer_id: str, names: Iterable[str]) -> None:
    for name in names:
        owner = state.owner_of(name)
        if owner is not None and owner != layer_id:
            raise errors.NameInUse(f"name {name!r} already belongs to layer {owner}")


def check(state: State, event: ev.Event) -> None:
    """Raise the RuleViolation (or LayerNotFound) ``event`` would cause; else nothing."""
    match event:
        case ev.LayerCreated(layer=layer_id, parent=parent, names=names, owner=owner):
            if state.get(layer_id) is not None:
                raise errors.LayerExists(f"layer {layer_id}: already exists")
            if parent is not None:
                _check_parent(state, parent, owner)
            _check_names(state, layer_id, names)
        case ev.LayerCompleted(layer=layer_id):
            rec = _existing(state, layer_id)
            if not rec.incomplete or rec.deleting:
                raise errors.RuleViolation(f"layer {layer_id}: not being created")
            parent = state.get(rec.parent) if rec.parent else None
            if parent is not None and parent.incomplete:
                raise errors.RuleViolation(f"layer {layer_id}: its parent {parent.id} is not complete yet")
        case ev.NamesChanged(layer=layer_id, names=names):
            _usable(state, layer_id)
            _check_names(state, layer_id, names)
        case ev.HoldAdded(layer=layer_id):
            _usable(state, layer_id)
        case ev.HoldReleased(layer=layer_id, holder=holder):
            rec = _existing(state, layer_id)
            if holder not in rec.holds:
                raise errors.NotHeld(f"layer {layer_id}: no hold by {holder.describe()} to release "
                                     f"(hold refs {rec.hold_refs})")
        case ev.LayerMounted(layer=layer_id):
            require_not_applying(_usable(state, layer_id))
        case ev.LayerUnmounted(layer=layer_id):
            if _existing(state, layer_id).mount_count == 0:
                raise errors.NotMounted(f"layer {layer_id}: not mounted")
        case ev.LayerMarkedIncomplete(layer=layer_id):
            rec = _existing(state, layer_id)
            if not rec.quarantined:  # (a quarantined one recovery gave up on may go)
                require_not_applying(rec)
            if rec.holds:
                raise errors.LayerInUse(f"layer {layer_id}: held ({rec.hold_refs} hold refs)")
            if rec.mount_count:
                raise errors.LayerInUse(f"layer {layer_id}: mounted ({rec.mount_count}); use --force to unmount it first")
            if state.has_children(layer_id):
                raise errors.LayerInUse(f"layer {layer_id}: is the parent of another layer")
        case ev.LayerDeleted(layer=layer_id):
            rec = _existing(state, layer_id)
            if not rec.incomplete:
                raise errors.RuleViolation(f"layer {layer_id}: delete was never begun")
            if state.has_children(layer_id):
                raise errors.LayerInUse(f"layer {layer_id}: is the parent of another layer")
        case ev.MountsReconciled(layer=layer_id) | ev.LayerQuarantined(layer=layer_id):
            _existing(state, layer_id)
        case ev.QuarantineLifted(layer=layer_id):
            if not _existing(state, layer_id).quarantined:
                raise errors.RuleViolation(f"layer {layer_id}: not quarantined")
        case ev.SnapshotCommitted(layer=layer_id, names=names):
            snapshot = _usable(state, layer_id).snapshot
            if snapshot is None or snapshot.kind != "active":
                raise errors.RuleViolation(f"layer {layer_id}: not an active containerd snapshot")
            _check_names(state, layer_id, names)
        case ev.SnapshotLabelsChanged(layer=layer_id):
            if _usable(state, layer_id).snapshot is None:
                raise errors.RuleViolation(f"layer {layer_id}: not a containerd snapshot")
        case ev.DiffApplyStarted(layer=layer_id):
            _check_apply(state, require_not_applying(_usable(state, layer_id)))
        case ev.DiffApplied(layer=layer_id) | ev.DiffApplyAbandoned(layer=layer_id):
            if _existing(state, layer_id).applying is None:
                raise errors.RuleViolation(f"layer {layer_id}: no diff is being applied")
        case ev.LayerDataSet(layer=layer_id) | ev.LayerDataRemoved(layer=layer_id):
            _usable(state, layer_id)
        case _:
            pass


def require_not_applying(rec: LayerRecord) -> LayerRecord:
    """``rec``, unless a diff is being applied to it (its data is about to be swapped:
    nothing may mount it or build on it meanwhile)."""
    if rec.applying is not None:
        raise errors.LayerInUse(f"layer {rec.id}: a diff is being applied to it (pid {rec.applying.pid})")
    return rec


def _check_apply(state: State, rec: LayerRecord) -> None:
    """A diff is applied only to a writable layer nothing is built on or mounted from:
    its children were made from its content, and overlay's upper dir must not change
    under a live mount."""
    if not rec.writable:
        raise errors.RuleViolation(f"layer {rec.id}: read-only; a diff applies to a writable layer "
                                   f"(create it with --writable)")
    if rec.mount_count:
        raise errors.LayerInUse(f"layer {rec.id}: mounted ({rec.mount_count}); unmount it first")
    if state.has_children(rec.id):
        raise errors.LayerInUse(f"layer {rec.id}: is the parent of another layer")


# --- the fold -----------------------------------------------------------------------------

def apply(state: State, lsn: int, event: ev.Event) -> None:
    """Fold one (valid) event into ``state``."""
    match event:
        case ev.LayerCreated():
            rec = LayerRecord(
                id=event.layer, parent=event.parent, names=list(event.names), created=event.time,
                writable=event.writable, driver=event.driver, owner=event.owner,
                mount_label=event.mount_label, created_lsn=lsn, updated_lsn=lsn,
                snapshot=msgspec.structs.replace(event.snapshot, created=event.time, updated=event.time)
                if event.snapshot else None,
                uid_map=list(event.uid_map), gid_map=list(event.gid_map),
            )
            parent = state.get(event.parent) if event.parent else None
            # only a replay after a repair can build on a parent the log lost, or on a
            # quarantined one (the rules refuse both): the chain below it is in doubt too
            if event.parent and parent is None:
                rec.quarantined = f"its parent {event.parent[:12]} is not in the log (its records were lost)"
            elif parent is not None and parent.quarantined:
                rec.quarantined = f"its parent {parent.id[:12]} is quarantined ({parent.quarantined})"
            state.put(rec)
            return
        case ev.LayerDeleted():
            if state.get(event.layer) is not None:
                state.drop(event.layer)
            return
        case ev.RecordsLost():
            _quarantine_after_loss(state, lsn, event)
            return
        case ev.RecoveryStarted() | ev.RecoveryFinished() | ev.ContentRejected() | ev.OrphanRemoved() | \
                ev.DataMovedAside() | ev.LostFoundPurged() | ev.OrphanKept() | ev.SegmentSealed() | \
                ev.HistoryHorizon():
            return
    layer_id = getattr(event, "layer", None)
    old = state.get(layer_id) if layer_id else None
    if old is None:
        return  # an event for a layer the fold never saw: nothing to change
    rec = msgspec.structs.replace(old, updated_lsn=lsn)
    _update(rec, event)
    state.put(rec, old_names=old.names)


def _update(rec: LayerRecord, event: ev.Event) -> None:
    match event:
        case ev.LayerCompleted():
            rec.incomplete = False
            rec.owner = None
            rec.compressed_digest = event.compressed_digest
            rec.compressed_size = event.compressed_size
            rec.diff_digest = event.diff_digest
            rec.diff_size = event.diff_size
            rec.compression = event.compression
            rec.has_tarsplit = event.has_tarsplit
        case ev.LayerMarkedIncomplete():
            rec.incomplete = True
            rec.deleting = True
            rec.owner = event.owner
        case ev.NamesChanged():
            rec.names = list(event.names)
        case ev.HoldAdded():
            rec.holds = [*rec.holds, event.holder]
        case ev.HoldReleased():
            holds = list(rec.holds)
            if event.holder in holds:
                holds.remove(event.holder)
            rec.holds = holds
        case ev.LayerMounted():
            rec.mount_count += 1
            if event.mount_point:
                rec.mount_point = event.mount_point
            if event.boot:
                rec.mount_boot = event.boot
        case ev.LayerUnmounted():
            rec.mount_count = 0 if event.force else max(0, rec.mount_count - 1)
            if rec.mount_count == 0:
                rec.mount_point = ""
        case ev.MountsReconciled():
            rec.mount_count = event.count
            if event.count == 0:
                rec.mount_point = ""
        case ev.LayerQuarantined():
            rec.quarantined = event.reason or "quarantined"
        case ev.QuarantineLifted():
            rec.quarantined = ""
        case ev.SnapshotCommitted():
            rec.writable = False
            rec.names = list(event.names)
            rec.snapshot = Snapshot(key=event.key, kind="committed", labels=dict(event.labels), created=event.time,
                                    updated=event.time, size=event.size, inodes=event.inodes)
        case ev.SnapshotLabelsChanged() if rec.snapshot is not None:
            rec.snapshot = msgspec.structs.replace(rec.snapshot, labels=dict(event.labels), updated=event.time)
        case ev.DiffApplyStarted():
            rec.applying = event.owner or Holder()
        case ev.DiffApplied():
            rec.applying = None
            # the record describes a tar only when the layer is exactly that tar
            # (applied to an empty layer); else its diff is what changed, measured
            rec.has_tarsplit = event.has_tarsplit
            rec.compressed_digest = event.compressed_digest if event.has_tarsplit else ""
            rec.compressed_size = event.compressed_size if event.has_tarsplit else -1
            rec.diff_digest = event.diff_digest if event.has_tarsplit else ""
            rec.diff_size = event.diff_size if event.has_tarsplit else -1
            rec.compression = event.compression if event.has_tarsplit else ""
        case ev.DiffApplyAbandoned():
            rec.applying = None
        case ev.LayerDataSet():
            rec.data = {**rec.data, event.key: DataItem(event.digest, event.size)}
        case ev.LayerDataRemoved():
            rec.data = {k: v for k, v in rec.data.items() if k != event.key}


def _quarantine_after_loss(state: State, lsn: int, event: ev.RecordsLost) -> None:
    """Lost records may have changed any layer they named, and may have completed any
    layer still incomplete (which recovery must then not take for an abandoned create):
    each is quarantined, kept as it is until the operator looks."""
    reason = f"records lost at LSN {event.first_lsn}-{event.first_lsn + max(event.count, 1) - 1} (log repair)"
    for layer_id in dict.fromkeys([*event.layers, *state.incomplete_ids()]):
        old = state.get(layer_id)
        if old is None:
            # known only from the lost records: kept, so that what follows about it
            # applies, and its data is not taken for an orphan
            state.put(LayerRecord(id=layer_id, incomplete=False, quarantined=reason + "; its creation was lost",
                                  created=event.time, created_lsn=lsn, updated_lsn=lsn))
        elif not old.quarantined:
            state.put(msgspec.structs.replace(old, quarantined=reason, updated_lsn=lsn), old_names=old.names)


def fold(events: Iterable[tuple[int, ev.Event]], state: State | None = None) -> State:
    """The state after ``events`` (LSN, event), starting from ``state`` or empty."""
    state = state if state is not None else State()
    for lsn, event in events:
        apply(state, lsn, event)
        state.lsn = lsn
    return state
