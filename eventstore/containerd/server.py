"""The server's life: claim the store and the socket, serve, stop gracefully.

One server per store root (``<root>/containerd.lock``) and per socket (``SOCKET.lock``),
both flock'd for the server's life and naming its pid. A socket file left by a dead
server is replaced; one a live server answers on, or a path that is not a socket, is
refused. SIGTERM or SIGINT stops it: no new calls, the calls in flight finish, the
snapshotter waits for the last store operation, the socket is removed; the caller
closes the store.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import stat
import sys
import threading
from concurrent import futures
from pathlib import Path

from eventstore import errors
from eventstore.containerd.snapshotter import Snapshotter

log = logging.getLogger("layerstore.containerd")

GRACE_SECONDS = 30.0
WORKERS = 4
#: sun_path holds 108 bytes, its terminating NUL included
MAX_SOCKET_PATH = 107


class ServerBusy(errors.RuleViolation):
    """The socket or the store is already served by another process."""


def _flock(path: Path, what: str) -> int:
    """An exclusive lock on ``path`` for the server's life (its fd); the pid inside names us."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ServerBusy(f"{what}: already served by pid {holder}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _answers(path: Path) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(os.fspath(path))
        except OSError:  # refused (nobody listens), gone, or not ours to reach
            return False
    return True


def _claim_socket(path: Path) -> None:
    """Make ``path`` free for our socket: remove a dead server's, refuse anything else."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise errors.InvalidArgument(f"socket {path}: path longer than {MAX_SOCKET_PATH} bytes")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServerBusy(f"socket {path}: exists and is not a socket")
    if _answers(path):
        raise ServerBusy(f"socket {path}: in use by a running server")
    os.unlink(path)


class Server:
    """The gRPC server of one store on one socket; ``start``, then ``stop``."""

    def __init__(self, store, socket_path: str | os.PathLike, grace: float = GRACE_SECONDS):
        self.store = store
        self.socket_path = Path(socket_path).absolute()
        self.grace = grace
        self.snapshotter = Snapshotter(store)
        self.stopping = threading.Event()
        self.exit_code = 0
        self._grpc = None
        self._lock_fds: list[int] = []
        self._socket_inode: int | None = None

    def start(self) -> None:
        import grpc

        from eventstore.containerd.api import snapshots_pb2_grpc
        from eventstore.containerd.service import SnapshotsService

        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_fds.append(_flock(self.store.root / "containerd.lock", f"store {self.store.root}"))
            self._lock_fds.append(_flock(self.socket_path.with_name(self.socket_path.name + ".lock"),
                                         f"socket {self.socket_path}"))
            _claim_socket(self.socket_path)
            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="snapshots"))
            snapshots_pb2_grpc.add_SnapshotsServicer_to_server(
                SnapshotsService(self.snapshotter, on_fatal=self._fatal), self._grpc)
            if not self._grpc.add_insecure_port(f"unix:{self.socket_path}"):
                raise errors.StorageError(f"socket {self.socket_path}: cannot listen there")
            self._grpc.start()
        except BaseException:
            self._release()
            raise
        self._socket_inode = os.lstat(self.socket_path).st_ino
        os.chmod(self.socket_path, 0o660)

    def _fatal(self, why: str) -> None:
        log.error("the store can no longer write (%s): stopping", why)
        self.exit_code = 1
        self.stopping.set()

    def stop(self) -> None:
        """No new calls; the ones in flight finish (cut off after ``grace`` seconds); the
        snapshotter waits for the store operation under way; the socket goes."""
        if self._grpc is not None:
            self._grpc.stop(self.grace).wait()
            self._grpc = None
        self.snapshotter.close()
        self._release()

    def _release(self) -> None:
        if self._socket_inode is not None:
            try:
                if os.lstat(self.socket_path).st_ino == self._socket_inode:
                    os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
            self._socket_inode = None
        for fd in self._lock_fds:
            os.close(fd)  # closing releases the flock; the file stays (unlinking it would race)
        self._lock_fds.clear()


def _notify_systemd(state: bytes) -> None:
    """sd_notify: tell systemd (Type=notify) how we are; nothing without NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], exc.strerror)


def serve(store, socket_path: str | os.PathLike) -> int:
    """Serve ``store`` on ``socket_path`` until SIGTERM or SIGINT; the exit code."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("layerstore: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if os.environ.get("LAYERSTORE_DEBUG") else logging.INFO)
    try:
        return _serve(store, socket_path)
    finally:
        log.removeHandler(handler)


def _serve(store, socket_path: str | os.PathLike) -> int:
    server = Server(store, socket_path)
    server.start()
    previous = {sig: signal.signal(sig, lambda *_: server.stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info("serving containerd snapshots on %s (store %s, driver %s, pid %d)",
                 server.socket_path, store.root, store.driver_name, os.getpid())
        _notify_systemd(b"READY=1")
        while not server.stopping.wait(1.0):
            pass
        _notify_systemd(b"STOPPING=1")
        log.info("stopping: finishing the calls in flight")
    finally:
        server.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
    log.info("stopped")
    return server.exit_code
