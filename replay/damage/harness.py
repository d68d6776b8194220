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
from replay.damage.commands import OK, REFUSED, STORAGE, CommandResult, cli_argv, run_command
from replay.damage.fixture import Fixture, build, child_env
from replay.damage.workload import WRITE_LEASE, WRITE_SUBJECT
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
            result.notes.append(f"kept {workdir}: root/ (the store as the case left it), tmp/ (TMPDIR)")
        else:
            _remove(workdir)
    return result


def _release_mounts(run: CaseRun) -> None:
    """Unmount what a kept case left under its directory, but the store's own file
    system (the full-disk cases keep the store on a tmpfs: unmount that by hand)."""
    _unmount_below(run.workdir, spare=run.root)
    if os.path.realpath(run.root) in _mounts(run.workdir):
        run.notes.append(f"kept {run.root} is a tmpfs: umount it when done")


def _mounts(top: Path) -> set[str]:
    from eventstore.mounts import mount_points

    return mount_points(top)


def _unmount_below(top: Path, spare: Path) -> None:
    """Detach every mount at or below ``top`` but ``spare``, deepest first."""
    from eventstore.mounts import MNT_DETACH, umount

    keep = os.path.realpath(spare)
    for _ in range(8):  # mounts stacked on one point come off one a round
        points = sorted((p for p in _mounts(top) if p != keep), key=len, reverse=True)
        if not points:
            return
        for point in points:
            umount(point, MNT_DETACH)


def _exercise(case: Case, run: CaseRun) -> list[str]:
    """The documented commands, the remedy, and every check; the problems found."""
    problems, hold = _before_remedy(case, run)
    deleted = _remedy(case, run, problems)
    problems += _after_remedy(case, run, hold, deleted)
    problems += checks.check_conduct(run)
    problems += checks.check_leftovers(run, _mounts(run.workdir))
    # what is still mounted inside the root hides or fakes data: off before looking for it
    _unmount_below(run.root, spare=run.root)
    problems += checks.check_data(run, deleted)
    return problems


def _before_remedy(case: Case, run: CaseRun) -> tuple[list[str], CommandResult]:
    """Reads, ``check``, ``log verify``, then the write, on the damaged store; the
    problems found and the write's result."""
    before = checks.fingerprint(run.root, run.workdir / "fingerprint")
    reads = [run.cli("reads", t, before_remedy=True) for t in read_commands(case.subject)]
    problems = checks.check_truth(run, reads, case.reads == "may-refuse", case.compare_history)
    for extra in case.checks:
        problems += extra(run, "reads")
    first_check = run.cli("check", "check --content", before_remedy=True)
    if not case.heals and case.names is not None:
        problems += checks.check_named(run, first_check, case.names(run))
    run.cli("verify", "log verify", before_remedy=True)
    problems += checks.check_unchanged(before, checks.fingerprint(run.root, run.workdir / "fingerprint"))
    hold = run.cli("write", f"hold --lease {WRITE_LEASE} {{{WRITE_SUBJECT}}}", before_remedy=True)
    return problems, hold


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


def _after_remedy(case: Case, run: CaseRun, hold: CommandResult, deleted: set[str]) -> list[str]:
    """``check`` passes, the write's fate is right, the probe layer mounts."""
    problems = checks.check_remedied(run.cli("after", "check --content"))
    problems += checks.check_write(run, hold, run.cli(
        "after", f"--json history {{{WRITE_SUBJECT}}} --type hold-added --type hold-released"))
    probe = "rw" if case.probe in deleted else case.probe
    if checks.probe_usable(run.cli("after", f"--json layer {{{probe}}}")):
        mount = run.cli("after", f"mount {{{probe}}}")
        umount = run.cli("after", f"umount {{{probe}}}") if mount.exit == OK else None
        problems += checks.check_probe(mount, umount)
    for extra in case.checks:
        problems += extra(run, "after")
    return problems


def _finish(run: CaseRun) -> list[str]:
    problems = []
    for cleanup in run.cleanups:
        try:
            cleanup()
        except Exception as exc:
            problems.append(f"the harness could not clean up: {type(exc).__name__}: {exc}")
    return problems


def describe(fixture: Fixture, seconds: float) -> str:
    """The report's first line: what was built."""
    return (f"damage harness: driver {fixture.driver}, seed {fixture.seed}; {len(fixture.layers)} acknowledged "
            f"layers, {len(fixture.segments())} log segments, {len(fixture.checkpoints())} checkpoints "
            f"(built in {seconds:.0f} s)")
