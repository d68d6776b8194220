"""Recovery killed half-way, then run again: the next open finishes the job, and the
open after that changes nothing at all (recovery is idempotent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.faults import CRASH_EXIT_CODE
from eventstore.log import EventLog
from eventstore.opener import open_store
from replay.verify import check

from .support import (
    cli_ok,
    crash_at,
    driver_dir,
    events_after,
    in_lost_found,
    last_lsn_on_disk,
    new_id,
    reboot,
    run_python,
    spawn_cli,
    spawn_python,
    summary,
    traces_of,
    wait_for,
    wait_for_driver_work,
)
from .test_orphans import make_orphans

OPEN = "import sys\nfrom eventstore import open_store\nopen_store(sys.argv[1]).close()"
HOLD_AND_PAUSE = """
import sys, time
from eventstore.opener import open_store
store = open_store(sys.argv[1])
store.hold(sys.argv[2])
print("held", flush=True)
time.sleep(60)
"""


def events_after_on_disk(root: Path, lsn: int = 0) -> list:
    with EventLog.open(root, writer=False, create=False) as log:
        return [event for _, event in log.events(lsn + 1)]


def dump_read_models(store) -> dict:
    return {table: store.index.conn.execute(f"SELECT * FROM {table}").fetchall()
            for table in ("layers", "names", "history", "meta")}


def assert_second_open_changes_nothing(root: Path) -> None:
    with open_store(root) as store:
        lsn, tables = store.log.last_lsn, dump_read_models(store)
    with open_store(root) as store:
        assert store.log.last_lsn == lsn
        assert dump_read_models(store) == tables
    assert cli_ok(root, "recover").strip() == "nothing to recover"
    assert last_lsn_on_disk(root) == lsn


def half_made(root: Path) -> str:
    layer_id = new_id()
    crash_at("store.create.after-driver", root, "create", "--id", layer_id)
    return layer_id


def half_deleted(root: Path) -> str:
    with open_store(root) as store:
        layer_id = store.create()
    crash_at("store.delete.after-mark", root, "delete", layer_id)
    return layer_id


@pytest.mark.parametrize("failpoint", ["recovery.before-remove", "recovery.after-remove"])
@pytest.mark.parametrize("leftover", [half_made, half_deleted], ids=["half-made", "half-deleted"])
def test_recovery_killed_while_removing_a_layer_is_finished_by_the_next_open(made: Path, driver: str,
                                                                             failpoint: str, leftover):
    layer_id = leftover(made)
    before = last_lsn_on_disk(made)
    crash_at(failpoint, made, "recover")
    assert driver_dir(made, driver, layer_id).is_dir() == (failpoint == "recovery.before-remove")

    with open_store(made) as store:
        assert not store.exists(layer_id)
        marked = [("layer-marked-incomplete", layer_id)] if leftover is half_made else []
        assert summary(events_after(store, before)) == [
            ("recovery-started", None), *marked,                               # the killed run
            ("recovery-started", None), ("layer-deleted", layer_id), ("recovery-finished", None),
        ]
        assert check(store) == []
    assert traces_of(made, layer_id) == []
    assert_second_open_changes_nothing(made)


@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize("via", ["recover-command", "new-boot-open"])
def test_orphan_sweep_killed_half_way_is_finished_by_the_next_open(made: Path, driver: str, monkeypatch,
                                                                   nth: int, via: str):
    first, _ = make_orphans(made, driver)  # and an orphan tar-split
    second = new_id()
    driver_dir(made, driver, second).mkdir(parents=True)
    orphans = (first, second)
    if via == "recover-command":
        crash_at("recovery.before-orphan", made, "recover", nth=nth)
    else:
        monkeypatch.setenv("LAYERSTORE_BOOT_ID", "the-next-boot")
        result = run_python(OPEN, str(made), failpoints=f"recovery.before-orphan=crash@{nth}")
        assert result.returncode == CRASH_EXIT_CODE
    assert sum(driver_dir(made, driver, o).exists() for o in orphans) == 2 - (nth - 1)  # killed before the nth

    with open_store(made):  # same boot as the killed run, which never finished its sweep
        pass
    assert not any(driver_dir(made, driver, o).exists() for o in orphans)
    assert all(in_lost_found(made, o) for o in orphans)
    assert list((made / "tarsplit").iterdir()) == []
    assert_second_open_changes_nothing(made)


def test_everything_a_crash_can_leave_is_recovered_in_one_open(made: Path, driver: str, monkeypatch):
    # Every writer open recovers, so the owners of the leftovers must all die after the
    # last open: each child pauses mid-operation and all are killed together.
    monkeypatch.setenv("LAYERSTORE_BOOT_ID", "boot-one")
    with open_store(made) as store:
        mounted = store.create()
        held = store.create(names=["held"])
        deleting = store.create()
    cli_ok(made, "mount", mounted)
    incomplete = new_id()
    children = []
    try:
        children.append(spawn_cli(made, "create", "--id", incomplete, failpoints="store.create.after-driver=sleep:60"))
        wait_for_driver_work(made, driver, incomplete)
        children.append(spawn_cli(made, "delete", deleting, failpoints="store.delete.after-mark=sleep:60"))
        wait_for(lambda: summary(events_after_on_disk(made))[-1] == ("layer-marked-incomplete", deleting),
                 what="the delete")
        children.append(spawn_python(HOLD_AND_PAUSE, str(made), held))
        assert children[-1].stdout.readline().strip() == b"held"
    finally:
        for child in children:
            child.kill()
            child.wait()
    orphan = make_orphans(made, driver)[0]
    reboot(made, monkeypatch, "boot-two")
    before = last_lsn_on_disk(made)

    with open_store(made) as store:
        assert [rec.id for rec in store.layers()] == [mounted, held]
        assert (store.lookup(mounted).mount_count, store.lookup(held).hold_refs) == (0, 0)
        events = events_after(store, before)
        assert summary(events) == [
            ("recovery-started", None),
            ("mounts-reconciled", mounted),
            ("hold-released", held),
            ("layer-deleted", deleting),
            ("layer-marked-incomplete", incomplete), ("layer-deleted", incomplete),
            ("data-moved-aside", orphan), ("data-moved-aside", events[-2].layer),
            ("recovery-finished", None),
        ]
        assert events[-1].actions == 6  # and the two orphans
        assert check(store) == []
    for gone in (incomplete, deleting):
        assert traces_of(made, gone) == []
    assert traces_of(made, orphan) == [] and in_lost_found(made, orphan)  # moved, not deleted
    assert_second_open_changes_nothing(made)
