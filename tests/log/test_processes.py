"""Several processes share one root: writers take turns under the lock, LSNs stay
gap-free across all of them, and each writer first reads what the others appended."""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from pathlib import Path

from eventstore.events import LayerCreated
from eventstore.log import EventLog

PROCESSES = 4
APPENDS = 500

# spawn, not fork: the test process may run threads (group commit tests), and a child
# must open the log from nothing, as a separate program would.
spawn = multiprocessing.get_context("spawn")


def append_as_a_process(root: str, count: int, start) -> None:
    with EventLog.open(root) as log:
        start.wait()
        for seq in range(count):
            log.append(LayerCreated(layer=f"{os.getpid()}-{seq}"))


def append_batch_as_a_process(root: str, batches: list[list[str]]) -> None:
    with EventLog.open(root) as log:
        for names in batches:
            log.append_many([LayerCreated(layer=name) for name in names])


def run(target, *args) -> list:
    processes = [spawn.Process(target=target, args=a) for a in args]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return processes


def test_processes_appending_at_once_get_gap_free_lsns_in_their_own_order(root: Path):
    start = spawn.Barrier(PROCESSES)
    processes = run(append_as_a_process, *[(str(root), APPENDS, start)] * PROCESSES)
    with EventLog.open(root, writer=False) as log:
        events = list(log.events())
        assert log.verify().events == PROCESSES * APPENDS
    assert [lsn for lsn, _ in events] == list(range(1, PROCESSES * APPENDS + 1))
    by_process: dict[str, list[int]] = defaultdict(list)
    for _, event in events:
        pid, seq = event.layer.split("-")
        by_process[pid].append(int(seq))
    assert sorted(by_process) == sorted(str(p.pid) for p in processes)
    assert all(seqs == list(range(APPENDS)) for seqs in by_process.values())


def test_writer_taking_the_lock_reads_what_another_process_appended(root: Path):
    seen = []
    with EventLog.open(root, listener=seen.append) as log:
        assert log.append(LayerCreated(layer="mine-1")) == 1
        run(append_batch_as_a_process, (str(root), [["theirs-1", "theirs-2"], ["theirs-3"]]))
        assert log.last_lsn == 1  # nothing read until the lock is taken
        assert log.append(LayerCreated(layer="mine-2")) == 5
    assert [(r.lsn, [e.layer for e in r.events]) for r in seen] == [
        (2, ["theirs-1", "theirs-2"]), (4, ["theirs-3"])]
