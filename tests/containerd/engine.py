"""A real containerd of the tests' own, with layerstore as its proxy snapshotter.

Everything lives under one short directory (unix socket paths hold 107 bytes): its
config, root, state, gRPC and ttrpc sockets, the layerstore store and socket. Nothing
is shared with a system containerd: the CRI plugin is off, the namespace is the run's
own (so runc's state, /run/containerd/runc/<namespace>, and the shims' sockets, named
after our address, cannot meet another's). ``stop`` ends the daemon, its shims and the
server, unmounts what is left, and removes the directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.store.support import unmount_everything_under

from .process import ServerProcess

SNAPSHOTTER = "layerstore"

CONFIG = """\
version = 2
root = "{base}/containerd/root"
state = "{base}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[debug]
  address = ""

[proxy_plugins]
  [proxy_plugins.{snapshotter}]
    type = "snapshot"
    address = "{base}/layerstore.sock"
"""


def missing_tools() -> list[str]:
    return [tool for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "umoci")
            if shutil.which(tool) is None] + ([] if os.path.exists("/bin/busybox") else ["busybox-static"])


class Engine:
    """containerd + ``layerstore serve`` on a store of its own."""

    def __init__(self, driver: str = "overlay", layerstore: str | None = None):
        self.layerstore = layerstore  # an installed executable; default: this checkout
        self.base = Path(tempfile.mkdtemp(prefix="lse-", dir="/tmp"))
        self.driver = driver
        # containerd's identifier rule: [A-Za-z0-9]+ joined by single . _ or - (mkdtemp's
        # random part may end in "_": not that)
        self.namespace = f"layerstore-test-{os.getpid()}-{secrets.token_hex(4)}"
        self.socket = self.base / "containerd.sock"
        self.store_root = self.base / "store"
        self.server: ServerProcess | None = None
        self.daemon: subprocess.Popen | None = None
        self.log = self.base / "containerd.log"

    def start(self, failpoints: str = "") -> "Engine":
        (self.base / "config.toml").write_text(CONFIG.format(base=self.base, snapshotter=SNAPSHOTTER))
        self.start_server(failpoints)
        with open(self.log, "ab") as log:
            self.daemon = subprocess.Popen(["containerd", "--config", str(self.base / "config.toml")],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while self.ctr("version", check=False).returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"containerd did not start:\n{self.logs(40)}")
            time.sleep(0.1)
        return self

    def start_server(self, failpoints: str = "") -> ServerProcess:
        self.server = ServerProcess(self.store_root, self.base / "layerstore.sock", self.driver,
                                    failpoints=failpoints, log=self.base / "layerstore.log",
                                    executable=self.layerstore)
        return self.server.wait_ready()

    def ctr(self, *args: str, snapshotter: str | None = None, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess:
        """``ctr`` against our containerd, in our namespace; ``snapshotter`` goes where
        each subcommand takes it."""
        env = {**os.environ, "CONTAINERD_SNAPSHOTTER": snapshotter or ""}
        command = ["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}\n"
                                 f"{self.logs()}")
        return result

    def logs(self, lines: int = 15) -> str:
        """The ends of containerd's and the server's logs, for a failure's message."""
        out = []
        for log in (self.log, self.base / "layerstore.log"):
            try:
                out.append(f"--- {log.name}:\n" + "\n".join(log.read_text().splitlines()[-lines:]))
            except FileNotFoundError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        """Every step runs, whatever the one before did: nothing may outlive a test."""
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                try:
                    self._remove_containers()
                finally:
                    self.daemon.send_signal(signal.SIGTERM)
                    try:
                        self.daemon.wait(20)
                    except subprocess.TimeoutExpired:
                        self.daemon.kill()
                        self.daemon.wait(10)
        finally:
            self._kill_shims()
            if self.server is not None:
                self.server.kill()
            unmount_everything_under(self.base)
            shutil.rmtree(self.base, ignore_errors=True)
            try:  # runc's state for our namespace: empty once our containers are gone
                os.rmdir(f"/run/containerd/runc/{self.namespace}")
            except OSError:
                pass

    def _remove_containers(self) -> None:
        try:
            listed = self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split()
        except subprocess.TimeoutExpired:
            return
        for container in listed:
            self.ctr("tasks", "kill", "-s", "SIGKILL", container, check=False, timeout=30)
            self.ctr("tasks", "delete", "-f", container, check=False, timeout=30)
            self.ctr("containers", "delete", container, check=False, timeout=30)

    def _kill_shims(self) -> None:
        """Shims this containerd started (they name its address): by pid, no one else's."""
        address = os.fsencode(self.socket)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address in argv:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except ProcessLookupError:
                    pass
