"""The crash harness: run a workload, crash it at every failpoint it passes, and check
what recovery makes of each crash (``python -m replay.crash --driver NAME``).

1. Learn: run the workload once in a child process (``replay.workload``) against a
   fresh root, with ``LAYERSTORE_FAILPOINT_TRACE``: the sequence of failpoints it
   passes, and the result of every operation (which must be the model's).
2. For every position k of that sequence: a fresh root, the workload again, crashed
   at k (``LAYERSTORE_FAILPOINTS=NAME=crash@N``: ``os._exit`` on the spot; with
   ``--power-loss``, ``replay.powerloss`` first rewrites the root to what was synced).
3. Recover: open the store, in the harness's own process (the crashed one is dead;
   after a power loss, in a new "boot"), tracing the failpoints recovery passes.
   Optionally crash that recovery too (in a child), at points of its own sequence,
   each from a fresh crash at k, and recover again.
4. Check, in the harness's process:
   - every operation acknowledged before the crash is there, and the one in flight
     either happened or did not: the store equals the reference model (``replay.model``)
     after the acknowledged steps, or after the step in flight, as a crash leaves it
     (holds of the dead process released; after a power loss, no mount);
   - no incomplete or quarantined layer is visible;
   - no driver data and no tar-split that no layer accounts for;
   - no mount counted that the kernel does not have;
   - the read models equal the fold of the log (``replay.verify.check``), and every
     complete layer made from a tar regenerates its diff digest;
   - no acknowledged event is missing from the log;
   - a second and a third open change nothing (same log, same read models).

Prints a table (failpoint × outcome), every violation with the command that
reproduces it, and last ``N crash points, V violations``; exits 1 on a violation.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eventstore.faults import CRASH_EXIT_CODE
from replay.invariants import check_recovered, expected_outcomes
from replay.report import PointResult, flatten, report
from replay.workload import (OPEN_STEP, Step, WorkloadError, builtin_workload, load_driver_modules,
                             parse, read_acks)

REPO = Path(__file__).resolve().parent.parent
POWER_MODES = ("drop", "random", "torn")
DEFAULT_SEGMENT_SIZE = 4096  # small: the workloads cross segment boundaries
DEFAULT_CHECKPOINT_INTERVAL = 16  # small: automatic checkpoints happen mid-workload
CHILD_TIMEOUT = 120


SCRATCH_KINDS = ("tmpfs", "disk", "btrfs")


def scratch_kind_for(driver: str) -> str:
    """Where a driver's crash roots go by default: btrfs needs a btrfs, the rest a tmpfs."""
    return "btrfs" if driver == "btrfs" else "tmpfs"


@contextmanager
def scratch_space(use_tmpfs: bool = True, size: str = "2g", kind: str | None = None) -> Iterator[Path]:
    """A temporary directory for crash roots: on its own tmpfs when we may mount one,
    on the disk (``use_tmpfs=False``, kind "disk"), or on a fresh loop-mounted btrfs
    whose image sits on a tmpfs (kind "btrfs", ``replay.loopfs``).

    Durability is simulated (a process crash keeps the page cache; a power loss is
    ``replay.powerloss``), so real fsyncs only cost time: ``syncfs`` on a busy disk
    takes 0.2 s, on tmpfs nothing. Removed, mounts and all, on the way out.
    """
    from eventstore.mounts import detach_all

    if kind == "btrfs":
        from replay.loopfs import loop_btrfs

        with loop_btrfs(size) as mountpoint:
            yield mountpoint
        return
    use_tmpfs = use_tmpfs if kind is None else kind == "tmpfs"
    base = Path(tempfile.mkdtemp(prefix="layerstore-crash-"))
    if use_tmpfs and os.geteuid() == 0:
        import ctypes

        # if the mount fails (no privilege in this namespace), the directory is used as it is
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount(b"tmpfs", os.fsencode(base), b"tmpfs", 0, f"size={size},mode=0755".encode())
    try:
        yield base
    finally:
        detach_all(str(base))  # the tmpfs and every overlay left on it
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Config:
    driver: str
    base: Path
    seed: int = 1
    power_loss: bool = False
    power_mode: str = "mix"  # drop | random | torn | mix (chosen per point by the seed)
    fault: str = "crash"  # crash | eio | enospc: what happens at the chosen failpoint
    workload: str = ""
    workload_name: str = "built-in"
    driver_modules: list[str] = field(default_factory=list)
    segment_size: int = DEFAULT_SEGMENT_SIZE
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL
    recovery_crashes: int = 1  # per crash point; -1: every point of the recovery
    recovery_sample: float = 1.0  # fraction of crash points whose recovery is crashed too
    jobs: int = 1
    only: list[str] | None = None  # "K" or "K/J"
    keep: bool = False
    content: bool = True  # regenerate digests (needs eventstore.archive)
    history_retention: str = ""  # a retention policy for the store (docs/lifecycle.md): "" keeps everything

    def mode_at(self, position: int) -> str:
        if self.power_mode != "mix":
            return self.power_mode
        return random.Random(f"{self.seed}:{position}:mode").choice(POWER_MODES)


