"""What must hold after a crash, for the crash harness and the stateful model test alike.

- the outcomes a crash may leave (``crash_outcomes``): the model after the acknowledged
  operations, and the operation in flight done, partly done or undone — each as a crash
  leaves it (holds of the dead process released; after a power loss, no mount);
- every acknowledged result was the model's (``check_acknowledged``);
- after recovery (``check_recovered``): the store equals one of those outcomes, no
  incomplete or quarantined layer, no orphan driver data or tar-split, no mount counted
  that the kernel does not have and none the kernel has that is not counted, the read models equal the fold of the log, no
  acknowledged event missing, and further opens change nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from replay.model import Model, Op, describe_difference, observe_store
from replay.workload import OPEN_STEP, Step, normalize

Outcomes = list[tuple[str, Model]]


def check_acknowledged(model: Model, op: Op, ack: dict, actor: str) -> str | None:
    """Run ``op`` on ``model``; what is wrong when the store's acknowledged result
    (``ack``: result or error) differs from the model's (None: they agree)."""
    from eventstore.errors import LayerStoreError

    try:
        want, want_error = normalize(op.kind, model.run(op, actor)), None
    except LayerStoreError as exc:
        want, want_error = None, type(exc).__name__
    got, got_error = ack.get("result"), ack.get("error")
    if (got_error or None) != want_error or (not want_error and got != want):
        return (f"the store gave {got_error or repr(got)} ({ack.get('message') or 'ok'}), "
                f"the model {want_error or repr(want)}")
    return None


def crash_outcomes(model: Model, in_flight: Op | None, actor: str, *, reboot: bool,
                   alive: tuple[str, ...] = ()) -> Outcomes:
    """The states a crash may leave, labelled: ``model`` with ``in_flight`` (None:
    nothing was in flight) undone, done, or partly done; each after the crash."""
    if in_flight is None or in_flight.kind == "reopen":
        candidates = [("undone", model)]
    else:
        candidates = model.outcomes(in_flight, actor)
    return [(label, m.after_crash(alive=list(alive), reboot=reboot)) for label, m in candidates]


def expected_outcomes(steps: list[Step], acked: dict[int, dict], in_flight: int | None,
                      reboot: bool, problems: list[str]) -> Outcomes:
    """The outcomes of a workload crashed at step ``in_flight``; steps whose result
    differs from the model's are added to ``problems``."""
    model = Model()
    actor = "pid:workload"
    if in_flight == OPEN_STEP:
        upto = 0
    elif in_flight is None:
        upto = max((i for i in acked if i >= 0), default=-1) + 1
    else:
        upto = in_flight
    for step in steps[:upto]:
        if step.index not in acked:
            problems.append(f"step {step.index} ({step.line}) has no acknowledgement but a later one has")
            break
        if step.op.kind != "reopen":
            problem = check_acknowledged(model, step.op, acked[step.index], actor)
            if problem:
                problems.append(f"step {step.index} ({step.line}): {problem}")
    op = steps[in_flight].op if in_flight is not None and 0 <= in_flight < len(steps) else None
    return crash_outcomes(model, op, actor, reboot=reboot)


# --- after recovery ---------------------------------------------------------------------------------

def _dump_tables(store) -> dict:
    return {t: store.index.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("layers", "names", "history")}


@contextmanager
def traced(trace: Path | None, boot: str) -> Iterator[None]:
    """Failpoints passed in this process go to ``trace``; the boot id is ``boot``."""
    from eventstore import faults

    saved_boot = os.environ.get("LAYERSTORE_BOOT_ID")
    if boot:
        os.environ["LAYERSTORE_BOOT_ID"] = boot
    try:
        with faults.tracing_to(trace) if trace is not None else nullcontext():
            yield
    finally:
        if saved_boot is None:
            os.environ.pop("LAYERSTORE_BOOT_ID", None)
        else:
            os.environ["LAYERSTORE_BOOT_ID"] = saved_boot


