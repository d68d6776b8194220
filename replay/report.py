"""The crash harness's results and how it reports them: a table of failpoint × outcome,
every violation with the command that reproduces it, and ``N crash points, V violations``."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields

OUTCOMES = ("undone", "done", "partial", "not-reached", "violation")
MAX_REPORTED = 20  # violations printed in full


@dataclass
class PointResult:
    position: str  # "K" or "K/J"
    failpoint: str
    passes: int
    step: str  # the operation in flight
    outcome: str  # one of OUTCOMES
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mode: str = ""
    recovery_points: int = 0  # length of the recovery's own failpoint sequence
    nested: list["PointResult"] = field(default_factory=list)


def flatten(results: list[PointResult]) -> list[PointResult]:
    return [r for top in results for r in (top, *top.nested)]


def report(config, results: list[PointResult], out, seconds: float) -> None:
    """Print the tables, the notes, the violations (with ``reproduce:`` lines), the total."""
    table: dict[str, Counter] = defaultdict(Counter)
    recovery_table: dict[str, Counter] = defaultdict(Counter)
    for top in results:
        table[top.failpoint][top.outcome] += 1
        for nested in top.nested:
            recovery_table[nested.failpoint][nested.outcome] += 1
    _print_table("crash point", table, out)
    if recovery_table:
        print(file=out)
        _print_table("crash during recovery", recovery_table, out)
    everything = flatten(results)
    violations = [r for r in everything if r.outcome == "violation"]
    notes = Counter(note for r in everything for note in r.notes)
    for note, count in sorted(notes.items()):
        print(f"note: {note} ({count}x)", file=out)
    for r in violations[:MAX_REPORTED]:
        print(f"\nVIOLATION at position {r.position} ({r.failpoint} pass {r.passes}"
              f"{', ' + r.mode if r.mode else ''}; in flight: {r.step}):", file=out)
        for problem in r.problems:
            print(f"  {problem}", file=out)
        print(f"  reproduce: {reproduce_command(config, r.position)}", file=out)
    if len(violations) > MAX_REPORTED:
        print(f"\n... and {len(violations) - MAX_REPORTED} more violations at positions "
              f"{', '.join(r.position for r in violations[MAX_REPORTED:])}", file=out)
    print(f"({seconds:.0f} s)", file=out)
    print(f"{len(everything)} crash points, {len(violations)} violations", file=out)


def _print_table(title: str, table: dict[str, Counter], out) -> None:
    width = max([len(title), *map(len, table)]) + 2
    print(f"{title:<{width}}{'points':>8}" + "".join(f"{o:>13}" for o in OUTCOMES), file=out)
    total: Counter = Counter()
    for name in sorted(table):
        counts = table[name]
        total.update(counts)
        print(f"{name:<{width}}{sum(counts.values()):>8}" + "".join(f"{counts[o]:>13}" for o in OUTCOMES), file=out)
    print(f"{'total':<{width}}{sum(total.values()):>8}" + "".join(f"{total[o]:>13}" for o in OUTCOMES), file=out)


def reproduce_command(config, position: str) -> str:
    """The harness command that runs crash point ``position`` alone and keeps its root."""
    parts = ["python -m replay.crash", "--driver", config.driver, "--seed", str(config.seed), "--only", position]
    for spec in config.driver_modules:
        parts += ["--driver-module", spec]
    if config.power_loss:
        parts += ["--power-loss", "--power-mode", config.power_mode]
    if config.fault != "crash":
        parts += ["--fault", config.fault]
    if config.workload_name != "built-in":
        parts += ["--workload", config.workload_name]
    defaults = {f.name: f.default for f in fields(config)}
    for name in ("segment_size", "checkpoint_interval"):
        if getattr(config, name) != defaults[name]:
            parts += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    return " ".join(parts) + " --keep"
