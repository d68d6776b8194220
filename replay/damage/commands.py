"""The documented commands, run through the real CLI, and what each may answer.

Every command runs as its own process, as an operator runs it: ``python -m
eventstore.cli --root R ...`` (with a user's driver: ``python -m replay.damage.usercli``,
which registers the driver and then calls the same ``eventstore.cli.main``).

``ALLOWED`` is the table of exit codes docs/cli.md gives each command. Usage (2) is
never allowed: the harness's arguments are always well formed, so a 2 after damage is
a store that blames the caller for its own trouble.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

OK, NO, USAGE, REFUSED, CORRUPT = 0, 1, 2, 3, 4
#: a storage error (the disk, the kernel or a driver failed), distinct from "no"
STORAGE = 5
COMMAND_TIMEOUT = 120
TRACEBACK = "Traceback (most recent call last)"

_READ = frozenset({OK, CORRUPT, STORAGE})
_LOOKUP = frozenset({OK, NO, CORRUPT, STORAGE})
_WRITE = frozenset({OK, NO, REFUSED, CORRUPT, STORAGE})

#: command -> the exit codes it may give here (docs/cli.md, "Exit codes")
ALLOWED: dict[str, frozenset[int]] = {
    "layers": _READ,
    "layer": _LOOKUP,
    "exists": _LOOKUP,
    "refs": _LOOKUP,
    "history": _READ,
    "check": _READ,
    "log verify": _READ,
    "log repair": _READ,
    "recover": _READ,
    "hold": _WRITE,
    "release": _WRITE,
    "delete": _WRITE,
    "mount": _WRITE,
    "umount": _WRITE,
}


@dataclass
class CommandResult:
    """One command as it ran: its words (after ``--root R``), where, as whom, and what it gave."""

    phase: str  # reads | check | verify | write | remedy | after
    args: list[str]
    exit: int  # -1: it did not finish in time
    stdout: str
    stderr: str
    root: str = ""
    user: str = ""

    @property
    def command(self) -> str:
        return command_name(self.args)

    def shown(self) -> str:
        """The command as a reader wants it: ids cut to 12 characters (a unique prefix
        the CLI accepts as well)."""
        who = f" (as {self.user})" if self.user else ""
        words = [w[:12] if len(w) == 64 and all(c in "0123456789abcdef" for c in w) else w for w in self.args]
        return f"layerstore {' '.join(words)}{who}"

    def error(self) -> str:
        """The line that says what went wrong: a traceback's last line, else the first."""
        text = self.stderr or self.stdout
        return last_line(text) if TRACEBACK in text else first_line(text)


def command_name(args: list[str]) -> str:
    """The command in ``args`` ("log verify", "layers"), options skipped."""
    words = [a for a in args if not a.startswith("-")]
    if words and words[0] == "log":
        return " ".join(words[:2])
    return words[0] if words else ""


def cli_argv(driver: str, driver_modules: list[str], root: Path | str, args: list[str]) -> list[str]:
    """The process that runs ``layerstore --root ROOT ARGS``."""
    if not driver_modules:
        return [sys.executable, "-m", "eventstore.cli", "--root", str(root), *args]
    argv = [sys.executable, "-m", "replay.damage.usercli", "--driver", driver]
    for spec in driver_modules:
        argv += ["--driver-module", spec]
    return [*argv, "--", "--root", str(root), *args]


def run_command(argv: list[str], env: dict[str, str], phase: str, args: list[str], *, root: str = "",
                user: str = "", timeout: float = COMMAND_TIMEOUT) -> CommandResult:
    """Run one command; a command that hangs is killed and reported with exit -1."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return CommandResult(phase, args, -1, _text(exc.stdout), _text(exc.stderr) + f"\n(killed after {timeout:g} s)",
                             root, user)
    return CommandResult(phase, args, done.returncode, done.stdout, done.stderr, root, user)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def conduct_problems(result: CommandResult) -> list[str]:
    """What is wrong with how ``result`` ended, whatever the damage: an exit code the
    docs do not give that command, more than one line on stderr, a traceback."""
    problems = []
    shown = f"[{result.phase}] {result.shown()}"
    if result.exit == -1:
        problems.append(f"{shown}: hung (killed after {COMMAND_TIMEOUT} s)")
        return problems
    allowed = ALLOWED.get(result.command)
    if allowed is not None and result.exit not in allowed:
        problems.append(f"{shown}: exit {result.exit}, not one of {sorted(allowed)}: {result.error()}")
    if TRACEBACK in result.stderr or TRACEBACK in result.stdout:
        problems.append(f"{shown}: Python traceback: {last_line(result.stderr)}")
    elif len(result.stderr.strip().splitlines()) > 1:
        problems.append(f"{shown}: {len(result.stderr.strip().splitlines())} lines on stderr: "
                        f"{' | '.join(result.stderr.strip().splitlines()[:3])}")
    return problems


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
