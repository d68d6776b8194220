"""Running the real ``layerstore`` CLI in a child process, as users and scripts do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSTORE_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def cli_command(root: Path, *args: str, driver: str | None = "vfs", as_json: bool = False) -> list[str]:
    command = [sys.executable, "-m", "eventstore.cli", "--root", str(root)]
    if driver:
        command += ["--driver", driver]
    if as_json:
        command.append("--json")
    return command + list(args)


def cli(root: Path, *args: str, driver: str | None = "vfs", as_json: bool = False,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI; the result, whatever its exit code."""
    return subprocess.run(cli_command(root, *args, driver=driver, as_json=as_json), env=env or cli_env(),
                          capture_output=True, text=True, timeout=120)


def ok(root: Path, *args: str, **kwargs) -> str:
    """Run the CLI, expecting success; its stdout."""
    result = cli(root, *args, **kwargs)
    assert result.returncode == 0, f"{args}: exit {result.returncode}: {result.stderr}"
    assert result.stderr == ""
    return result.stdout


def ok_json(root: Path, *args: str, **kwargs):
    return json.loads(ok(root, *args, as_json=True, **kwargs))


def ok_json_lines(root: Path, *args: str, **kwargs) -> list:
    """A command whose ``--json`` output is one object a line (``history``, ``events``)."""
    return [json.loads(line) for line in ok(root, *args, as_json=True, **kwargs).splitlines()]


def fails(root: Path, code: int, *args: str, **kwargs) -> str:
    """Run the CLI, expecting exit ``code`` with one error line on stderr and nothing on
    stdout; that line."""
    result = cli(root, *args, **kwargs)
    assert result.returncode == code, f"{args}: exit {result.returncode}, want {code}: {result.stderr}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), f"not one line: {result.stderr!r}"
    assert lines[0].startswith("layerstore: ") and lines[0].isprintable(), lines[0]
    return lines[0]
