"""The crash harness: every crash point of the built-in workload once (the CI-sized run),
and proof that it finds planted bugs in a user's driver.

``make crash-test`` runs the long version (every recovery crash point, every power-loss
mode, both drivers, more seeds).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from replay import crash
from replay.workload import builtin_workload

USER_DRIVERS = "tests.crash.userdrivers"


@pytest.fixture(scope="module")
def scratch():
    with crash.scratch_space() as base:
        yield base


def harness(scratch: Path, name: str, driver: str, **options) -> tuple[list[crash.PointResult], str]:
    base = scratch / name
    base.mkdir()
    options.setdefault("workload", builtin_workload())
    config = crash.Config(driver=driver, base=base, jobs=2, **options)
    out = io.StringIO()
    results = crash.run(config, out=out)
    return crash.flatten(results), out.getvalue()


def violations(results: list[crash.PointResult]) -> list[str]:
    return [f"{r.position} {r.failpoint}: {'; '.join(r.problems)}" for r in results if r.outcome == "violation"]


def overlay_unsupported() -> str | None:
    import tempfile

    from eventstore.drivers.overlay import OverlayDriver

    with tempfile.TemporaryDirectory() as tmp:
        return OverlayDriver.supported(Path(tmp) / "overlay")


def test_every_crash_point_of_the_builtin_workload_process_crash_vfs(scratch: Path):
    """Every failpoint the workload passes, crashed once; a fifth of the recoveries crashed
    too. The store runs its whole lifecycle (docs/lifecycle.md): its small segments are
    sealed, archived and, past a tiny retention, dropped — each step crashed as well."""
    results, report = harness(scratch, "vfs-crash", "vfs", recovery_crashes=1, recovery_sample=0.2,
                              history_retention="30")
    assert not violations(results), report
    crashed_at = {r.failpoint for r in results}
    assert {"log.seal.after-event", "log.archive.before-unlink", "log.retention.after-event",
            "log.retention.before-drop"} <= crashed_at, sorted(crashed_at)
    top = [r for r in results if "/" not in r.position]
    assert len(top) > 250 and {r.outcome for r in top} >= {"undone", "done"}
    assert any("/" in r.position for r in results)  # some recoveries were crashed as well
    assert report.splitlines()[-1] == f"{len(results)} crash points, 0 violations"


def test_every_crash_point_of_the_builtin_workload_power_loss_overlay(scratch: Path):
    """Every failpoint once, with a power loss (drop, random or torn, by the seed) there."""
    if reason := overlay_unsupported():
        pytest.skip(reason)
    results, report = harness(scratch, "overlay-power", "overlay", power_loss=True, recovery_crashes=0)
    assert not violations(results), report
    assert len(results) > 250
    assert {r.mode for r in results} == {"drop", "random", "torn"}


def test_every_crash_point_of_the_builtin_workload_injected_eio_vfs(scratch: Path):
    """Every failpoint fails once with EIO instead; the workload stops there (or the store
    absorbs the error and every later result is still the model's)."""
    results, report = harness(scratch, "vfs-eio", "vfs", fault="eio", recovery_crashes=0)
    assert not violations(results), report
    assert len(results) > 250


SMALL = """\
create base --name base
create app --parent base
hold app --lease keep
mount app
delete base
"""


def test_a_users_driver_is_crashed_at_its_own_failpoints(scratch: Path):
    results, report = harness(scratch, "mydriver", "mydriver", workload=SMALL + "release app --lease keep\n"
                              "umount app\ndelete app\n", driver_modules=[f"{USER_DRIVERS}:MyDriver"],
                              recovery_crashes=0)
    assert not violations(results), report
    assert {"mydriver.create.after-mkdir", "mydriver.remove.half-done"} <= {r.failpoint for r in results}


def test_a_driver_that_leaks_data_is_caught(scratch: Path):
    results, report = harness(scratch, "leaky", "leaky", workload=SMALL,
                              driver_modules=[f"{USER_DRIVERS}:LeakyDriver"], recovery_crashes=0)
    found = violations(results)
    assert found and all("orphan driver data" in v for v in found), report
    assert "reproduce: python -m replay.crash --driver leaky" in report
    assert report.splitlines()[-1].endswith(f"{len(found)} violations")


def test_a_driver_that_never_syncs_is_caught_by_a_power_loss(scratch: Path):
    results, report = harness(scratch, "nosync", "nosync", workload="create base\ncreate app --parent base\n",
                              driver_modules=[f"{USER_DRIVERS}:NoSyncDriver"], power_loss=True,
                              power_mode="drop", recovery_crashes=0)
    found = violations(results)
    assert any("driver data missing" in v for v in found), report
    # the same driver survives process crashes: only a power loss shows the missing sync
    results, report = harness(scratch, "nosync-crash", "nosync", workload="create base\ncreate app --parent base\n",
                              driver_modules=[f"{USER_DRIVERS}:NoSyncDriver"], recovery_crashes=0)
    assert not violations(results), report


def test_a_workload_that_fails_without_a_crash_is_refused(scratch: Path):
    base = scratch / "bad-workload"
    base.mkdir()
    config = crash.Config(driver="vfs", base=base, workload="create a\nfrobnicate a\n")
    with pytest.raises(crash.HarnessError, match="line 2: unknown operation 'frobnicate'"):
        crash.run(config, out=io.StringIO())


def test_only_runs_the_named_points_and_the_command_line_works(scratch: Path, capsys):
    code = crash.main(["--driver", "vfs", "--root", str(scratch / "cli"), "--only", "3", "--only", "20/0",
                       "--workload", str(_write(scratch / "w.txt", SMALL))])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1] == "3 crash points, 0 violations"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
