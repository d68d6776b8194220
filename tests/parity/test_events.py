"""``layerstore events``: the log as a stream of JSON lines, followed as it grows and
resumed from an LSN cursor without losing or repeating an event, across segments."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eventstore.opener import open_store
from tests.cli.support import REPO, cli_env, fails, ok


def events_json(root: Path, *args: str) -> list[dict]:
    return [json.loads(line) for line in ok(root, "events", "--json", *args).splitlines()]


class Follower:
    """``layerstore events --follow --json`` in a child process, its lines in a queue."""

    def __init__(self, root: Path, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventstore.cli", "--root", str(root), "events", "--follow", "--json", *args],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def take(self, count: int, timeout: float = 30) -> list[dict]:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                got.append(self.lines.get(timeout=max(0.05, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"only {len(got)} of {count} events arrived: {got}")
        return got

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_events_print_the_log_as_json_lines(root: Path):
    layer = ok(root, "create-layer", driver="vfs").strip()
    ok(root, "hold", "--lease", "a", layer)
    events = events_json(root)
    assert [e["lsn"] for e in events] == [1, 2, 3]
    assert [e["type"] for e in events] == ["layer-created", "layer-completed", "hold-added"]
    assert events[2]["details"] == {"holder": {"lease": "a"}} and events[2]["layer"] == layer
    assert events == [json.loads(line) for line in ok(root, "--json", "history").splitlines()]
    assert [e["lsn"] for e in events_json(root, "--since", "3")] == [3]
    assert len(events_json(root, "--since", "10m")) == 3
    assert events_json(root, "--since", "2999-01-01T00:00:00Z") == []
    assert [e["type"] for e in events_json(root, "--type", "hold-added")] == ["hold-added"]
    assert len(ok(root, "events").splitlines()) == 3


def test_events_on_a_root_without_a_store(tmp_path: Path):
    assert "no layer store" in fails(tmp_path / "nothing", 1, "events")
    assert not (tmp_path / "nothing").exists()


def test_follow_streams_what_is_appended_and_resumes_from_a_cursor(root: Path):
    layer = ok(root, "create-layer", driver="vfs").strip()
    follower = Follower(root)
    try:
        assert [e["lsn"] for e in follower.take(2)] == [1, 2]
        ok(root, "hold", "--lease", "live", layer)
        ok(root, "mount", layer)
        assert [e["type"] for e in follower.take(2)] == ["hold-added", "layer-mounted"]
    finally:
        follower.stop()
    cursor = 4  # the last LSN shipped
    ok(root, "umount", layer)
    ok(root, "release", "--lease", "live", layer)
    resumed = Follower(root, "--since", str(cursor + 1))
    try:
        assert [(e["lsn"], e["type"]) for e in resumed.take(2)] == [(5, "layer-unmounted"), (6, "hold-released")]
        time.sleep(0.3)
        assert resumed.lines.empty()  # nothing twice
    finally:
        resumed.stop()


def test_follow_crosses_into_new_segments_losing_nothing(root: Path):
    with open_store(root, "vfs", segment_size=2048) as store:
        layer = store.create()
        follower = Follower(root)
        try:
            follower.take(2)
            for i in range(60):  # several segments' worth, appended while it follows
                store.hold(layer, lease=f"lease-{i}")
            segments = [n for n in os.listdir(root / "log") if n.endswith(".wal")]
            assert len(segments) > 3
            got = follower.take(60)
            assert [e["lsn"] for e in got] == list(range(3, 63))
            assert [e["details"]["holder"]["lease"] for e in got] == [f"lease-{i}" for i in range(60)]
        finally:
            follower.stop()


def wait_for_lines(path: Path, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text.count("\n") >= count:
                return [json.loads(line) for line in text.splitlines()]
        time.sleep(0.05)
    pytest.fail(f"{path} did not reach {count} lines: {path.read_text() if path.exists() else 'missing'}")


def test_the_shipping_script_resumes_without_loss_or_repeat(root: Path, tmp_path: Path):
    import signal

    out = tmp_path / "log" / "events.jsonl"
    env = {**cli_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [str(REPO / "tools" / "events-to-file.sh"), str(out), "--root", str(root)]
    layer = ok(root, "create-layer", driver="vfs").strip()

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.PIPE)

    shipper = start()
    try:
        wait_for_lines(out, 2)
        ok(root, "hold", "--lease", "x", layer)
        wait_for_lines(out, 3)
    finally:
        os.killpg(shipper.pid, signal.SIGKILL)
        shipper.wait(30)
    with open(out, "a") as f:
        f.write('{"lsn": 4, "time": "torn')  # killed in the middle of a line
    ok(root, "release", "--lease", "x", layer)
    ok(root, "mount", layer)
    shipper = start()
    try:
        lines = wait_for_lines(out, 5)
    finally:
        os.killpg(shipper.pid, signal.SIGKILL)
        shipper.wait(30)
    assert [e["lsn"] for e in lines] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in lines[3:]] == ["hold-released", "layer-mounted"]
