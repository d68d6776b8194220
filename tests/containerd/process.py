"""``layerstore serve --containerd`` as a child process, as an operator runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.cli.support import cli_command, cli_env


class ServerProcess:
    """One ``layerstore serve``; its stderr goes to ``log``."""

    def __init__(self, root: Path, socket_path: Path, driver: str | None = None,
                 failpoints: str = "", log: Path | None = None, executable: str | None = None):
        self.root, self.socket_path = root, socket_path
        self.log = log or socket_path.with_name(socket_path.name + ".log")
        self.trace = socket_path.with_name(socket_path.name + ".failpoints")
        env = cli_env()
        if os.environ.get("LAYERSTORE_DEBUG"):  # every call and its time in the server's log
            env["LAYERSTORE_DEBUG"] = os.environ["LAYERSTORE_DEBUG"]
        if failpoints:
            env["LAYERSTORE_FAILPOINTS"] = failpoints
            env["LAYERSTORE_FAILPOINT_TRACE"] = str(self.trace)
        with open(self.log, "ab") as err:
            self._log_start = err.tell()  # a restart appends to the same log: read only ours
            command = cli_command(root, "serve", "--containerd", str(socket_path), driver=driver)
            if executable:  # an installed ``layerstore`` instead of this checkout's module
                command = [executable, *command[command.index("--root"):]]
            self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)

    @property
    def stderr(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self._log_start)
            return f.read().decode()

    def wait_ready(self, timeout: float = 120.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while "serving containerd snapshots" not in self.stderr:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after {timeout}s: {self.stderr}")
            time.sleep(0.05)
        return self

    def passed_times(self, failpoint: str) -> int:
        """How often the server reached ``failpoint`` (when started with failpoints)."""
        try:
            return self.trace.read_text().split().count(failpoint)
        except FileNotFoundError:
            return 0

    def passed(self, failpoint: str) -> bool:
        return self.passed_times(failpoint) > 0

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
