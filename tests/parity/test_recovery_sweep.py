"""What the new operations may leave behind, and what recovery does with it: layer data
no event names goes to lost+found (never deleted); records of applies that are over
are removed; an apply that fails in its own process rolls back at once; an apply record
damaged by someone else quarantines the layer and destroys nothing."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from eventstore import errors, faults
from eventstore.opener import open_store
from eventstore.recovery import recover_store
from replay.audit import history
from tests.store.support import unmount_everything_under

from .support import DRIVERS, base_tar, change_tar, skip_unless_driver_runs


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)
    faults.disarm()


@pytest.fixture(params=DRIVERS)
def store(request, tmp_path: Path):
    skip_unless_driver_runs(request.param)
    store = open_store(tmp_path / "store", request.param)
    yield store
    store.close()


def lost_found(store) -> list[str]:
    directory = store.root / "lost+found"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def test_layer_data_no_event_names_goes_to_lost_and_found(store):
    layer = store.create()
    store.set_layer_data(layer, "kept", b"kept")
    stray_blob = store.root / "layer-data" / layer / ("0" * 64)
    stray_blob.write_bytes(b"a blob whose event never came")
    stray_dir = store.root / "layer-data" / ("f" * 64)
    stray_dir.mkdir()
    (stray_dir / "x").write_bytes(b"of a layer the log does not have")
    actions = recover_store(store, sweep=True)
    assert sum("moved layer data" in a for a in actions) == 2
    names = lost_found(store)
    assert len(names) == 2 and all("layer-data" in n for n in names)
    assert store.layer_data(layer, "kept") == b"kept"  # what an event names stays
    assert not stray_blob.exists() and not stray_dir.exists()
    assert [e.type for e in history(store)].count("data-moved-aside") == 2


def test_a_finished_applys_leftover_record_is_removed(store):
    layer = store.create(writable=True)
    store.apply_diff(layer, io.BytesIO(base_tar()))
    leftover = store.root / "applying" / f"{layer}.json"
    leftover.write_text(json.dumps({"inode": [0, 0], "fresh": True, "result": {}}))  # a crash before its unlink
    actions = recover_store(store, sweep=True)
    assert any(f"applying/{layer}.json" in a for a in actions)
    assert not leftover.exists()


def test_an_apply_failing_in_its_own_process_rolls_back_at_once(store):
    layer = store.create(writable=True)
    store.apply_diff(layer, io.BytesIO(base_tar()))
    before = b"".join(store.diff(layer))
    faults.arm("applydiff.after-stage", "enospc")
    with pytest.raises(OSError):
        store.apply_diff(layer, io.BytesIO(change_tar()))
    faults.disarm()
    rec = store.lookup(layer)
    assert rec.applying is None and b"".join(store.diff(layer)) == before
    assert [e.type for e in history(store, layer)][-1] == "diff-apply-abandoned"
    assert not store.driver.staging_path(layer).exists()


def test_a_damaged_apply_record_quarantines_the_layer_and_keeps_both_copies(store, tmp_path: Path):
    layer = store.create(writable=True)
    store.apply_diff(layer, io.BytesIO(base_tar()))
    driver = store.driver_name
    store.close()
    import subprocess
    import sys

    from eventstore.faults import CRASH_EXIT_CODE
    from tests.cli.support import REPO

    (tmp_path / "change.tar").write_bytes(change_tar())
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERSTORE_FAILPOINTS": "applydiff.before-swap=crash"}
    done = subprocess.run([sys.executable, "-m", "eventstore.cli", "--root", str(tmp_path / "store"), "applydiff",
                           layer, str(tmp_path / "change.tar")], env=env, capture_output=True, timeout=60)
    assert done.returncode == CRASH_EXIT_CODE
    record = tmp_path / "store" / "applying" / f"{layer}.json"
    record.write_bytes(b"{damaged")
    with open_store(tmp_path / "store", driver) as reopened:
        rec = reopened.lookup(layer)
        assert rec.quarantined and "damaged" in rec.quarantined
        assert reopened.driver.staging_path(layer).is_dir() and reopened.driver.diff_path(layer).is_dir()
        with pytest.raises(errors.LayerQuarantined):
            reopened.mount(layer)
        events = len(list(history(reopened)))
    with open_store(tmp_path / "store", driver) as reopened:  # waits for the operator: nothing recorded
        assert len(list(history(reopened))) == events
        reopened.delete(layer)  # the operator's way out: both copies go with the layer
        assert not reopened.driver.staging_path(layer).exists() and not reopened.driver.exists(layer)


def test_set_layer_data_killed_after_its_blob_leaves_no_item_and_a_swept_blob(store, tmp_path: Path):
    import subprocess
    import sys

    from eventstore.faults import CRASH_EXIT_CODE
    from tests.cli.support import REPO

    layer = store.create()
    store.close()
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERSTORE_FAILPOINTS": "layerdata.after-blob=crash"}
    done = subprocess.run([sys.executable, "-m", "eventstore.cli", "--root", str(tmp_path / "store"),
                           "set-layer-data", layer, "k", "-"], input=b"never acknowledged", env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == CRASH_EXIT_CODE
    with open_store(tmp_path / "store") as reopened:
        assert reopened.list_layer_data(layer) == {}
        actions = recover_store(reopened, sweep=True)
        assert any("moved layer data" in a for a in actions)
        assert len(lost_found(reopened)) == 1 and not os.listdir(reopened.root / "layer-data" / layer)
