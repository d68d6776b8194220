"""The crash harness on btrfs and fuse-overlayfs: every crash point of the built-in
workload once (the CI-sized run, as vfs and overlay have in test_harness.py).

btrfs runs with a power loss at each point (on a loop-mounted btrfs: the power-loss
tracker follows subvolumes, see replay/powerloss.py), fuse-overlayfs with a process
crash (its daemons outlive the crashed process, so recovery meets live FUSE mounts).
``make crash-test`` runs the long version for every driver.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from eventstore.drivers import driver_class
from replay import crash
from replay.loopfs import ScratchUnavailable
from replay.workload import builtin_workload


def run_harness(base: Path, driver: str, **options) -> tuple[list[crash.PointResult], str]:
    config = crash.Config(driver=driver, base=base, jobs=2, workload=builtin_workload(), **options)
    out = io.StringIO()
    return crash.flatten(crash.run(config, out=out)), out.getvalue()


def violations(results: list[crash.PointResult]) -> list[str]:
    return [f"{r.position} {r.failpoint}: {'; '.join(r.problems)}" for r in results if r.outcome == "violation"]


def test_every_crash_point_of_the_builtin_workload_power_loss_btrfs():
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
    assert len(results) > 250
    assert {r.mode for r in results} == {"drop", "random", "torn"}
    assert {"driver.btrfs.create.after-subvolume", "driver.btrfs.remove.before-destroy"} <= {
        r.failpoint for r in results}
    assert report.splitlines()[-1] == f"{len(results)} crash points, 0 violations"


def test_every_crash_point_of_the_builtin_workload_process_crash_fuse_overlayfs():
    with crash.scratch_space() as base:
        if reason := driver_class("fuse-overlayfs").supported(base / "overlay"):
            pytest.skip(reason)
        results, report = run_harness(base, "fuse-overlayfs", recovery_crashes=0)
    assert not violations(results), report
    top = [r for r in results if "/" not in r.position]
    assert len(top) > 250 and {r.outcome for r in top} >= {"undone", "done"}
    assert {"driver.fuse-overlayfs.mount", "driver.fuse-overlayfs.unmount"} <= {r.failpoint for r in results}
