"""applydiff killed at every step, on every driver: the next open rolls it back (before
the swap) or forward (after it). Never a mix, never a busy layer left behind, and the
store checks out."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventstore import errors
from eventstore.faults import CRASH_EXIT_CODE
from eventstore.opener import open_store
from eventstore.store import LayerStore
from replay.audit import history
from replay.verify import check
from tests.store.support import unmount_everything_under

from .support import DRIVERS, base_tar, change_tar, skip_unless_driver_runs, view

REPO = Path(__file__).resolve().parents[2]
BEFORE_SWAP = ["applydiff.after-intent", "applydiff.after-stage", "applydiff.before-swap"]


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


def applydiff_child(root: Path, driver: str, layer: str, tar: Path, failpoint: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERSTORE_FAILPOINTS": failpoint}
    return subprocess.Popen([sys.executable, "-m", "eventstore.cli", "--root", str(root), "--driver", driver,
                             "applydiff", layer, str(tar)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **popen)


def seen(store, layer: str) -> dict:
    root = Path(store.mount(layer))
    try:
        return view(root)
    finally:
        store.umount(layer)


def expected_views(tmp_path: Path, driver: str) -> tuple[dict, dict]:
    """What a layer shows with base_tar applied, and with change_tar on top."""
    with open_store(tmp_path / "reference", driver) as store:
        layer = store.create(writable=True)
        store.apply_diff(layer, io.BytesIO(base_tar()))
        before = seen(store, layer)
        store.apply_diff(layer, io.BytesIO(change_tar()))
        return before, seen(store, layer)


def nothing_left(store, layer: str) -> None:
    assert not store.driver.staging_path(layer).exists()
    assert not any((store.root / "applying").glob(f"{layer}.*"))
    assert store.lookup(layer).applying is None
    assert check(store) == []


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("failpoint", [*BEFORE_SWAP, "applydiff.after-swap"])
def test_a_killed_applydiff_is_rolled_back_or_forward(tmp_path: Path, driver: str, failpoint: str):
    skip_unless_driver_runs(driver)
    before, after = expected_views(tmp_path, driver)
    root = tmp_path / "store"
    with open_store(root, driver) as store:
        layer = store.create(writable=True)
        store.apply_diff(layer, io.BytesIO(base_tar()))
        tar_before = b"".join(store.diff(layer))
    (tmp_path / "change.tar").write_bytes(change_tar())
    assert applydiff_child(root, driver, layer, tmp_path / "change.tar", f"{failpoint}=crash").wait(60) \
        == CRASH_EXIT_CODE
    with LayerStore.open(root, driver) as store:  # no recovery yet: the layer is busy
        assert store.lookup(layer).applying is not None
        with pytest.raises(errors.LayerInUse, match="diff is being applied"):
            store.mount(layer)
    with open_store(root, driver) as store:
        events = [e.type for e in history(store, layer)]
        if failpoint in BEFORE_SWAP:
            assert events[-1] == "diff-apply-abandoned"
            assert seen(store, layer) == before
            assert b"".join(store.diff(layer)) == tar_before  # still the tar it was, byte for byte
        else:
            assert events[-1] == "diff-applied"
            assert seen(store, layer) == after
            assert not store.lookup(layer).has_tarsplit
        nothing_left(store, layer)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_fresh_layer_killed_after_the_swap_becomes_exactly_the_tar(tmp_path: Path, driver: str):
    skip_unless_driver_runs(driver)
    root = tmp_path / "store"
    with open_store(root, driver) as store:
        layer = store.create(writable=True)
    (tmp_path / "base.tar").write_bytes(base_tar())
    assert applydiff_child(root, driver, layer, tmp_path / "base.tar", "applydiff.after-swap=crash").wait(60) \
        == CRASH_EXIT_CODE
    with open_store(root, driver) as store:
        rec = store.lookup(layer)
        assert rec.has_tarsplit and rec.diff_size == len(base_tar())
        assert b"".join(store.diff(layer)) == base_tar()
        nothing_left(store, layer)


@pytest.mark.parametrize("driver", DRIVERS)
def test_recovery_killed_while_finishing_an_apply_is_finished_by_the_next_open(tmp_path: Path, driver: str):
    skip_unless_driver_runs(driver)
    root = tmp_path / "store"
    with open_store(root, driver) as store:
        layer = store.create(writable=True)
    (tmp_path / "base.tar").write_bytes(base_tar())
    assert applydiff_child(root, driver, layer, tmp_path / "base.tar", "applydiff.after-swap=crash").wait(60) \
        == CRASH_EXIT_CODE
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERSTORE_FAILPOINTS": "recovery.before-apply=crash"}
    recovering = subprocess.run([sys.executable, "-m", "eventstore.cli", "--root", str(root), "recover"],
                                env=env, capture_output=True, timeout=60)
    assert recovering.returncode == CRASH_EXIT_CODE
    with open_store(root, driver) as store:
        assert [e.type for e in history(store, layer)].count("diff-applied") == 1
        assert b"".join(store.diff(layer)) == base_tar()
        nothing_left(store, layer)


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_apply_whose_process_lives_is_left_alone(tmp_path: Path, driver: str):
    skip_unless_driver_runs(driver)
    root = tmp_path / "store"
    with open_store(root, driver) as store:
        layer = store.create(writable=True)
    (tmp_path / "base.tar").write_bytes(base_tar())
    child = applydiff_child(root, driver, layer, tmp_path / "base.tar", "applydiff.after-stage=sleep:60",
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with LayerStore.open(root, driver, readonly=True) as store:
                if store.lookup(layer).applying is not None and store.driver.staging_path(layer).exists():
                    break
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        with open_store(root, driver) as store:  # recovery runs: the applier lives
            assert store.lookup(layer).applying is not None and store.driver.staging_path(layer).exists()
            with pytest.raises(errors.LayerInUse):
                store.delete(layer)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
    with open_store(root, driver) as store:
        assert [e.type for e in history(store, layer)][-1] == "diff-apply-abandoned"
        nothing_left(store, layer)
