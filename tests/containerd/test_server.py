"""``layerstore serve --containerd`` as a process: a graceful stop finishes the call in
flight, the socket and the store are claimed once, a dead server's socket is replaced,
and a server killed with SIGKILL in the middle of a call loses nothing: its restart
(a writer open) finishes or undoes what it left."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path

import grpc
import pytest

from eventstore.containerd import keys
from eventstore.store import LayerStore
from tests.cli.support import cli, ok, ok_json, ok_json_lines
from tests.recovery.support import overlay_or_skip
from tests.store.support import unmount_everything_under

from .client import Client, code
from .process import ServerProcess, wait_for


@pytest.fixture
def start(tmp_path: Path, socket_dir: Path):
    """Start a ``layerstore serve`` (vfs unless told); every one is killed afterwards."""
    started: list[ServerProcess] = []

    def run(root: Path | None = None, sock: Path | None = None, driver: str = "vfs", **kwargs) -> ServerProcess:
        server = ServerProcess(root or tmp_path / "store", sock or socket_dir / "s.sock", driver, **kwargs)
        started.append(server)
        return server

    yield run
    for server in started:
        server.kill()
    unmount_everything_under(tmp_path)


@pytest.fixture(params=["vfs", "overlay"])
def driver(request, tmp_path: Path) -> str:
    if request.param == "overlay":
        overlay_or_skip(tmp_path)
    return request.param


def incomplete_layers(root: Path) -> list[dict]:
    return [layer for layer in ok_json(root, "layers", driver=None) if layer["incomplete"]]


def in_background(call, *args) -> tuple[threading.Thread, list]:
    """Run ``call`` in a thread; the list gets its result or its RpcError."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call(*args))
        except grpc.RpcError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def one_error_line(server: ServerProcess) -> str:
    lines = server.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerstore: ") and lines[0].isprintable(), lines
    return lines[0]


# --- stopping ---------------------------------------------------------------------------------

def test_sigterm_lets_the_call_in_flight_finish_then_exits_cleanly(start, tmp_path):
    server = start(failpoints="store.create.after-driver=sleep:1.5").wait_ready()
    client = Client(server.socket_path)
    thread, outcome = in_background(client.prepare, "default/1/k")
    wait_for(lambda: server.passed("store.create.after-driver"), what="the prepare to be under way")
    server.signal(signal.SIGTERM)
    thread.join(30)
    client.close()
    assert outcome and isinstance(outcome[0], list), outcome  # mounts: the call succeeded
    assert server.wait() == 0
    assert not server.socket_path.exists()
    assert "stopping: finishing the calls in flight" in server.stderr and server.stderr.endswith("stopped\n")
    assert incomplete_layers(server.root) == []
    assert ok(server.root, "check", driver=None) == "ok\n"
    again = start().wait_ready()
    with_client = Client(again.socket_path)
    assert with_client.stat("default/1/k").name == "default/1/k"
    with_client.close()


def test_sigint_stops_it_too(start):
    server = start().wait_ready()
    server.signal(signal.SIGINT)
    assert server.wait() == 0 and not server.socket_path.exists()


# --- claiming the socket and the store -------------------------------------------------------------

def test_a_socket_served_by_another_layerstore_is_refused(start, tmp_path):
    first = start().wait_ready()
    second = start(root=tmp_path / "other")
    assert second.wait() == 3
    assert one_error_line(second) == (f"layerstore: socket {first.socket_path}: already served by pid "
                                      f"{first.proc.pid}")
    client = Client(first.socket_path)
    client.prepare("still-served")
    client.close()


def test_a_socket_another_program_listens_on_is_refused(start, socket_dir):
    path = socket_dir / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        server = start(sock=path)
        assert server.wait() == 3
        assert one_error_line(server) == f"layerstore: socket {path}: in use by a running server"
    assert path.exists()


def test_a_dead_servers_socket_is_replaced(start, socket_dir):
    path = socket_dir / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening, closed: what a killed server leaves
    start(sock=path).wait_ready()
    client = Client(path)
    client.prepare("k")
    client.close()


def test_a_path_that_is_not_a_socket_is_left_alone(start, socket_dir):
    path = socket_dir / "s.sock"
    path.write_text("precious\n")
    server = start(sock=path)
    assert server.wait() == 3
    assert one_error_line(server) == f"layerstore: socket {path}: exists and is not a socket"
    assert path.read_text() == "precious\n"


