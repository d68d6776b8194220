"""The crash harness on btrfs and fuse-overlayfs, CI-sized: every crash point of a
workload made of what a driver does (create with and without a parent, from tars with
whiteouts, a refused digest, mounts counted and forced down, deletes of mounted and
held layers, a reopen), once.

vfs and overlay run the whole built-in workload here (test_harness.py); the drivers'
own share of it is what this workload keeps, at half the crash points, so that
``make test`` stays within its time. ``make crash-test`` runs the whole built-in
workload on every driver, recoveries crashed too, every power-loss mode and I/O error.

btrfs runs with a power loss at each point (on a loop-mounted btrfs: the power-loss
tracker follows subvolumes, see replay/powerloss.py), fuse-overlayfs with a process
crash (its daemons outlive the crashed process, so recovery meets live FUSE mounts).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from eventstore.drivers import driver_class
from replay import crash
from replay.loopfs import ScratchUnavailable

DRIVER_WORKLOAD = """\
create base --tar small.gz --name base
create app --parent base --writable
mount app
mount app                                 # counted only
umount app
create patch --parent base --tar whiteouts
mount patch
hold patch --lease keep
delete patch --force                      # refused: held
release patch --lease keep
delete patch --force                      # unmounted first
umount app --force
create bad --parent base --tar small --diff-digest wrong   # refused: the half-made child removed
delete app
reopen
mount base
"""


def run_harness(base: Path, driver: str, **options) -> tuple[list[crash.PointResult], str]:
    config = crash.Config(driver=driver, base=base, jobs=2, workload=DRIVER_WORKLOAD,
                          workload_name="tests/crash/test_harness_new_drivers.py:DRIVER_WORKLOAD", **options)
    out = io.StringIO()
    return crash.flatten(crash.run(config, out=out)), out.getvalue()


def violations(results: list[crash.PointResult]) -> list[str]:
    return [f"{r.position} {r.failpoint}: {'; '.join(r.problems)}" for r in results if r.outcome == "violation"]


def test_every_crash_point_of_the_driver_workload_power_loss_btrfs():
    try:
        scratch = crash.scratch_space(kind="btrfs")
        base = scratch.__enter__()
    except ScratchUnavailable as exc:
        pytest.skip(f"no loop-mounted btrfs: {exc}")
    try:
        if reason := driver_class("btrfs").supported(base / "btrfs"):
            pytest.skip(reason)
        results, report = run_harness(base, "btrfs", power_loss=True, recovery_crashes=0)
    finally:
        scratch.__exit__(None, None, None)
    assert not violations(results), report
    assert len(results) > 120
    assert {r.mode for r in results} == {"drop", "random", "torn"}
    assert {"driver.btrfs.create.after-subvolume", "driver.btrfs.remove.before-destroy",
            "driver.btrfs.remove.after-destroy", "store.create.after-import"} <= {r.failpoint for r in results}
    assert report.splitlines()[-1] == f"{len(results)} crash points, 0 violations"


def test_every_crash_point_of_the_driver_workload_process_crash_fuse_overlayfs():
    with crash.scratch_space() as base:
        if reason := driver_class("fuse-overlayfs").supported(base / "overlay"):
            pytest.skip(reason)
        results, report = run_harness(base, "fuse-overlayfs", recovery_crashes=0)
    assert not violations(results), report
    top = [r for r in results if "/" not in r.position]
    assert len(top) > 120 and {r.outcome for r in top} >= {"undone", "done"}
    assert {"driver.fuse-overlayfs.mount", "driver.fuse-overlayfs.unmount", "driver.overlay.create.half-done",
            "driver.overlay.remove.before-rmtree"} <= {r.failpoint for r in results}