def check_recovered(reopen: Callable, root: Path, candidates: Outcomes, acked_lsn: int, *, content: bool,
                    boot: str = "", trace: Path | None = None) -> tuple[str, list[str], list[str]]:
    """Recover the store at ``root`` by ``reopen()`` (its failpoints traced to
    ``trace``), open it twice more and check it; (the outcome matched, problems, notes)."""
    notes: list[str] = []
    with traced(trace, boot):
        try:
            reopen().close()
        except Exception as exc:  # the store must open after any crash
            return "violation", [f"recovery failed: {type(exc).__name__}: {exc}"], notes
    with traced(None, boot):
        try:
            return _check_reopened(reopen, root, candidates, acked_lsn, content, notes)
        except Exception as exc:
            return "violation", [f"a second open failed: {type(exc).__name__}: {exc}"], notes


def _check_reopened(reopen: Callable, root: Path, candidates: Outcomes, acked_lsn: int, content: bool,
                    notes: list[str]):
    from eventstore.log import EventLog
    from replay.verify import check
    from replay.workload import archive_available

    problems: list[str] = []
    with EventLog.open(root, writer=False, create=False) as log:
        lsn_recovered = log.last_lsn
    store = reopen()
    try:
        if store.log.last_lsn != lsn_recovered:
            problems.append(f"a second open changed the log: last LSN {lsn_recovered} -> {store.log.last_lsn}")
        if store.log.last_lsn < acked_lsn:
            problems.append(f"acknowledged events lost: the log ends at LSN {store.log.last_lsn}, "
                            f"LSN {acked_lsn} was acknowledged")
        problems += check(store, content=content and archive_available())
        label = _check_state(store, candidates, problems)
        _check_driver(store, root, problems, notes)
        tables, lsn = _dump_tables(store), store.log.last_lsn
    finally:
        store.close()
    store = reopen()
    try:
        if store.log.last_lsn != lsn or _dump_tables(store) != tables:
            problems.append("a third open changed the store (recovery is not idempotent)")
    finally:
        store.close()
    return ("violation" if problems else label), problems, notes


def _check_state(store, candidates: Outcomes, problems: list[str]) -> str:
    for rec in store.layers():
        if rec.quarantined:
            problems.append(f"layer {rec.id[:12]}: quarantined by recovery ({rec.quarantined})")
        elif rec.incomplete:
            problems.append(f"layer {rec.id[:12]}: incomplete after recovery")
    observed = observe_store(store)
    for label, model in candidates:
        if model.observe() == observed:
            return label
    closest = candidates[-1][1].observe()
    labels = "/".join(label for label, _ in candidates)
    problems.append(f"the store matches no acceptable outcome ({labels}): "
                    f"{describe_difference(closest, observed)}")
    return "violation"


def _check_driver(store, root: Path, problems: list[str], notes: list[str]) -> None:
    from eventstore.mounts import mount_points

    layers = {rec.id: rec for rec in store.layers()}
    for orphan in sorted(store.driver.layers() - set(layers)):
        problems.append(f"orphan driver data: {orphan[:12]} (no layer)")
    tarsplit_dir = root / "tarsplit"
    if tarsplit_dir.is_dir():
        for path in sorted(tarsplit_dir.iterdir()):
            owner = layers.get(path.name.split(".", 1)[0])
            if owner is None or not owner.has_tarsplit:
                problems.append(f"orphan tar-split: {path.name}")
    mounted = mount_points(root)
    for rec in layers.values():
        if rec.mount_count and not store.driver.is_mounted(rec.id):
            problems.append(f"layer {rec.id[:12]}: mount count {rec.mount_count}, not mounted in the kernel")
        elif not rec.mount_count and os.path.realpath(store.driver.mount_path(rec.id)) in mounted:
            problems.append(f"layer {rec.id[:12]}: mounted in the kernel with mount count 0 (recovery must "
                            f"unmount a mount nobody counted)")
