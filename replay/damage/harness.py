"""Running the damage matrix: for each case, a fresh copy of the built store, the
damage, the documented commands through the real CLI, the remedy, and the checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from replay.damage import checks
from replay.damage.bytes import Skip
from replay.damage.caserun import CaseRun
from replay.damage.commands import OK, REFUSED, STORAGE, cli_argv, run_command
from replay.damage.fixture import WRITE_LEASE, WRITE_SUBJECT, Fixture, build, child_env
from replay.damage.matrix import Case
from replay.damage.report import CaseResult

DEFAULT_SEGMENT_SIZE = 2048  # small: the workload fills several segments
DEFAULT_CHECKPOINT_INTERVAL = 16  # small: automatic checkpoints happen in the workload


@dataclass
class Config:
    driver: str
    base: Path
    driver_modules: list[str] = field(default_factory=list)
    seed: int = 1
    segment_size: int = DEFAULT_SEGMENT_SIZE
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL
    only: list[str] | None = None
    keep: bool = False
    jobs: int = 1


def read_commands(subject: str) -> list[str]:
    """The reads every case runs before the remedy, about layer ``subject``."""
    return ["layers", f"--json layer {{{subject}}}", f"exists {{{subject}}}", f"refs {{{subject}}}", "history"]


# --- building ----------------------------------------------------------------------------------------

def prepare(config: Config, cases: list[Case]) -> Fixture:
    """Build the store and learn the undamaged store's answer to every read a case asks."""
    fixture = Fixture(config.driver, list(config.driver_modules), config.seed, config.segment_size,
                      config.checkpoint_interval, config.base / "fixture")
    build(fixture)
    baseline = config.base / "baseline"
    _copy_store(fixture.pristine, baseline)
    subjects = {c.subject for c in cases} | {WRITE_SUBJECT}
    templates = dict.fromkeys(t for s in subjects for t in [*read_commands(s), f"refs {{{WRITE_SUBJECT}}}"])
    run = CaseRun(fixture, baseline.parent, baseline)
    for template in templates:
        args = run.words(template)
        done = run_command(cli_argv(fixture.driver, fixture.driver_modules, baseline, args), child_env(), "truth", args)
        if done.exit != OK:
            raise RuntimeError(f"the undamaged store fails 'layerstore {' '.join(args)}' "
                               f"(exit {done.exit}): {done.stderr.strip()}")
        fixture.truth[" ".join(args)] = (done.exit, done.stdout)
    _remove(baseline)
    return fixture


def _copy_store(source: Path, target: Path) -> None:
    # cp -a keeps what a layer holds: owners, modes, xattrs, overlay's whiteout devices
    subprocess.run(["cp", "-a", "--", str(source), str(target)], check=True)


def _remove(path: Path) -> None:
    from eventstore.mounts import detach_all

    if path.exists():
        detach_all(path)
        shutil.rmtree(path, ignore_errors=True)


# --- one case ------------------------------------------------------------------------------------------

def run_case(config: Config, fixture: Fixture, case: Case) -> CaseResult:
    """Copy, damage, commands, remedy, checks; the case's result."""
    started = time.monotonic()
    workdir = config.base / case.name.replace("/", "--")
    _remove(workdir)
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)  # user nobody must reach the root
    run = CaseRun(fixture, workdir, workdir / "root")
    run.tmpdir.mkdir()
    _copy_store(fixture.pristine, run.root)
    result = CaseResult(case.name, case.target)
    try:
        try:
            result.damage = case.damage(run)
        except Skip as exc:
            result.outcome, result.notes = "skipped", [str(exc)]
            return result
        result.problems = _exercise(case, run)
        result.notes = run.notes
    except Exception as exc:  # the harness itself failed on this case: say so, go on
        result.problems.append(f"the harness failed: {type(exc).__name__}: {exc}")
    finally:
        result.problems += _finish(run)
        result.commands = run.results
        result.outcome = result.outcome or ("violation" if result.problems else "ok")
        result.seconds = time.monotonic() - started
        if config.keep and (result.problems or config.only):
            _release_mounts(run)
        else:
            _remove(workdir)
    return result


