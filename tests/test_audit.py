"""Time travel and audit: the state at any LSN is the fold stopped there (checkpoints or
not), ``state --at TIME`` picks the last event at or before TIME, deleted layers stay
visible, and ``history`` says who did what, when, filtered by time and type."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eventstore.errors import InvalidArgument
from eventstore.opener import open_store
from replay.audit import deleted_layers, lsn_at_time, parse_time, state_at
from tests.recovery.support import as_data, cli_ok, fold_until, run_cli, workload


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def events(store) -> list[tuple[int, object]]:
    return list(store.log.events())


def history_json(root: Path, *args: str) -> list[dict]:
    """``history --json``: one JSON object a line, so that a pipeline can read it as it comes."""
    return [json.loads(line) for line in cli_ok(root, "--json", "history", *args).splitlines()]


def exact(ns: int) -> str:
    """``ns`` as epoch seconds with every digit."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


# --- state at an LSN --------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [10_000, 3], ids=["no-checkpoints", "checkpoint-every-3"])
def test_state_at_every_lsn_is_the_fold_stopped_there(root: Path, interval: int):
    with open_store(root, "vfs") as store:
        store.checkpoint_interval = interval
        workload(store)
        workload(store)
        assert bool(os.listdir(root / "checkpoints")) if interval == 3 else not (root / "checkpoints").exists()
        for lsn in range(store.log.last_lsn + 1):
            assert as_data(state_at(store, lsn)) == as_data(fold_until(store, lsn)), f"state at LSN {lsn}"


def test_state_at_outside_the_log_is_refused(root: Path):
    with open_store(root, "vfs") as store:
        workload(store)
        for lsn in (-1, store.log.last_lsn + 1):
            with pytest.raises(InvalidArgument):
                state_at(store, lsn)
    assert run_cli(root, "state", "--at", "999999").returncode == InvalidArgument.exit_code


def test_deleted_layers_are_seen_before_their_delete_and_listed_after(root: Path):
    with open_store(root, "vfs") as store:
        ids = workload(store)
        doomed = ids["doomed"]
        deleted_at = next(lsn for lsn, e in events(store) if e.type_name == "layer-deleted" and e.layer == doomed)
        before = state_at(store, deleted_at - 1)
        assert doomed in before.layers and deleted_layers(store, deleted_at - 1, before) == []
        after = state_at(store, deleted_at)
        assert doomed not in after.layers
        gone = deleted_layers(store, deleted_at, after)
        assert [rec.id for rec in gone] == [doomed]
        assert gone[0].names == [n for n in before.layers[doomed].names]

    at_delete = json.loads(cli_ok(root, "--json", "state", "--at", str(deleted_at)))
    assert at_delete["lsn"] == deleted_at
    assert [layer["id"] for layer in at_delete["deleted"]] == [doomed]
    assert doomed not in {layer["id"] for layer in at_delete["layers"]}
    just_before = json.loads(cli_ok(root, "--json", "state", "--at", str(deleted_at - 1)))
    assert doomed in {layer["id"] for layer in just_before["layers"]} and just_before["deleted"] == []


# --- state at a time --------------------------------------------------------------------------


