"""Startup recovery (DESIGN §4): finish or undo what a crash left behind.

Runs on every writer open, under the writer lock, after the read models caught up.
Each step goes through the driver and is recorded in the log; each is idempotent, so a
crash in the middle of recovery is finished by the next open. A layer whose repair
fails is quarantined (reported, refused by operations) and the rest goes on.

What is looked at costs nothing when all is well: one indexed query finds the layers
that are incomplete, mounted or held by a process. The orphan sweep (driver data no
event accounts for) lists the driver's directory, so it runs once per boot and on
``layerstore recover``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from eventstore import events as ev
from eventstore import faults, process
from eventstore.errors import LayerStoreError
from eventstore.names import shown
from eventstore.removal import remove_tree
from eventstore.state import LayerRecord

if TYPE_CHECKING:
    from eventstore.store import LayerStore

for _name, _doc in [
    ("recovery.before-remove", "recovery is about to remove a half-made or half-deleted layer"),
    ("recovery.after-remove", "recovery removed a layer's data, not yet recorded"),
    ("recovery.before-orphan", "recovery is about to remove orphan driver data"),
]:
    faults.declare(_name, _doc)


def recover_store(store: "LayerStore", *, sweep: bool | None = None) -> list[str]:
    """Recover ``store``; one line per action taken (empty when there was nothing to do)."""
    actions: list[str] = []
    with store._deciding():
        boot = process.boot_id()
        if sweep is None:
            sweep = store.index._meta("swept_boot") != boot
        for rec in store.index.needing_attention():
            _recover_layer(store, rec, boot, actions)
        if sweep:
            # Forget the mark first: a sweep killed half-way (even one asked for by
            # ``layerstore recover`` in a boot already swept) is redone by the next open.
            _set_swept_boot(store, "")
            _sweep_orphans(store, actions)
            _set_swept_boot(store, boot)
        if actions:
            store._append(ev.RecoveryFinished(actions=len(actions)))
    return actions


def _set_swept_boot(store: "LayerStore", boot: str) -> None:
    store.index._transaction(lambda: store.index.conn.execute(
        "INSERT OR REPLACE INTO meta VALUES ('swept_boot', ?)", (boot,)))


def _start(store: "LayerStore", actions: list[str]) -> None:
    if not actions:
        store._append(ev.RecoveryStarted(boot=process.boot_id()))


def _recover_layer(store: "LayerStore", rec: LayerRecord, boot: str, actions: list[str]) -> None:
    try:
        if rec.incomplete and not rec.quarantined and not (rec.owner and process.is_alive(rec.owner)):
            _start(store, actions)
            what = "half-deleted" if rec.deleting else "incomplete"
            if not rec.deleting:
                store._append(ev.LayerMarkedIncomplete(layer=rec.id, reason="recovery", owner=store.process))
            faults.point("recovery.before-remove")
            store._remove_data(rec.id)
            faults.point("recovery.after-remove")
            store._append(ev.LayerDeleted(layer=rec.id))
            actions.append(f"removed {what} layer {rec.id}")
            return
        if rec.mount_count and (rec.mount_boot != boot or not store.driver.is_mounted(rec.id)):
            _start(store, actions)
            reason = "mounted in an earlier boot" if rec.mount_boot != boot else "not in the kernel's mount table"
            store._append(ev.MountsReconciled(layer=rec.id, count=0, reason=reason))
            actions.append(f"reset mount count of {rec.id} ({reason})")
        for holder in rec.holds:
            if not holder.lease and not process.is_alive(holder):
                _start(store, actions)
                store._append(ev.HoldReleased(layer=rec.id, holder=holder))
                actions.append(f"released hold of dead pid {holder.pid} on {rec.id}")
    except Exception as exc:  # one bad layer must not fail the whole store
        if rec.quarantined:
            return  # reported once already: an open that changes nothing records nothing
        _start(store, actions)
        store._append(ev.LayerQuarantined(layer=rec.id, reason=f"recovery failed: {exc}"))
        actions.append(f"quarantined {rec.id}: {exc}")


def _sweep_orphans(store: "LayerStore", actions: list[str]) -> None:
    known = {row[0] for row in store.index.conn.execute("SELECT id FROM layers")}
    for layer_id in sorted(store.driver.layers() - known):
        _start(store, actions)
        faults.point("recovery.before-orphan")
        _remove_orphan(store, actions, layer_id, "driver data", layer_id,
                       lambda: store.driver.remove(layer_id))
    tarsplit_dir = store.root / "tarsplit"
    if tarsplit_dir.is_dir():
        for path in sorted(tarsplit_dir.iterdir()):
            layer_id = path.name.split(".", 1)[0]
            if layer_id not in known:
                _start(store, actions)
                _remove_orphan(store, actions, layer_id, "tar-split", path.name, lambda: remove_tree(path))


def _remove_orphan(store: "LayerStore", actions: list[str], layer_id: str, what: str, label: str,
                   remove: Callable[[], None]) -> None:
    """Remove one orphan; one that cannot be removed safely (a filesystem someone
    mounted inside it) is kept and reported, and the sweep goes on."""
    try:
        remove()
    except (LayerStoreError, OSError) as exc:
        reason = shown(exc)
        store._append(ev.OrphanKept(layer=layer_id, what=what, reason=reason))
        actions.append(f"kept orphan {what} {shown(label)}: {reason}")
        return
    store._append(ev.OrphanRemoved(layer=layer_id, what=what))
    actions.append(f"removed orphan {what} {shown(label)}")
