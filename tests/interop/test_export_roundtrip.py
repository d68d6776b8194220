"""layerstore → ``export-oci`` → OCI layout → skopeo → a fresh containers-storage: the
same layer ids again, and the same tree."""

from __future__ import annotations

import json

import pytest

from eventstore.opener import open_store
from tests.cli.support import ok

from .conftest import mounted_peer
from .peer import COMPRESSION_NAMES, ContainersStorage, requires_peers
from .test_import_vs_containers_storage import our_chain, peer_chain, peer_top
from .tree import differences, implicit_directories, walk

pytestmark = requires_peers


@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_export_then_skopeo_gives_the_same_ids(tmp_path, ours, compression):
    store, top = ours
    layout = tmp_path / "exported"
    manifest_digest = ok(store.root, "export-oci", top, f"{layout}:rt", "--compress", compression,
                         driver="overlay").strip()
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == manifest_digest
    fresh = ContainersStorage(tmp_path / "peer")
    try:
        fresh.copy_from(f"{layout}:rt", "roundtrip:latest")
        assert peer_top(fresh) == top
        manifest = json.loads((layout / "blobs/sha256" / manifest_digest.removeprefix("sha256:")).read_text())
        for rec, layer, desc in zip(our_chain(store, top), peer_chain(fresh, top), manifest["layers"]):
            assert layer["id"] == rec.id
            assert layer["diff-digest"] == rec.diff_digest
            assert layer["diff-size"] == rec.diff_size
            assert layer["compressed-diff-digest"] == desc["digest"]
            assert layer["compressed-size"] == desc["size"]
            assert COMPRESSION_NAMES[layer.get("compression", 0)] == compression
    finally:
        fresh.shutdown()
    assert all(r.hold_refs == 0 for r in store.layers())  # the export's hold is gone


def test_round_trip_tree_equals_the_original(tmp_path, ours, peer, image):
    """The fresh containers-storage mounts the same tree as the one skopeo filled from
    umoci's layout: what layerstore exported is the image, byte for byte in effect."""
    store, top = ours
    layout = tmp_path / "exported"
    ok(store.root, "export-oci", top, f"{layout}:rt", driver="overlay")
    fresh = ContainersStorage(tmp_path / "peer")
    try:
        fresh.copy_from(f"{layout}:rt", "roundtrip:latest")
        with mounted_peer(peer, top) as original_root, mounted_peer(fresh, top) as fresh_root:
            original, original_links = walk(original_root)
            again, again_links = walk(fresh_root)
    finally:
        fresh.shutdown()
    skip_mtime = implicit_directories(image.layer_tars()) | {"."}
    assert differences(again, original, skip_mtime=skip_mtime) == []
    assert again_links == original_links


def test_exported_layout_imports_to_the_same_ids(tmp_path, ours):
    store, top = ours
    layout = tmp_path / "exported"
    ok(store.root, "export-oci", top, str(layout), driver="overlay")  # no tag: "latest"
    again = tmp_path / "again"
    assert ok(again, "import-oci", f"{layout}:latest").strip() == top
    with open_store(again) as fresh:
        assert [(r.id, r.diff_digest) for r in our_chain(fresh, top)] == \
            [(r.id, r.diff_digest) for r in our_chain(store, top)]
