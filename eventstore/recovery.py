"""Startup recovery (DESIGN §4): finish or undo what a crash left behind.

Runs on every writer open (``eventstore.opener``), under the writer lock, after the read
models caught up. Each step goes through the driver and is recorded in the log through
the store's write session; each is idempotent, so a crash in the middle of recovery is
finished by the next open. A layer whose repair fails is quarantined (reported, refused
by operations) and the rest goes on.

What is looked at costs nothing when all is well: one indexed query finds the layers
that are incomplete, mounted or held by a process. The orphan sweep (driver data no
event accounts for) lists the driver's directory, so it runs once per boot and on
``layerstore recover``.
"""

from __future__ import annotations

from eventstore import events as ev
from eventstore import faults, process
from eventstore.state import LayerRecord
from eventstore.store import LayerStore, WriteSession, abandoned

SWEPT_BOOT = "swept_boot"  # meta key: the boot whose orphan sweep finished


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
        for rec in store.index.needing_attention():
            _recover_layer(run, rec)
        if sweep:
            # Forget the mark first: a sweep killed half-way (even one asked for by
            # ``layerstore recover`` in a boot already swept) is redone by the next open.
            store.index.set_meta(SWEPT_BOOT, "")
            _sweep_orphans(run)
            store.index.set_meta(SWEPT_BOOT, boot)
        if run.started:
            session.append(ev.RecoveryFinished(actions=len(run.actions)))
    return run.actions


def _recover_layer(run: _Run, rec: LayerRecord) -> None:
    store, session = run.store, run.session
    try:
        if abandoned(rec) and not rec.quarantined:
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


def _sweep_orphans(run: _Run) -> None:
    store = run.store
    known = store.index.layer_ids()
    for layer_id in sorted(store.driver.layers() - known):
        run.start()
        faults.point("recovery.before-orphan")
        store.driver.remove(layer_id)
        run.record(f"removed orphan driver data {layer_id}", ev.OrphanRemoved(layer=layer_id, what="driver data"))
    tarsplit_dir = store.tarsplit_dir
    if tarsplit_dir.is_dir():
        for path in sorted(tarsplit_dir.iterdir()):
            layer_id = path.name.split(".", 1)[0]
            if layer_id not in known:
                run.start()
                path.unlink()
                run.record(f"removed orphan tar-split {path.name}", ev.OrphanRemoved(layer=layer_id, what="tar-split"))
