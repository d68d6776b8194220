"""The damage harness: a CI-sized part of its matrix on vfs and overlay, and proof that
it catches drivers with planted bugs.

``make damage-test`` runs the whole matrix on both drivers. The cases issue #11 is
fixing are marked ``xfail`` (not strict) below: they fail on the store as it is, and
are turned on, one by one, as the fixes land.
"""

from __future__ import annotations

import io
import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from replay.crash import scratch_space
from replay.damage import Config, main, run

USER_DRIVERS = "tests.damage.userdrivers"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the damage harness needs root (mounts, user nobody)")

CI_CASES = {
    "vfs": ["none", "segment-first/flip-payload", "segment-middle/delete", "segment-last/delete",
            "index/diverged", "index/damaged-pages", "driver/file-added", "stray/tarsplit-dir",
            "stray/orphan-layer-dir", "env/read-only", "env/disk-nearly-full", "env/zombie-creator",
            "env/mount-inside-layer", "archive/flip", "archive/truncate"],
    "overlay": ["none", "overlay/links-removed", "overlay/merged-removed", "env/leaked-mount", "env/other-user",
                "index/delete", "segment-last/truncate-at-record", "tarsplit/foreign", "env/mount-on-mount-point",
                "archive/delete"],
    "fuse-overlayfs": ["none", "overlay/merged-removed", "env/leaked-mount", "env/mount-inside-layer",
                       "stray/orphan-layer-dir"],
    "btrfs": ["none", "driver/file-added", "stray/orphan-layer-dir", "env/mount-inside-layer",
              "segment-middle/flip-payload"],
}

#: (driver, case) -> why it fails on the store as it is (issue #11's numbered items)
# cases known to fail, with the reason (none since the integrity work of issue 11 landed;
# a driver of yours may list its own)
KNOWN_FAILING: dict[tuple[str, str], str] = {}


def unsupported(driver: str, where: Path | None = None) -> str | None:
    import tempfile

    from eventstore.drivers import driver_class

    with tempfile.TemporaryDirectory(dir=where) as tmp:
        return driver_class(driver).supported(Path(tmp) / driver)


@pytest.fixture(scope="module")
def scratch():
    with scratch_space() as base:
        base.chmod(0o755)  # user nobody must reach the copies
        yield base


@pytest.fixture(scope="module")
def ci_results(scratch: Path):
    """The CI cases of each driver, run once (on first use) with two workers."""
    done: dict[str, tuple[dict, str]] = {}

    def results_for(driver: str):
        if driver not in done:
            with ExitStack() as stack:
                base = scratch / f"ci-{driver}"
                if driver == "btrfs":  # btrfs needs a btrfs filesystem: a loop-mounted one
                    from replay.loopfs import ScratchUnavailable, loop_btrfs

                    try:
                        base = stack.enter_context(loop_btrfs("2g")) / "ci"
                    except (ScratchUnavailable, OSError, subprocess.CalledProcessError) as exc:
                        pytest.skip(f"no loop btrfs: {exc}")
                base.mkdir()
                if reason := unsupported(driver, base):
                    pytest.skip(reason)
                out = io.StringIO()
                found = run(Config(driver, base, only=CI_CASES[driver], jobs=2), out=out)
                done[driver] = ({r.name: r for r in found}, out.getvalue())
        return done[driver]
    return results_for


PARAMS = [pytest.param(driver, case, id=f"{driver}:{case}",
                       marks=[pytest.mark.xfail(strict=False, reason=KNOWN_FAILING[driver, case])]
                       if (driver, case) in KNOWN_FAILING else [])
          for driver, cases in CI_CASES.items() for case in cases]


@pytest.mark.parametrize("driver, case", PARAMS)
def test_damage_case(ci_results, driver: str, case: str):
    results, report = ci_results(driver)
    result = results[case]
    assert result.outcome == "ok", f"{case}: {result.damage}\n  " + "\n  ".join(result.problems)


def test_the_report_counts_every_case(ci_results):
    results, report = ci_results("vfs")
    violations = sum(1 for r in results.values() if r.outcome == "violation")
    assert report.splitlines()[-1] == f"{len(CI_CASES['vfs'])} damage cases, {violations} violations"
    assert report.splitlines()[1].split()[:2] == ["damage", "case"]


# --- planted bugs: the harness must fail ----------------------------------------------------------

def _harness(scratch: Path, name: str, driver: str, cases: list[str]):
    base = scratch / name
    base.mkdir()
    out = io.StringIO()
    config = Config(driver, base, driver_modules=[f"{USER_DRIVERS}:{driver.capitalize()}Driver"], only=cases)
    return {r.name: r for r in run(config, out=out)}, out.getvalue()


def test_a_driver_that_deletes_a_parents_data_is_caught(scratch: Path):
    """Deleting a damaged layer (the remedy) also deletes its parent's data: invariant (a)."""
    results, report = _harness(scratch, "greedy", "greedy", ["driver/bytes-changed"])
    problems = results["driver/bytes-changed"].problems
    assert any(p.startswith("acknowledged layer app") and "data is gone" in p for p in problems), report
    assert ("reproduce: python -m replay.damage --driver greedy --only driver/bytes-changed "
            f"--driver-module {USER_DRIVERS}:GreedyDriver --keep") in report
    assert report.splitlines()[-1] == "1 damage cases, 1 violations"


def test_a_driver_whose_error_reaches_the_user_as_a_traceback_is_caught(scratch: Path):
    """The remedy (deleting the damaged layer) shows the driver's KeyError as a
    traceback: invariant (b), and the remedy fails."""
    results, report = _harness(scratch, "brittle", "brittle", ["driver/bytes-changed"])
    problems = results["driver/bytes-changed"].problems
    assert any(p.startswith("[remedy] layerstore delete --force") and "Python traceback: KeyError" in p
               for p in problems), report
    assert any(p.startswith("the remedy fails") for p in problems), report


def test_the_command_line_runs_one_case_and_lists_the_matrix(scratch: Path, capsys):
    assert main(["--driver", "vfs", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "segment-middle/stale" in listing and "overlay/links-removed" not in listing
    code = main(["--driver", "vfs", "--root", str(scratch / "cli"), "--only", "tarsplit/delete"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1] == "1 damage cases, 0 violations"
    assert not any((scratch / "cli").glob("tarsplit--delete"))  # its copy is removed
    assert main(["--driver", "vfs", "--only", "no/such-case"]) == 2
