"""A delete that began (the layer is marked) and did not finish: the next open finishes
it, whether the crash came before or after the driver removed the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.opener import open_store
from replay.verify import check

from .support import crash_at, driver_dir, events_after, last_lsn_on_disk, summary, traces_of


@pytest.mark.parametrize("failpoint", ["store.delete.after-mark", "store.delete.after-remove"])
@pytest.mark.parametrize("mounted", [False, True], ids=["unmounted", "forced-while-mounted"])
def test_delete_killed_half_way_is_finished(made: Path, driver: str, failpoint: str, mounted: bool):
    with open_store(made) as store:
        victim = store.create(names=["victim"])
        bystander = store.create(names=["bystander"])
        if mounted:
            store.mount(victim)
    crash_at(failpoint, made, "delete", *(["--force"] if mounted else []), victim)
    assert driver_dir(made, driver, victim).is_dir() == (failpoint == "store.delete.after-mark")
    before = last_lsn_on_disk(made)

    with open_store(made) as store:
        assert not store.exists(victim) and not store.exists("victim")
        assert store.lookup("bystander").id == bystander
        events = events_after(store, before)
        # already marked by the delete: recovery only finishes it
        assert summary(events) == [("recovery-started", None), ("layer-deleted", victim), ("recovery-finished", None)]
        assert check(store) == []
        store.create(names=["victim"])  # the name is free again
    assert traces_of(made, victim) == []
    assert driver_dir(made, driver, bystander).is_dir()
