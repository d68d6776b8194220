"""The damage harness's results and how it reports them: a table of damage case ×
outcome (with each phase's exit codes), every violation with the command that
reproduces it, and last ``N damage cases, V violations``."""

from __future__ import annotations

from dataclasses import dataclass, field

from replay.damage.commands import CommandResult

OUTCOMES = ("ok", "violation", "skipped")
PHASES = ("reads", "check", "verify", "write", "remedy", "after")
MAX_PROBLEMS = 12  # per case, printed in full


@dataclass
class CaseResult:
    name: str
    target: str
    damage: str = ""  # what was done, in words
    outcome: str = ""  # one of OUTCOMES
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[CommandResult] = field(default_factory=list)
    seconds: float = 0.0

    def codes(self, phase: str) -> str:
        """The exit codes of the phase's commands, one character each (T: hung)."""
        return "".join("T" if c.exit == -1 else str(c.exit) if 0 <= c.exit <= 9 else "?"
                       for c in self.commands if c.phase == phase) or "-"


def report(config, header: str, results: list[CaseResult], out, seconds: float) -> None:
    """Print the table, the skipped cases, the violations with ``reproduce:`` lines, the total."""
    print(header, file=out)
    width = max([len("damage case"), *(len(r.name) for r in results)]) + 2
    target_width = max([len("target"), *(len(r.target) for r in results)]) + 2
    print(f"{'damage case':<{width}}{'target':<{target_width}}" + "".join(f"{p:>8}" for p in PHASES)
          + f"{'outcome':>11}", file=out)
    for r in results:
        print(f"{r.name:<{width}}{r.target:<{target_width}}" + "".join(f"{r.codes(p):>8}" for p in PHASES)
              + f"{r.outcome:>11}", file=out)
    counts = {o: sum(1 for r in results if r.outcome == o) for o in OUTCOMES}
    print(f"{'total':<{width + target_width}}" + " " * 8 * len(PHASES)
          + "  " + ", ".join(f"{n} {o}" for o, n in counts.items()), file=out)
    for r in results:
        if r.outcome == "skipped":
            print(f"skipped {r.name}: {'; '.join(r.notes)}", file=out)
    for r in results:
        if r.outcome != "violation":
            continue
        print(f"\nVIOLATION in {r.name} ({r.damage or 'damage not applied'}):", file=out)
        for problem in r.problems[:MAX_PROBLEMS]:
            print(f"  {problem}", file=out)
        if len(r.problems) > MAX_PROBLEMS:
            print(f"  ... and {len(r.problems) - MAX_PROBLEMS} more", file=out)
        for note in r.notes:
            print(f"  note: {note}", file=out)
        print(f"  reproduce: {reproduce_command(config, r.name)}", file=out)
    print(f"({seconds:.0f} s)", file=out)
    print(f"{len(results)} damage cases, {counts['violation']} violations", file=out)


def reproduce_command(config, case: str) -> str:
    """The harness command that runs ``case`` alone and keeps its directory."""
    from replay.damage.harness import DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_SEGMENT_SIZE

    parts = ["python -m replay.damage", "--driver", config.driver, "--only", case]
    for spec in config.driver_modules:
        parts += ["--driver-module", spec]
    if config.seed != 1:
        parts += ["--seed", str(config.seed)]
    if config.segment_size != DEFAULT_SEGMENT_SIZE:
        parts += ["--segment-size", str(config.segment_size)]
    if config.checkpoint_interval != DEFAULT_CHECKPOINT_INTERVAL:
        parts += ["--checkpoint-interval", str(config.checkpoint_interval)]
    return " ".join(parts) + " --keep"
