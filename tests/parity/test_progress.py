"""Progress bars on a terminal for the long jobs (create, applydiff, diff -o, export-oci),
drawn by tqdm with the percentage, rate and time left; nothing of them (not even the
import) when stderr is not a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.cli.support import REPO, cli_env

from .support import TarBuilder


def big_tar(path: Path) -> Path:
    builder = TarBuilder()
    for i in range(40):
        builder.file(f"f{i}", os.urandom(64 * 1024))
    path.write_bytes(builder.bytes())
    return path


def on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit code, what the terminal showed)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    child = subprocess.Popen([sys.executable, "-m", "eventstore.cli", *args], env=cli_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal, cwd=REPO)
    os.close(terminal)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal is gone with the child
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    return child.wait(60), shown.decode("utf-8", "replace")


@pytest.mark.parametrize("command", ["create", "applydiff", "diff"])
def test_long_jobs_draw_a_bar_on_a_terminal(tmp_path: Path, command: str):
    tar = big_tar(tmp_path / "big.tar")
    root = tmp_path / "store"
    base = ["--root", str(root), "--driver", "vfs"]
    if command == "create":
        code, shown = on_a_terminal(*base, "create", str(tar))
    else:
        layer = subprocess.run([sys.executable, "-m", "eventstore.cli", *base, "create-layer"], env=cli_env(),
                               capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
        code, shown = on_a_terminal(*base, "applydiff", layer, str(tar))
        if command == "diff":
            code, shown = on_a_terminal(*base, "diff", layer, "-o", str(tmp_path / "out.tar"))
    assert code == 0, shown
    assert "100%" in shown and "/s" in shown  # percentage and rate
    assert "<" in shown  # tqdm's elapsed<remaining


def test_no_terminal_no_bar_and_no_tqdm(tmp_path: Path):
    tar = big_tar(tmp_path / "big.tar")
    probe = ("import sys; from eventstore.cli import main; code = main(sys.argv[1:]); "
             "print('tqdm' in sys.modules, file=sys.stderr); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe, "--root", str(tmp_path / "store"), "--driver", "vfs",
                           "create", str(tar)], env=cli_env(), capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0 and done.stderr == "False\n"