@dataclass
class Plan:
    """What the learning run found: the failpoint sequence and the parsed steps."""

    sequence: list[str]
    steps: list[Step]
    script: Path


class HarnessError(Exception):
    """The harness cannot run (the workload fails without any crash, the driver cannot run...)."""


# --- child processes -------------------------------------------------------------------------

def _child_env(config: Config, trace: Path | None, failpoints: str = "", boot: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LAYERSTORE_FAILPOINTS", None)
    env.pop("LAYERSTORE_FAILPOINT_TRACE", None)
    env.pop("LAYERSTORE_BOOT_ID", None)
    paths = [str(REPO), os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # children start by the hundred: let them keep compiled modules (outside the source tree)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(config.base / "pycache")
    if trace is not None:
        env["LAYERSTORE_FAILPOINT_TRACE"] = str(trace)
    if failpoints:
        env["LAYERSTORE_FAILPOINTS"] = failpoints
    if boot:
        env["LAYERSTORE_BOOT_ID"] = boot
    if config.history_retention:
        env["LAYERSTORE_HISTORY_RETENTION"] = config.history_retention
    return env


def _run_child(config: Config, action: str, root: Path, ack: Path, trace: Path | None, *,
               script: Path | None = None, crash_at: str = "", mode: str = "", power_seed: int = 0,
               boot: str = "", fault: str = "crash") -> subprocess.CompletedProcess:
    """Run ``replay.workload`` (``run`` a script or just ``open``); crash it at
    ``crash_at`` (NAME@N) by the environment, or by a power loss when ``mode``."""
    argv = [sys.executable, "-m", "replay.workload", action, "--root", str(root), "--driver", config.driver,
            "--ack", str(ack), "--seed", str(config.seed), "--segment-size", str(config.segment_size),
            "--checkpoint-interval", str(config.checkpoint_interval)]
    for spec in config.driver_modules:
        argv += ["--driver-module", spec]
    if script is not None:
        argv += ["--script", str(script)]
    failpoints = ""
    if crash_at and mode:
        argv += ["--power-loss", mode, "--crash-at", crash_at, "--power-seed", str(power_seed)]
    elif crash_at:  # the product's own way: an armed failpoint ends the process (or fails)
        name, _, nth = crash_at.partition("@")
        failpoints = f"{name}={fault}@{nth}"
        if fault != "crash":
            argv.append("--stop-on-error")
    return subprocess.run(argv, env=_child_env(config, trace, failpoints, boot), capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT, cwd=os.getcwd())


def _read_trace(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def power_seed(seed: int, point: int) -> int:
    """The power-loss simulation's seed for crash point ``point`` of a run with ``seed``:
    distinct for every point, the same every time the run is repeated."""
    return seed * 1_000_003 + point


def recovery_point(position: int, j: int) -> int:
    """One number for "the workload crashed at ``position``, its recovery at ``j``",
    distinct from every workload point and every other pair (recovery sequences are
    shorter than the stride)."""
    return position * 7919 + j


def _reopener(config: Config, root: Path):
    def reopen():
        from eventstore.opener import open_store

        return open_store(root, config.driver, segment_size=config.segment_size,
                          history_retention=config.history_retention or None)
    return reopen


def _crash_spec(sequence: list[str], position: int) -> str:
    name = sequence[position]
    return f"{name}@{sequence[:position + 1].count(name)}"


# --- one crash point -------------------------------------------------------------------------------

def _cleanup(root: Path) -> None:
    from replay.loopfs import remove_tree

    remove_tree(root)  # mounts first; btrfs subvolumes (read-only ones too) as well


def _crash_workload(config: Config, plan: Plan, position: int, workdir: Path) -> tuple[PointResult, Path]:
    """Fresh root, the workload crashed at ``position``; the result so far and the root."""
    root = workdir / "root"
    if workdir.exists():
        _cleanup(root)
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    root.mkdir()
    spec = _crash_spec(plan.sequence, position)
    mode = config.mode_at(position) if config.power_loss else ""
    done = _run_child(config, "run", root, workdir / "acks", workdir / "trace", script=plan.script,
                      crash_at=spec, mode=mode, power_seed=power_seed(config.seed, position),
                      boot=_boot(config, "a"), fault=config.fault)
    acked, in_flight = read_acks(workdir / "acks")
    step = "open" if in_flight == OPEN_STEP else (
        plan.steps[in_flight].line if in_flight is not None and in_flight < len(plan.steps) else "-")
    result = PointResult(str(position), spec.partition("@")[0], int(spec.partition("@")[2]), step, "",
                         mode=mode or ("" if config.fault == "crash" else config.fault))
    # an injected I/O error: the run stops at the failed operation (exit 3), or the store
    # absorbed the error and the run went on (exit 0: every result was still the model's)
    expected_exit = (CRASH_EXIT_CODE,) if config.fault == "crash" else (3, 0)
    if done.returncode == 0 and config.fault == "crash":
        result.outcome = "not-reached"
        result.notes.append("the failpoint was not reached: the workload is not deterministic")
    elif done.returncode not in expected_exit:
        result.outcome = "violation"
        result.problems.append(f"the workload failed (exit {done.returncode}) at {spec}: {_last_line(done.stderr)}")
    elif _read_trace(workdir / "trace")[:position + 1] != plan.sequence[:position + 1]:
        result.notes.append("the failpoints passed before the crash differ from the learned sequence")
    return result, root


def _expectations(config: Config, plan: Plan, workdir: Path, problems: list[str]):
    acked, in_flight = read_acks(workdir / "acks")
    candidates = expected_outcomes(plan.steps, acked, in_flight, config.power_loss, problems)
    acked_lsn = max((a.get("lsn") or 0 for a in acked.values()), default=0)
    return candidates, acked_lsn


def run_point(config: Config, plan: Plan, position: int, recovery_positions: list[int] | None = None
              ) -> PointResult:
    """Crash the workload at ``position``, recover, check; then crash the recovery at
    the chosen points of its own sequence (each from a fresh crash at ``position``)."""
    workdir = config.base / f"point-{position}"
    result, root = _crash_workload(config, plan, position, workdir)
    if not result.outcome:
        candidates, acked_lsn = _expectations(config, plan, workdir, result.problems)
        outcome, problems, notes = check_recovered(_reopener(config, root), root, candidates, acked_lsn,
                                                   content=config.content, boot=_boot(config, "b"),
                                                   trace=workdir / "recovery-trace")
        result.outcome = "violation" if result.problems else outcome
        result.problems += problems
        result.notes += notes
    recovery_sequence = _read_trace(workdir / "recovery-trace")
    result.recovery_points = len(recovery_sequence)
    _finish(config, result, workdir)
    if result.outcome in ("violation", "not-reached"):
        return result
    if recovery_positions is None:
        recovery_positions = choose_recovery_positions(config, position, len(recovery_sequence))
    for j in recovery_positions:
        if j < len(recovery_sequence):
            result.nested.append(_run_nested(config, plan, position, recovery_sequence, j))
    return result


def _boot(config: Config, which: str) -> str:
    """Boot ids: the workload runs in boot a; each power loss starts the next boot."""
    return f"boot-{config.seed}-{which}" if config.power_loss else ""


def choose_recovery_positions(config: Config, position: int, length: int) -> list[int]:
    if length == 0 or config.recovery_crashes == 0:
        return []
    rng = random.Random(f"{config.seed}:{position}:recovery")
    if config.recovery_crashes < 0:
        return list(range(length))
    if rng.random() >= config.recovery_sample:
        return []
    return sorted(rng.sample(range(length), min(config.recovery_crashes, length)))


def _run_nested(config: Config, plan: Plan, position: int, recovery_sequence: list[str], j: int) -> PointResult:
    """The workload crashed at ``position`` again, then its recovery crashed at ``j``."""
    workdir = config.base / f"point-{position}-{j}"
    first, root = _crash_workload(config, plan, position, workdir)
    spec = _crash_spec(recovery_sequence, j)
    mode = config.mode_at(recovery_point(position, j) + 1) if config.power_loss else ""
    result = PointResult(f"{position}/{j}", spec.partition("@")[0], int(spec.partition("@")[2]),
                         f"recovery after {first.failpoint}", "", mode=mode)
    if first.outcome:
        result.outcome, result.problems, result.notes = first.outcome, first.problems, first.notes
        _finish(config, result, workdir)
        return result
    crashed = _run_child(config, "open", root, workdir / "recovery-acks", workdir / "recovery-trace",
                         crash_at=spec, mode=mode, power_seed=power_seed(config.seed, recovery_point(position, j)),
                         boot=_boot(config, "b"))
    if crashed.returncode == 0:
        result.outcome = "not-reached"
        result.notes.append("the recovery failpoint was not reached: recovery is not deterministic")
    elif crashed.returncode != CRASH_EXIT_CODE:
        result.outcome = "violation"
        result.problems.append(f"recovery failed instead of crashing (exit {crashed.returncode}): "
                               f"{_last_line(crashed.stderr)}")
    else:
        candidates, acked_lsn = _expectations(config, plan, workdir, result.problems)
        outcome, problems, notes = check_recovered(_reopener(config, root), root, candidates, acked_lsn,
                                                   content=config.content, boot=_boot(config, "c"))
        result.outcome = "violation" if result.problems else outcome
        result.problems += problems
        result.notes += notes
    _finish(config, result, workdir)
    return result


def _finish(config: Config, result: PointResult, workdir: Path) -> None:
    if config.keep and (result.problems or config.only):
        print(f"kept {workdir} for position {result.position}", file=sys.stderr)
        return
    _cleanup(workdir / "root")
    shutil.rmtree(workdir, ignore_errors=True)


# --- the whole run -----------------------------------------------------------------------------------

def learn(config: Config) -> Plan:
    """Run the workload once without a crash: its failpoint sequence, checked results."""
    script = config.base / "workload.txt"
    script.write_text(config.workload)
    try:
        steps = parse(config.workload, config.seed, Path.cwd())
    except WorkloadError as exc:
        raise HarnessError(f"workload {config.workload_name}: {exc}") from None
    workdir = config.base / "learn"
    root = workdir / "root"
    root.mkdir(parents=True)
    boot = _boot(config, "a")
    done = _run_child(config, "run", root, workdir / "acks", workdir / "trace", script=script, boot=boot)
    if done.returncode != 0:
        raise HarnessError(f"the workload fails without any crash (exit {done.returncode}):\n{done.stderr.strip()}")
    sequence = _read_trace(workdir / "trace")
    problems: list[str] = []
    acked, _ = read_acks(workdir / "acks")
    candidates = expected_outcomes(steps, acked, None, False, problems)
    _, check_problems, _ = check_recovered(_reopener(config, root), root, candidates, 0,
                                           content=config.content, boot=boot)
    _cleanup(root)
    shutil.rmtree(workdir, ignore_errors=True)
    if problems or check_problems:
        raise HarnessError("the workload run without a crash already disagrees with the model:\n  "
                           + "\n  ".join(problems + check_problems))
    return Plan(sequence, steps, script)


def run(config: Config, out=None) -> list[PointResult]:
    """Learn, crash at every point (or ``config.only``), print the report; the results."""
    out = out or sys.stdout
    started = time.monotonic()
    load_driver_modules(config.driver, config.driver_modules)
    plan = learn(config)
    what = f"power loss ({config.power_mode})" if config.power_loss else (
        "process crash" if config.fault == "crash" else f"injected {config.fault.upper()}")
    print(f"workload {config.workload_name}: {len(plan.steps)} steps, {len(plan.sequence)} failpoints passed; "
          f"driver {config.driver}, seed {config.seed}, {what}", file=out)
    tasks = _tasks(config, plan)
    from eventstore.progress import on_terminal

    bar = on_terminal(len(tasks), "crash points", unit="point")  # (None off a terminal)
    if config.jobs > 1 and len(tasks) > 1:
        import multiprocessing

        with ProcessPoolExecutor(config.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            results = []
            for result in pool.map(_run_task, [(config, plan, p, j) for p, j in tasks]):
                results.append(result)
                if bar:
                    bar.advance()
    else:
        results = []
        for p, j in tasks:
            results.append(_run_task((config, plan, p, j)))
            if bar:
                bar.advance()
    if bar:
        bar.done()
    report(config, results, out, time.monotonic() - started)
    return results


def _tasks(config: Config, plan: Plan) -> list[tuple[int, list[int] | None]]:
    if not config.only:
        return [(k, None) for k in range(len(plan.sequence))]
    tasks = []
    for item in config.only:
        k, _, j = item.partition("/")
        if int(k) >= len(plan.sequence):
            raise HarnessError(f"position {k}: the workload passes only {len(plan.sequence)} failpoints")
        tasks.append((int(k), [int(j)] if j else []))
    return tasks


def _run_task(args) -> PointResult:
    config, plan, position, nested = args
    return run_point(config, plan, position, nested)


# --- command line ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m replay.crash", description=__doc__.split("\n\n")[0])
    p.add_argument("--driver", required=True, help="storage driver name (vfs, overlay, or one you register)")
    p.add_argument("--driver-module", action="append", default=[], metavar="MOD[:CLASS]",
                   help="register CLASS as --driver, or import MOD which registers its drivers")
    p.add_argument("--root", help="where the crash roots go (default: a temporary tmpfs, removed afterwards)")
    p.add_argument("--scratch", choices=SCRATCH_KINDS,
                   help="what the default root is on: a tmpfs, the disk, or a loop-mounted btrfs "
                        "(default: btrfs for --driver btrfs, else tmpfs)")
    p.add_argument("--no-tmpfs", action="store_true", help="the same as --scratch disk")
    p.add_argument("--seed", type=int, default=1, help="layer ids, power-loss choices, recovery crash points")
    p.add_argument("--power-loss", action="store_true", help="lose what was not synced at each crash")
    p.add_argument("--power-mode", choices=[*POWER_MODES, "mix"], default="mix")
    p.add_argument("--fault", choices=["crash", "eio", "enospc"], default="crash",
                   help="at each failpoint: crash (default), or fail with that I/O error and stop the workload")
    p.add_argument("--workload", help="a workload script (see replay/workload.py); default: the built-in mix")
    p.add_argument("--recovery-crashes", default="1",
                   help="crash points in each recovery to crash too: a number, or 'all' (default 1)")
    p.add_argument("--recovery-sample", type=float, default=1.0,
                   help="fraction of crash points whose recovery is crashed too (default 1)")
    p.add_argument("--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE)
    p.add_argument("--checkpoint-interval", type=int, default=DEFAULT_CHECKPOINT_INTERVAL)
    p.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--only", action="append", metavar="K[/J]",
                   help="only crash point K (and crash its recovery at J); repeatable")
    p.add_argument("--keep", action="store_true", help="keep the roots of violations (and of --only points)")
    p.add_argument("--no-content", action="store_true", help="skip regenerating layer contents")
    p.add_argument("--history-retention", default="", metavar="POLICY",
                   help="run the store with this retention policy (90d, 500): archiving and dropping crashed too")
    args = p.parse_args(argv)

    load_driver_modules(args.driver, args.driver_module)
    if args.workload:
        workload, name = Path(args.workload).read_text(), args.workload
    else:
        workload, name = builtin_workload(), "built-in"
    with ExitStack() as stack:
        if args.root:
            base = Path(args.root)
            base.mkdir(parents=True, exist_ok=True)
        else:
            from replay.loopfs import ScratchUnavailable

            kind = args.scratch or ("disk" if args.no_tmpfs else scratch_kind_for(args.driver))
            try:
                base = _base_for(stack, kind, args.keep)
            except ScratchUnavailable as exc:
                print(f"crash harness: no {kind} scratch space: {exc}", file=sys.stderr)
                return 2
        return _main(args, base, workload, name)


def _base_for(stack: ExitStack, kind: str, keep: bool) -> Path:
    """Where the crash roots go. Kept roots outlive this process: on the disk, or on a
    loop btrfs left mounted (its mount point is printed, to unmount when done)."""
    if not keep:
        return stack.enter_context(scratch_space(kind=kind))
    if kind != "btrfs":
        return Path(tempfile.mkdtemp(prefix="layerstore-crash-"))
    from replay.loopfs import mount_loop_filesystem

    base = mount_loop_filesystem("btrfs", on_tmpfs=False)
    print(f"crash roots on a loop-mounted btrfs at {base}; when done: umount {base} && rm -r {base.parent}",
          file=sys.stderr)
    return base


def _main(args, base: Path, workload: str, name: str) -> int:
    if args.fault != "crash" and args.power_loss:
        print("crash harness: --fault and --power-loss do not go together", file=sys.stderr)
        return 2
    config = Config(driver=args.driver, base=base.resolve(), seed=args.seed, power_loss=args.power_loss,
                    power_mode=args.power_mode, fault=args.fault, workload=workload, workload_name=name,
                    driver_modules=args.driver_module, segment_size=args.segment_size,
                    checkpoint_interval=args.checkpoint_interval,
                    recovery_crashes=-1 if args.recovery_crashes == "all" else int(args.recovery_crashes),
                    recovery_sample=args.recovery_sample, jobs=args.jobs, only=args.only, keep=args.keep,
                    content=not args.no_content, history_retention=args.history_retention)
    try:
        results = run(config)
    except HarnessError as exc:
        print(f"crash harness: {exc}", file=sys.stderr)
        return 2
    return 1 if any(r.outcome == "violation" for r in flatten(results)) else 0


if __name__ == "__main__":
    sys.exit(main())