def test_state_at_a_time_picks_the_last_event_at_or_before_it(root: Path):
    with open_store(root, "vfs") as store:
        workload(store, pause=0.002)
        timeline = [(lsn, e.time) for lsn, e in events(store)]
        picked = {}
        for (lsn, at), (_, next_at) in zip(timeline, timeline[1:]):
            if next_at == at:
                continue  # two events of one batch share their time
            for moment in (exact(at), exact(next_at - 1), exact((at + next_at) // 2)):
                assert lsn_at_time(store, parse_time(moment)) == lsn, f"at {moment}"
                picked[moment] = lsn
        assert lsn_at_time(store, timeline[0][1] - 1) == 0
    # and the command line gets the same answers (a few: each is a process)
    for moment in list(picked)[::len(picked) // 4]:
        state = json.loads(cli_ok(root, "--json", "state", "--at", moment))
        assert state["lsn"] == picked[moment]
    assert json.loads(cli_ok(root, "--json", "state", "--at", exact(timeline[0][1] - 1)))["lsn"] == 0


def test_state_at_an_iso_time_from_history(root: Path):
    with open_store(root, "vfs") as store:
        workload(store, pause=0.002)
        expected = {lsn: set(state_at(store, lsn).layers) for lsn in range(store.log.last_lsn + 1)}
    for entry in history_json(root)[::5]:
        state = json.loads(cli_ok(root, "--json", "state", "--at", entry["time"]))
        assert state["lsn"] >= entry["lsn"]  # the event itself is in the state at its own time
        assert {layer["id"] for layer in state["layers"]} == expected[state["lsn"]]


def test_parse_time_is_exact_and_understands_zones():
    assert parse_time("1795814053.455172123") == 1795814053_455172123
    assert parse_time("1795814053") == 1795814053_000000000
    assert parse_time("2026-11-27T21:14:13.455172123Z") == 1795814053_455172123
    assert parse_time("2026-11-27T23:14:13.455172123+02:00") == 1795814053_455172123
    assert parse_time("2026-11-27T21:14:13") == 1795814053_000000000  # no zone: UTC
    assert parse_time("2026-11-27T21:14:13.5Z") == 1795814053_500000000
    for bad in ("yesterday", "12:00", ""):
        with pytest.raises(InvalidArgument):
            parse_time(bad)


# --- history ----------------------------------------------------------------------------------


def test_history_json_is_every_event_with_who_what_when(root: Path):
    with open_store(root, "vfs") as store:
        ids = workload(store)
        logged = events(store)
    cli_ok(root, "hold", "--lease", "from-the-cli", ids["base"])
    entries = history_json(root)
    assert [e["lsn"] for e in entries] == list(range(1, len(logged) + 2))
    for entry, (lsn, event) in zip(entries, logged):
        assert {"lsn", "time", "type", "layer", "actor"} <= entry.keys()
        assert (entry["type"], entry["layer"]) == (event.type_name, getattr(event, "layer", None))
        assert parse_time(entry["time"]) == event.time
        assert entry["actor"] == {"pid": os.getpid(), "uid": os.getuid(), "program": event.actor.program}
    by_cli = entries[-1]
    assert (by_cli["type"], by_cli["layer"]) == ("hold-added", ids["base"])
    assert by_cli["actor"]["pid"] != os.getpid() and by_cli["actor"]["program"]
    assert by_cli["details"]["holder"] == {"lease": "from-the-cli"}


def test_history_filters_by_layer_time_and_type(root: Path):
    with open_store(root, "vfs") as store:
        ids = workload(store, pause=0.002)
        logged = events(store)
    times = {lsn: e.time for lsn, e in logged}

    child = history_json(root, "child-0")  # by name
    assert child and all(e["layer"] == ids["child"] for e in child)
    assert [e["lsn"] for e in child] == [lsn for lsn, e in logged if getattr(e, "layer", None) == ids["child"]]

    since, until = 5, 12
    window = history_json(root, "--since", exact(times[since]), "--until", exact(times[until]))
    assert [e["lsn"] for e in window] == [lsn for lsn in times if times[since] <= times[lsn] <= times[until]]
    assert window[0]["lsn"] == since and window[-1]["lsn"] == until
    iso = history_json(root, "--since", window[0]["time"], "--until", window[-1]["time"])
    assert iso == window

    holds = history_json(root, "--type", "hold-added", "--type", "hold-released")
    assert [e["lsn"] for e in holds] == [lsn for lsn, e in logged if e.type_name in ("hold-added", "hold-released")]
    assert {e["type"] for e in holds} == {"hold-added", "hold-released"}
    both = history_json(root, ids["base"][:12], "--type", "hold-added", "--until", exact(times[until]))
    assert [e["lsn"] for e in both] == [lsn for lsn, e in logged
                                        if e.type_name == "hold-added" and e.layer == ids["base"] and lsn <= until]


def test_history_of_a_deleted_layer_by_id_or_prefix(root: Path):
    with open_store(root, "vfs") as store:
        doomed = workload(store)["doomed"]
        assert not store.exists(doomed)
    full = history_json(root, doomed)
    assert [e["type"] for e in full] == ["layer-created", "layer-completed", "layer-marked-incomplete",
                                         "layer-deleted"]
    assert history_json(root, doomed[:12]) == full
    assert run_cli(root, "history", "f" * 64).returncode == 1  # never existed
