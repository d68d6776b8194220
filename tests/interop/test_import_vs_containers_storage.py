"""The same OCI layout, copied into containers-storage by skopeo and imported by
``layerstore import-oci``: the same layers, the same ids, the same tree."""

from __future__ import annotations

import hashlib
import os

from eventstore.oci import chain_ids
from tests.cli.support import ok

from .conftest import mounted_ours, mounted_peer
from .image import with_media_types
from .peer import COMPRESSION_NAMES, ContainersStorage, requires_peers
from .tree import differences, implicit_directories, walk

pytestmark = requires_peers


def our_chain(store, top: str) -> list:
    chain = []
    layer_id = top
    while layer_id:
        rec = store.lookup(layer_id)
        chain.append(rec)
        layer_id = rec.parent
    return chain[::-1]


def peer_chain(peer: ContainersStorage, top: str) -> list[dict]:
    layers = peer.layers()
    chain = []
    layer_id = top
    while layer_id:
        chain.append(layers[layer_id])
        layer_id = layers[layer_id].get("parent")
    return chain[::-1]


def peer_top(peer: ContainersStorage) -> str:
    """The one layer no other layer names as parent."""
    layers = peer.layers()
    parents = {layer.get("parent") for layer in layers.values()}
    (top,) = [layer_id for layer_id in layers if layer_id not in parents]
    return top


def test_chain_ids_are_the_ids_containers_storage_gives(image, peer):
    diff_ids = image.config()["rootfs"]["diff_ids"]
    assert len(diff_ids) == 4
    expected = [diff_ids[0].removeprefix("sha256:")]
    for diff_id in diff_ids[1:]:
        expected.append(hashlib.sha256(f"{expected[-1]}+{diff_id.removeprefix('sha256:')}".encode()).hexdigest())
    assert chain_ids(diff_ids) == expected
    assert [layer["id"] for layer in peer_chain(peer, peer_top(peer))] == expected


def test_same_layer_ids_and_parents(ours, peer):
    store, top = ours
    assert top == peer_top(peer)
    assert [(r.id, r.parent or None) for r in our_chain(store, top)] == \
        [(layer["id"], layer.get("parent")) for layer in peer_chain(peer, top)]
    assert len(store.layers()) == len(peer.layers()) == 4


def test_same_digests_sizes_and_compression(ours, peer, image):
    store, top = ours
    theirs = peer_chain(peer, top)
    for rec, layer, desc in zip(our_chain(store, top), theirs, image.manifest()["layers"]):
        assert rec.compressed_digest == layer["compressed-diff-digest"] == desc["digest"]
        assert rec.compressed_size == layer["compressed-size"] == desc["size"]
        assert rec.diff_digest == layer["diff-digest"]
        assert rec.diff_size == layer["diff-size"]
        assert rec.compression == COMPRESSION_NAMES[layer.get("compression", 0)] == "gzip"
        assert not rec.incomplete and rec.hold_refs == 0  # the import's holds are gone
    assert store.lookup("interop").id == top


def test_mounted_top_layer_is_the_same_tree(ours, peer, image):
    store, top = ours
    with mounted_ours(store, top) as our_root, mounted_peer(peer, top) as peer_root:
        our_tree, our_links = walk(our_root)
        peer_tree, peer_links = walk(peer_root)
    implicit = implicit_directories(image.layer_tars())
    assert implicit, "the image should have directories a layer only implies"
    # the root is compared in test_the_layer_root below; implicit dirs' mtimes are the
    # moment of extraction in each store
    assert differences(our_tree, peer_tree, skip_mtime=implicit, skip={"."}) == []
    assert our_links == peer_links
    _the_image_has_what_it_should(our_tree, our_links)
    for path in implicit:  # the same mode and owner, and a time of extraction
        assert our_tree[path]["mode"] == peer_tree[path]["mode"] == "0o755"