def test_one_server_per_store(start, socket_dir):
    first = start().wait_ready()
    second = start(sock=socket_dir / "other.sock")
    assert second.wait() == 3
    assert one_error_line(second) == f"layerstore: store {first.root}: already served by pid {first.proc.pid}"


def test_a_socket_path_too_long_for_the_kernel_is_a_usage_error(start, socket_dir):
    server = start(sock=socket_dir / ("x" * 120))
    assert server.wait() == 2
    assert "longer than 107 bytes" in one_error_line(server)


def test_a_store_path_overlay_options_cannot_carry_is_refused_up_front(start, tmp_path):
    overlay_or_skip(tmp_path)
    server = start(root=tmp_path / "a,b", driver="overlay")
    assert server.wait() == 2
    assert "overlay mount options cannot carry" in one_error_line(server)


# --- killed in the middle of a call -------------------------------------------------------------------

def test_killed_mid_prepare_the_half_made_layer_is_removed_at_restart(start, driver):
    server = start(driver=driver, failpoints="store.create.after-driver=sleep:60").wait_ready()
    client = Client(server.socket_path)
    thread, outcome = in_background(client.prepare, "default/1/k")
    wait_for(lambda: server.passed("store.create.after-driver"), what="the prepare to be under way")
    server.kill()
    thread.join(30)
    client.close()
    assert outcome[0].code() == grpc.StatusCode.UNAVAILABLE
    restarted = start(driver=driver).wait_ready()
    assert ok_json(restarted.root, "layers", driver=None) == []
    history = ok_json_lines(restarted.root, "history", "--type", "layer-marked-incomplete", driver=None)
    assert [e["details"]["reason"] for e in history] == ["recovery"]
    assert ok(restarted.root, "check", driver=None) == "ok\n"
    client = Client(restarted.socket_path)
    client.prepare("default/1/k")  # the key is free again
    assert [i.name for i in client.list()] == ["default/1/k"]
    client.close()


@pytest.mark.parametrize("point,committed", [("containerd.commit.before-event", False),
                                              ("containerd.commit.after-event", True)])
def test_killed_mid_commit_the_snapshot_is_active_or_committed_never_between(start, driver, point, committed):
    server = start(driver=driver, failpoints=f"{point}=sleep:60").wait_ready()
    client = Client(server.socket_path)
    client.prepare("active")
    thread, outcome = in_background(client.commit, "committed", "active")
    wait_for(lambda: server.passed(point), what="the commit to reach its failpoint")
    server.kill()
    thread.join(30)
    client.close()
    assert outcome[0].code() == grpc.StatusCode.UNAVAILABLE
    restarted = start(driver=driver).wait_ready()
    client = Client(restarted.socket_path)
    names = {i.name: i.kind for i in client.list()}
    assert names == ({"committed": 3} if committed else {"active": 2})
    if not committed:
        client.commit("committed", "active")
    assert client.stat("committed").kind == 3
    client.close()
    assert ok(restarted.root, "check", driver=None) == "ok\n"


def test_killed_mid_remove_the_delete_is_finished_at_restart(start, driver):
    server = start(driver=driver, failpoints="store.delete.after-mark=sleep:60").wait_ready()
    client = Client(server.socket_path)
    client.prepare("k")
    layer_id = json.loads(cli(server.root, "layers", as_json=True, driver=None).stdout)[0]["id"]
    thread, outcome = in_background(client.remove, "k")
    wait_for(lambda: server.passed("store.delete.after-mark"), what="the remove to be under way")
    server.kill()
    thread.join(30)
    client.close()
    assert outcome[0].code() == grpc.StatusCode.UNAVAILABLE
    restarted = start(driver=driver).wait_ready()
    assert ok_json(restarted.root, "layers", driver=None) == []
    with LayerStore.open(restarted.root, readonly=True) as store:
        assert layer_id not in store.driver.layers() and store.driver.layers() == set()
    assert ok(restarted.root, "check", driver=None) == "ok\n"
    client = Client(restarted.socket_path)
    assert code(client.stat, "k") == grpc.StatusCode.NOT_FOUND
    client.prepare("k")
    client.close()
    assert keys.name_for("k") in {n for layer in ok_json(restarted.root, "layers", driver=None) for n in layer["names"]}
