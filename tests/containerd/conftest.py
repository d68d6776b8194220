"""Fixtures for the containerd tests: a store served on a unix socket by an in-process
``Server`` (the same code ``layerstore serve`` runs), a gRPC client on it, and a
teardown that leaves no mount, socket or server behind."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# fstest and test_engine use tests.interop.tree: rewritten asserts there, as its own
# conftest asks, even when these tests import it first
pytest.register_assert_rewrite("tests.interop.tree")

from eventstore.containerd.server import Server  # noqa: E402
from eventstore.opener import open_store  # noqa: E402
from eventstore.store import LayerStore  # noqa: E402
from tests.recovery.support import overlay_or_skip  # noqa: E402
from tests.store.support import unmount_everything_under  # noqa: E402

from .client import Client  # noqa: E402


@dataclass
class Served:
    store: LayerStore
    server: Server
    client: Client
    root: Path
    work: Path  # scratch space for mount points and reference trees


@pytest.fixture
def socket_dir():
    """A short directory for sockets: a unix socket's path holds at most 107 bytes,
    and pytest's temporary paths can be longer."""
    path = Path(tempfile.mkdtemp(prefix="lsc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["vfs", "overlay"])
def driver(request, tmp_path: Path) -> str:
    if request.param == "overlay":
        overlay_or_skip(tmp_path)
    return request.param


@pytest.fixture
def served(tmp_path: Path, socket_dir: Path, driver: str):
    root = tmp_path / "store"
    store = open_store(root, driver)
    server = Server(store, socket_dir / "snapshots.sock", grace=5.0)
    client = None
    try:
        server.start()
        client = Client(server.socket_path)
        yield Served(store, server, client, root, tmp_path / "work")
    finally:
        if client is not None:
            client.close()
        unmount_everything_under(tmp_path)
        server.stop()
        store.close()