def _release_mounts(run: CaseRun) -> None:
    """Unmount what the case left under its directory, but the store's own file
    system (the full-disk cases keep the store on a tmpfs: unmount that by hand)."""
    from eventstore.mounts import MNT_DETACH, mount_points, umount

    root = os.path.realpath(run.root)
    for point in sorted(mount_points(run.workdir) - {root}, key=len, reverse=True):
        umount(point, MNT_DETACH)
    if root in mount_points(run.workdir):
        run.notes.append(f"kept {run.root} is a tmpfs: umount it when done")


def _exercise(case: Case, run: CaseRun) -> list[str]:
    problems: list[str] = []
    reads = [run.cli("reads", t, before_remedy=True) for t in read_commands(case.subject)]
    problems += checks.check_truth(run, reads, case.reads == "may-refuse", case.compare_history)
    for extra in case.checks:
        problems += extra(run, "reads")
    first_check = run.cli("check", "check --content", before_remedy=True)
    if not case.heals and case.names is not None:
        problems += checks.check_named(run, first_check, case.names(run))
    run.cli("verify", "log verify", before_remedy=True)
    hold = run.cli("write", f"hold --lease {WRITE_LEASE} {{{WRITE_SUBJECT}}}", before_remedy=True)
    deleted = _remedy(case, run, problems)
    problems += checks.check_remedied(run.cli("after", "check --content"))
    problems += checks.check_write(run, hold, run.cli("after", f"refs {{{WRITE_SUBJECT}}}"))
    probe = "rw" if case.probe in deleted else case.probe
    if checks.probe_usable(run.cli("after", f"--json layer {{{probe}}}")):
        mount = run.cli("after", f"mount {{{probe}}}")
        umount = run.cli("after", f"umount {{{probe}}}") if mount.exit == OK else None
        problems += checks.check_probe(mount, umount)
    for extra in case.checks:
        problems += extra(run, "after")
    problems += checks.check_conduct(run)
    return _leftovers_and_data(run, deleted, problems)


def _remedy(case: Case, run: CaseRun, problems: list[str]) -> set[str]:
    """Run the documented remedy; the aliases it deleted on purpose."""
    deleted: set[str] = set()
    for step in case.remedy:
        if step == "undo":
            for undo in run.undo:
                undo()
            continue
        done = run.cli("remedy", step)
        if done.exit == OK and done.command == "delete":
            deleted |= {alias for alias, layer in run.fixture.layers.items() if layer.id in done.args}
        elif done.exit != OK and not (case.remedy_may_refuse and done.exit in (REFUSED, STORAGE)):
            problems.append(f"the remedy fails: {done.shown()} exits {done.exit}: {done.error()}")
    return deleted


def _leftovers_and_data(run: CaseRun, deleted: set[str], problems: list[str]) -> list[str]:
    from eventstore.mounts import MNT_DETACH, mount_points, umount

    problems += checks.check_leftovers(run, mount_points(run.workdir))
    # what is mounted inside the root now hides or fakes data: off before looking for it
    root = os.path.realpath(run.root)
    for _ in range(8):
        inside = sorted((p for p in mount_points(run.root) if p != root), key=len, reverse=True)
        if not inside:
            break
        for point in inside:
            umount(point, MNT_DETACH)
    problems += checks.check_data(run, deleted)
    return problems


def _finish(run: CaseRun) -> list[str]:
    problems = []
    for cleanup in run.cleanups:
        try:
            cleanup()
        except Exception as exc:
            problems.append(f"the harness could not clean up: {type(exc).__name__}: {exc}")
    return problems


def describe_fixture(fixture: Fixture, seconds: float) -> str:
    return (f"store: {len(fixture.layers)} acknowledged layers, {len(fixture.segments())} log segments, "
            f"{len(fixture.checkpoints())} checkpoints, driver {fixture.driver}, seed {fixture.seed} "
            f"(built in {seconds:.0f} s)")
