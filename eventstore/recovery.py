"""Startup recovery (DESIGN §4): finish or undo what a crash left behind.

Runs on every writer open (``eventstore.opener``), under the writer lock, after the read
models caught up. Each step goes through the driver and is recorded in the log through
the store's write session; each is idempotent, so a crash in the middle of recovery is
finished by the next open. One item that cannot be repaired is quarantined or reported,
and never blocks the rest.

Data is destroyed only on positive evidence from the log (docs/integrity.md): the data
of a create that never completed (its creator dead), the rest of a delete that began.
Data no event accounts for is moved to ``<root>/lost+found/``, never deleted.

What is looked at costs little when all is well: one indexed query finds the layers that
are incomplete, mounted or held by a process, and one read of the mount table finds
mounts nobody counted. The sweep — the whole log verified, the drivers' metadata rebuilt
from the parent chains, data no event accounts for moved aside — lists every layer, so it
runs once per boot and on ``layerstore recover``.
"""

from __future__ import annotations

from eventstore import events as ev
from eventstore import faults, process
from eventstore.lostfound import lost_found_path
from eventstore.errors import LayerStoreError
from eventstore.names import shown
from eventstore.removal import refuse_mounts
from eventstore.state import LayerRecord
from eventstore.query import abandoned_create
from eventstore.store import LayerStore, WriteSession

SWEPT_BOOT = "swept_boot"  # meta key: the boot whose sweep finished


class _Run:
    """One recovery run: its write session and the actions taken so far."""

    def __init__(self, store: LayerStore, session: WriteSession):
        self.store = store
        self.session = session
        self.actions: list[str] = []
        self.started = False

    def start(self) -> None:
        """Record recovery-started, once, before the run's first intent or action."""
        if not self.started:
            self.session.append(ev.RecoveryStarted(boot=process.boot_id()))
            self.started = True

    def record(self, action: str, *events: ev.Event) -> None:
        """Append ``events`` and count ``action`` as done."""
        self.start()
        if events:
            self.session.append(*events)
        self.actions.append(action)


def recover_store(store: LayerStore, *, sweep: bool | None = None) -> list[str]:
    """Recover ``store``; one line per action taken (empty when there was nothing to do)."""
    with store.writing() as session:
        run = _Run(store, session)
        boot = process.boot_id()
        if sweep is None:
            sweep = store.index.meta(SWEPT_BOOT) != boot
        for rec in _children_first(store.index.needing_attention()):
            _recover_layer(run, rec)
        _unmount_uncounted(run)
        if sweep:
            # Forget the mark first: a sweep killed half-way (even one asked for by
            # ``layerstore recover`` in a boot already swept) is redone by the next open.
            store.index.set_meta(SWEPT_BOOT, "")
            store.log.verify()  # the whole log, before anything is moved: CorruptLog stops here
            _rebuild_driver_metadata(run)
            _move_aside_what_no_event_accounts_for(run)
            _sweep_layer_data_and_applies(run)
            store.index.set_meta(SWEPT_BOOT, boot)
        if run.started:
            session.append(ev.RecoveryFinished(actions=len(run.actions)))
    return run.actions


def _children_first(records: list[LayerRecord]) -> list[LayerRecord]:
    """Creation order, except that a parent comes after the layers built on it: an
    abandoned chain (intents recorded together, eventstore/oci/parallel.py) loses its
    children before their parents, as the rules require."""
    parents = {rec.parent for rec in records if rec.parent}
    return [rec for rec in records if rec.id not in parents] + \
        [rec for rec in reversed(records) if rec.id in parents]


def _recover_layer(run: _Run, rec: LayerRecord) -> None:
    store, session = run.store, run.session
    try:
        if rec.applying is not None and not rec.quarantined and not process.is_alive(rec.applying):
            _finish_interrupted_apply(run, rec)
            rec = store.index.layer(rec.id)
        if abandoned_create(rec):
            what = "half-deleted" if rec.deleting else "incomplete"
            run.start()
            if not rec.deleting:
                session.append(ev.LayerMarkedIncomplete(layer=rec.id, reason="recovery", owner=store.process))
            faults.point("recovery.before-remove")
            store.remove_data(rec.id)
            faults.point("recovery.after-remove")
            run.record(f"removed {what} layer {rec.id}", ev.LayerDeleted(layer=rec.id))
            return
        stale = store.stale_mount(rec)
        if stale:
            run.record(f"reset mount count of {rec.id} ({stale})",
                       ev.MountsReconciled(layer=rec.id, count=0, reason=stale))
        for holder in rec.holds:
            if not holder.lease and not process.is_alive(holder):
                run.record(f"released hold of dead pid {holder.pid} on {rec.id}",
                           ev.HoldReleased(layer=rec.id, holder=holder))
    except Exception as exc:  # one bad layer must not fail the whole store
        if rec.quarantined:
            return  # reported once already: an open that changes nothing records nothing
        run.record(f"quarantined {rec.id}: {exc}", ev.LayerQuarantined(layer=rec.id, reason=f"recovery failed: {exc}"))


