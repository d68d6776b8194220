"""The damage harness (``python -m replay.damage --driver NAME``): build a store with a
workload, then for every entry of a damage matrix — a flipped byte, a cut, a deleted,
stale or foreign file, of every file class; a full disk, a read-only medium, another
user, a zombie creator, mounts inside a layer, stray entries — damage a fresh copy, run
the documented commands through the real CLI, apply the documented remedy, and check
that the store kept its promises (docs/damage-testing.md, docs/integrity.md).

The pieces, one job each:

- ``fixture``   the store, its older snapshots, a diverged clone and a foreign store;
- ``matrix``    every damage case, declared once, with its remedy and expectations;
- ``bytes``, ``logbytes``, ``environment``   how the damage is done;
- ``commands``  the CLI, and the exit codes docs/cli.md allows each command;
- ``caserun``   one case as it runs; ``harness`` runs it; ``checks`` judges it;
- ``report``    the table, the violations with ``reproduce:`` lines, the total.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from replay.damage.harness import (DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_SEGMENT_SIZE, Config, describe, prepare,
                                   run_case)
from replay.damage.matrix import Case, applicable, find
from replay.damage.report import CaseResult, report

__all__ = ["Config", "CaseResult", "HarnessError", "run", "main"]


class HarnessError(Exception):
    """The harness cannot run (not root, an unknown case, a store it cannot build)."""


def select(config: Config) -> list[Case]:
    if not config.only:
        return applicable(config.driver)
    try:
        cases = find(config.only, config.driver)
    except KeyError as exc:
        raise HarnessError(f"no damage case {exc.args[0]!r} (see --list)") from None
    if not cases:
        raise HarnessError(f"none of {', '.join(config.only)} runs on driver {config.driver}")
    return cases


def run(config: Config, out=None) -> list[CaseResult]:
    """Build the store, run every chosen case, print the report; the results."""
    from replay.damage.fixture import BuildError
    from replay.workload import load_driver_modules

    out = out or sys.stdout
    if os.geteuid() != 0:
        raise HarnessError("the damage harness needs root (mounts, another user, overlay)")
    load_driver_modules(config.driver, config.driver_modules)
    cases = select(config)
    started = time.monotonic()
    try:
        fixture = prepare(config, cases)
    except (BuildError, RuntimeError) as exc:
        raise HarnessError(str(exc)) from None
    header = describe(fixture, time.monotonic() - started)
    if config.jobs > 1 and len(cases) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(config.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            # cases hold closures, which do not pickle: the workers find them by name
            results = list(pool.map(_run_one, [(config, fixture, c.name) for c in cases]))
    else:
        results = [run_case(config, fixture, c) for c in cases]
    report(config, header, results, out, time.monotonic() - started)
    return results


def _run_one(args) -> CaseResult:
    config, fixture, name = args
    return run_case(config, fixture, find([name], config.driver)[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m replay.damage", description=__doc__.split("\n\n")[0])
    p.add_argument("--driver", required=True, help="storage driver name (vfs, overlay, or one you register)")
    p.add_argument("--driver-module", action="append", default=[], metavar="MOD[:CLASS]",
                   help="register CLASS as --driver, or import MOD which registers its drivers")
    p.add_argument("--only", action="append", metavar="CASE",
                   help="only this case (a name, or a prefix ending in '/': segment-last/); repeatable")
    p.add_argument("--list", action="store_true", help="list the damage cases for the driver and exit")
    p.add_argument("--keep", action="store_true", help="keep the directories of violations (and of --only cases)")
    p.add_argument("--root", help="where the copies go (default: a temporary tmpfs, removed afterwards; "
                                  "for btrfs a loop-mounted btrfs)")
    p.add_argument("--no-tmpfs", action="store_true", help="default root on the disk, not a tmpfs")
    p.add_argument("--seed", type=int, default=1, help="layer ids and markers follow the seed")
    p.add_argument("--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE)
    p.add_argument("--checkpoint-interval", type=int, default=DEFAULT_CHECKPOINT_INTERVAL)
    p.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)

    from replay.crash import scratch_space
    from replay.workload import load_driver_modules

    load_driver_modules(args.driver, args.driver_module)
    if args.list:
        for case in applicable(args.driver):
            print(f"{case.name:<36} {case.target:<18} remedy: {', '.join(case.remedy) or '-'}")
        return 0
    with ExitStack() as stack:
        if args.root:
            base = Path(args.root)
            base.mkdir(parents=True, exist_ok=True)
        elif args.keep:  # kept directories outlive this process: not on a tmpfs we unmount
            base = Path(tempfile.mkdtemp(prefix="layerstore-damage-"))
        else:  # btrfs lays its layers out on a btrfs: a fresh loop-mounted one
            base = stack.enter_context(scratch_space(not args.no_tmpfs, size="4g",
                                                     kind="btrfs" if args.driver == "btrfs" else None))
        base.chmod(0o755)  # user nobody must reach the copies
        config = Config(args.driver, base.resolve(), args.driver_module, args.seed, args.segment_size,
                        args.checkpoint_interval, args.only, args.keep, args.jobs)
        try:
            results = run(config)
        except HarnessError as exc:
            print(f"damage harness: {exc}", file=sys.stderr)
            return 2
        if args.keep:
            print(f"kept under {base}", file=sys.stderr)
    return 1 if any(r.outcome == "violation" for r in results) else 0