def _the_image_has_what_it_should(tree: dict, links: list) -> None:
    """The fixture really exercises each case (a builder that silently lost one would
    make the comparison above prove less)."""
    from .image import LONG_DIR, LONG_TARGET

    assert "etc/a" not in tree and "opq/old" not in tree and "opq/sub" not in tree  # whiteouts
    assert sorted(p for p in tree if p.startswith("opq/")) == ["opq/only-this"]  # umoci insert --opaque
    assert sorted(p for p in tree if p.startswith("etc/")) == ["etc/fresh"]  # opaque
    assert tree["etc/fresh"]["xattrs"] == {"user.layer": b"three"}
    assert tree["d2f"]["type"] == "file" and tree["f2d"]["type"] == "dir"
    assert "data/text.txt" not in tree and "data/empty-dir" not in tree
    assert tree["bin/tool"]["mode"] == "0o6755" and tree["shared"]["mode"] == "0o2775"
    assert tree["tmp"]["mode"] == "0o1777"
    assert tree["dev/null"]["rdev"] == (1, 3) and tree["dev/loop0"]["type"] == "blockdev"
    assert tree["fifo"]["type"] == "fifo"
    assert tree["links/long-target"]["target"] == LONG_TARGET
    assert tree["links/dangling"]["target"] == "nowhere"
    assert tree["xattrs/file"]["xattrs"] == {"trusted.layerstore": b"\x00binary\xff", "user.comment": b"changed"}
    assert tree["etc"]["uid"] == 0 and tree["data/random.bin"]["size"] == 2 << 20
    assert len(os.path.join(LONG_DIR, "a-file-with-a-long-path-name.txt")) > 100
    assert os.path.join(LONG_DIR, "a-file-with-a-long-path-name.txt") in tree
    assert ["hl/link1", "hl/link2", "hl/orig"] in links
    assert "ünïcødé/名前.txt" in tree


def test_the_layer_root(ours, peer, image):
    """The one known difference (docs/interop.md): containers-storage does not apply a
    tar's entry for the layer root and leaves the 0555 root its driver makes;
    layerstore applies the entry and otherwise keeps its own 0755 root (the top layer
    here, from umoci insert, has none). Both are pinned so a change on either side
    is seen."""
    store, top = ours
    with mounted_ours(store, top) as our_root, mounted_peer(peer, top) as peer_root:
        our_tree, _ = walk(our_root)
        peer_tree, _ = walk(peer_root)
    ours_root, theirs_root = our_tree["."], peer_tree["."]
    assert (ours_root["uid"], ours_root["gid"], ours_root["xattrs"]) == (theirs_root["uid"], theirs_root["gid"],
                                                                         theirs_root["xattrs"])
    assert theirs_root["mode"] == "0o555"
    assert ours_root["mode"] == "0o755"


def test_media_types_zstd_uncompressed_and_docker_names(tmp_path, ours, image):
    """The image re-encoded (Docker's gzip name, zstd, uncompressed): the same ids as
    the gzip original in both stores, and the blobs' own digests as compressed digests."""
    store, top = ours
    variant = with_media_types(image, tmp_path / "variant", [
        ("gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("none", "application/vnd.oci.image.layer.v1.tar"),
        ("none", "application/vnd.docker.image.rootfs.diff.tar"),
    ])
    peer = ContainersStorage(tmp_path / "peer")
    root = tmp_path / "layerstore"
    try:
        peer.copy_from(variant.ref, "variant:latest")
        variant_top = ok(root, "import-oci", variant.ref, driver="overlay").strip()
        assert variant_top == top == peer_top(peer)
        from eventstore.opener import open_store

        with open_store(root) as fresh:
            for rec, layer, desc, original in zip(our_chain(fresh, top), peer_chain(peer, top),
                                                  variant.manifest()["layers"], our_chain(store, top)):
                assert rec.compressed_digest == layer["compressed-diff-digest"] == desc["digest"]
                assert rec.compressed_size == layer["compressed-size"] == desc["size"]
                assert rec.diff_digest == layer["diff-digest"] == original.diff_digest
                assert rec.compression == COMPRESSION_NAMES[layer.get("compression", 0)]
            assert [r.compression for r in our_chain(fresh, top)] == ["gzip", "zstd", "none", "none"]
    finally:
        peer.shutdown()
