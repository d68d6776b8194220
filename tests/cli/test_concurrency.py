"""Several processes at once on one root, through the CLI: 8 workers × 50 mixed
operations (tests/cli/concurrent_worker.py). Afterwards the log is gap-free, the read
models are the fold of the log, and every acknowledged operation is there."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from eventstore import events as ev
from eventstore.events import Holder
from eventstore.index import Index
from eventstore.log import EventLog
from eventstore.state import fold
from tests.store.support import assert_read_models_equal_fold, unmount_everything_under

from .support import cli, cli_env

WORKERS = 8
OPERATIONS = 50
WORKER = Path(__file__).with_name("concurrent_worker.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The store root after the workers ran, and every call they made (worker, args,
    exit code, output), in each worker's order."""
    tmp = tmp_path_factory.mktemp("concurrent")
    root = tmp / "store"
    # the store exists before the race, as it would on a node: the driver is chosen once
    assert cli(root, "recover").returncode == 0
    outputs = [tmp / f"worker-{i}.json" for i in range(WORKERS)]
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(root), str(i), str(1000 + i), str(OPERATIONS),
                                 str(out)], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i, out in enumerate(outputs)]
    try:
        for worker in workers:
            _, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err.decode()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    calls = [dict(call, worker=i) for i, out in enumerate(outputs) for call in json.loads(out.read_text())["calls"]]
    yield root, calls
    unmount_everything_under(tmp)


def acknowledged(calls: list[dict], command: str) -> list[dict]:
    return [c for c in calls if c["args"][0] == command and c["code"] == 0]


def test_every_worker_made_its_operations(run):
    _, calls = run
    assert len(calls) == WORKERS * OPERATIONS
    done = Counter(c["args"][0] for c in calls if c["code"] == 0)
    # the mix really happened: each kind succeeded at least a few times
    for command in ("create", "hold", "release", "mount", "umount", "delete", "layers"):
        assert done[command] >= 3, done


def test_failures_are_refusals_with_one_line(run):
    _, calls = run
    for call in calls:
        if call["code"] != 0:
            assert call["code"] in (1, 3), call  # not found, or refused by a rule: never usage, corruption, crash
            assert call["out"] == "" and len(call["err"].splitlines()) == 1, call


def test_own_leases_and_mounts_are_always_undone(run):
    """A worker releases only leases it holds and unmounts only what it mounted: nothing
    another worker does can make those fail."""
    _, calls = run
    for call in calls:
        if call["args"][0] in ("release", "umount"):
            assert call["code"] == 0, call


def test_the_log_is_gap_free(run):
    root, calls = run
    with EventLog.open(root, writer=False, create=False) as log:
        report = log.verify()
        lsns = [lsn for lsn, _ in log.events()]
    assert report.torn_tail is None
    assert lsns == list(range(1, report.last_lsn + 1))
    assert report.events == report.last_lsn >= 2 * len(acknowledged(calls, "create"))


def test_the_read_models_are_the_fold_of_the_log(run):
    root, _ = run
    with EventLog.open(root, writer=False, create=False) as log:
        state = fold(log.events())
        uuid = str(log.store_uuid)
    index = Index(root / "index.db")  # as the workers left it: no catching up here
    try:
        assert index.store_uuid == uuid
        assert_read_models_equal_fold(index, state)
        assert [r[0] for r in index.history()] == list(range(1, state.lsn + 1))
    finally:
        index.close()


def test_every_acknowledged_operation_is_there(run):
    root, calls = run
    with EventLog.open(root, writer=False, create=False) as log:
        events = [e for _, e in log.events()]
        state = fold(enumerate(events, start=1))
    created = {c["out"].strip() for c in acknowledged(calls, "create")}
    deleted = {c["out"].strip() for c in acknowledged(calls, "delete")}
    assert deleted <= created
    # present unless deleted, and nothing present that no acknowledged create made
    assert set(state.layers) == created - deleted
    assert not any(rec.incomplete for rec in state)
    completed = {e.layer for e in events if isinstance(e, ev.LayerCompleted)}
    gone = {e.layer for e in events if isinstance(e, ev.LayerDeleted)}
    assert created <= completed and deleted <= gone
    # the driver has exactly the layers the log has
    assert {p.name for p in (root / "vfs" / "dir").iterdir()} == set(state.layers)

    held, released = Counter(), Counter()
    for call in acknowledged(calls, "hold"):
        held[(call["args"][1], call["args"][3])] += 1
    for call in acknowledged(calls, "release"):
        released[(call["args"][1], call["args"][3])] += 1
    for rec in state:
        leases = Counter((rec.id, h.lease) for h in rec.holds)
        expected = Counter({k: v for k, v in (held - released).items() if k[0] == rec.id})
        assert leases == expected, rec.id
        assert all(h == Holder(lease=h.lease) for h in rec.holds)

    mounts, umounts = Counter(), Counter()
    for call in acknowledged(calls, "mount"):
        mounts[call["args"][1]] += 1
    for call in acknowledged(calls, "umount"):
        umounts[call["args"][1]] += 1
    for rec in state:
        assert rec.mount_count == mounts[rec.id] - umounts[rec.id], rec.id
    # a layer deleted was never left mounted or held
    assert all(mounts[d] == umounts[d] and not (held - released)[(d, "")] for d in deleted)
