"""Fixtures shared by the interop tests: the umoci-built image, containers-storage
holding it (copied by skopeo), and a layerstore holding it (imported by the CLI).
Built once per session: each step costs a few tenths of a second, the image a few MB."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from eventstore.opener import open_store
from eventstore.store import LayerStore
from tests.cli.support import ok
from tests.store.support import unmount_everything_under

from .image import Image, build
from .peer import ContainersStorage

pytest.register_assert_rewrite("tests.interop.tree")


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Image:
    return build(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def peer(tmp_path_factory, image):
    """containers-storage with the image, as skopeo copies it."""
    store = ContainersStorage(tmp_path_factory.mktemp("containers-storage"))
    try:
        store.copy_from(image.ref, "interop:latest")
        yield store
    finally:
        store.shutdown()


@pytest.fixture(scope="session")
def ours(tmp_path_factory, image):
    """A layerstore (overlay) with the image, imported through the CLI; (store, top id)."""
    root = tmp_path_factory.mktemp("layerstore")
    try:
        top = ok(root, "import-oci", image.ref, "--name", "interop", driver="overlay").strip()
        store = open_store(root)
        try:
            yield store, top
        finally:
            store.close()
    finally:
        unmount_everything_under(root)


@contextmanager
def mounted_peer(peer: ContainersStorage, layer_id: str):
    path = peer.mount(layer_id)
    try:
        yield path
    finally:
        peer.unmount(layer_id)


@contextmanager
def mounted_ours(store: LayerStore, layer_id: str):
    path = Path(store.mount(layer_id))
    try:
        yield path
    finally:
        store.umount(layer_id)