def _finish_interrupted_apply(run: _Run, rec: LayerRecord) -> None:
    """A diff apply whose process died: rolled forward when its swap happened, back
    when not (``eventstore.applydiff``); the layer is usable again either way."""
    from eventstore import applydiff

    run.start()
    faults.point("recovery.before-apply")
    action, event = applydiff.recover(run.store, rec)
    run.record(action, event)
    applydiff.forget(run.store, rec.id)


def _unmount_uncounted(run: _Run) -> None:
    """Kernel mounts of layers whose count is 0 (a crash between the mount and its
    event) or that the log does not know: unmounted. Nobody can be using them through
    the store, and the writer lock keeps out a mount in progress."""
    store = run.store
    try:
        mounted = store.driver.mounted()
    except Exception as exc:
        run.actions.append(f"could not read the mount table: {exc}")
        return
    for layer_id in sorted(mounted):
        rec = store.index.layer(layer_id)
        if rec is not None and rec.mount_count:
            continue
        try:
            store.driver.unmount(layer_id)
        except Exception as exc:
            run.actions.append(f"could not unmount {layer_id}, mounted with no count: {exc}")
            continue
        reason = "mounted in the kernel with no count: unmounted"
        if rec is None:
            run.record(f"unmounted {layer_id} (a layer the log does not know)")
        else:
            run.record(f"unmounted {layer_id} ({reason})", ev.MountsReconciled(layer=layer_id, count=0, reason=reason))


def _rebuild_driver_metadata(run: _Run) -> None:
    """What a driver keeps beside layer data and can derive from the parent chains in
    the log (overlay: short links, lower files, work and merged dirs), rebuilt; parents
    before children, so a child's lower file names its parents' links."""
    store = run.store
    listing = store.index.listing()
    parent_of = {r["id"]: r["parent"] or None for r in listing}
    for row in listing:
        if row["incomplete"]:
            continue
        chain, parent = [], parent_of.get(row["id"])
        while parent:
            chain.append(parent)
            parent = parent_of.get(parent)
        try:
            done = store.driver.repair_layer(row["id"], chain)
        except Exception as exc:
            run.actions.append(f"could not rebuild the driver metadata of {row['id']}: {exc}")
            continue
        for action in done:
            run.record(action)


def _move_aside_what_no_event_accounts_for(run: _Run) -> None:
    """Driver data and tar-splits of no layer of the log, and strays in ``tarsplit/``:
    moved to lost+found, one event each, never deleted. One that cannot be moved is
    reported and left; it never blocks the rest."""
    store = run.store
    known = store.index.layer_ids()
    for layer_id in sorted(store.driver.layers() - known):
        run.start()
        faults.point("recovery.before-orphan")
        target = lost_found_path(store.root, "driver", layer_id)
        try:
            store.driver.set_aside(layer_id, target)
        except Exception as exc:  # a filesystem mounted inside it, a rename refused: kept, reported
            run.record(f"kept driver data {layer_id} where it is: {shown(exc)}",
                       ev.OrphanKept(layer=layer_id, what="driver data", reason=shown(exc)))
            continue
        run.record(f"moved driver data {layer_id} (no layer of the log) to {target.relative_to(store.root)}",
                   ev.DataMovedAside(layer=layer_id, what="driver data", path=target.name))
    try:
        entries = sorted(store.tarsplit_dir.iterdir())
    except FileNotFoundError:
        return
    except OSError as exc:
        run.actions.append(f"could not list {store.tarsplit_dir}: {exc.strerror}")
        return
    for path in entries:
        layer_id, suffix = path.name.split(".", 1) if "." in path.name else (path.name, "")
        if layer_id in known and suffix == "tar-split" and path.is_file():
            continue
        what = "tar-split" if suffix == "tar-split" and path.is_file() else "stray"
        run.start()
        target = lost_found_path(store.root, what, path.name)
        try:
            refuse_mounts(path)
            path.rename(target)
        except (OSError, LayerStoreError) as exc:
            run.record(f"kept {what} {shown(path.name)} where it is: {shown(exc)}",
                       ev.OrphanKept(layer=layer_id if what == "tar-split" else "", what=what, reason=shown(exc)))
            continue
        run.record(f"moved {what} {path.name} (no layer of the log) to {target.relative_to(store.root)}",
                   ev.DataMovedAside(layer=layer_id if what == "tar-split" else "", what=what, path=target.name))


def _sweep_layer_data_and_applies(run: _Run) -> None:
    """Layer data no event names (a blob whose event never came, a layer the log does
    not have): moved to lost+found. Records of diff applies that are over (the log has
    their outcome): removed."""
    from eventstore import applydiff, layerdata

    store = run.store
    for path in layerdata.strays(store.root, store.index.layer):
        run.start()
        target = lost_found_path(store.root, "layer-data", path.name)
        try:
            path.rename(target)
        except OSError as exc:
            run.actions.append(f"could not move {path} aside: {exc.strerror}")
            continue
        owner = path.parent.name if path.parent.name != layerdata.DIRECTORY else path.name
        run.record(f"moved layer data {path.relative_to(store.root)} (no event names it) to "
                   f"{target.relative_to(store.root)}",
                   ev.DataMovedAside(layer=owner, what="layer data", path=target.name))
    busy = {r.id for r in store.index.needing_attention() if r.applying is not None}
    for action in applydiff.sweep(store, busy):
        run.record(action)
