"""Holds whose owner is gone (the process exited, or lived in an earlier boot) are
released; named leases and the holds of live processes stay."""

from __future__ import annotations

from pathlib import Path

from eventstore.events import Holder
from eventstore.opener import open_store
from replay.verify import check

from .support import events_after, last_lsn_on_disk, run_python, summary

HOLD_AND_EXIT = """
import sys
from eventstore.opener import open_store
with open_store(sys.argv[1]) as store:
    store.hold(sys.argv[2])
    store.hold(sys.argv[2], lease="build-cache")
    print(store.owner.pid, store.owner.start)
"""


def test_holds_of_a_process_that_exited_are_released_and_leases_stay(made: Path, driver: str):
    with open_store(made) as store:
        layer_id = store.create()
        store.hold(layer_id)  # a live holder: this test
    result = run_python(HOLD_AND_EXIT, str(made), layer_id)
    assert result.returncode == 0, result.stderr.decode()
    pid, start = (int(x) for x in result.stdout.split())
    before = last_lsn_on_disk(made)

    with open_store(made) as store:
        events = events_after(store, before)
        assert summary(events) == [("recovery-started", None), ("hold-released", layer_id), ("recovery-finished", None)]
        assert (events[1].holder.pid, events[1].holder.start) == (pid, start)
        rec = store.lookup(layer_id)
        assert rec.hold_refs == 2
        assert Holder(lease="build-cache") in rec.holds and store.owner in rec.holds
        assert check(store) == []
    with open_store(made) as store:
        assert store.log.last_lsn == before + 3


def test_holds_taken_in_an_earlier_boot_are_released(made: Path, driver: str, monkeypatch):
    monkeypatch.setenv("LAYERSTORE_BOOT_ID", "boot-one")
    with open_store(made) as store:
        layer_id = store.create()
        store.hold(layer_id)  # this very process, which lives on into "boot-two"
        store.hold(layer_id, lease="pinned")
    monkeypatch.setenv("LAYERSTORE_BOOT_ID", "boot-two")
    before = last_lsn_on_disk(made)
    with open_store(made) as store:
        assert summary(events_after(store, before)) == [
            ("recovery-started", None), ("hold-released", layer_id), ("recovery-finished", None)]
        assert store.lookup(layer_id).holds == [Holder(lease="pinned")]
