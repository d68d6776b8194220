"""import-oci and export-oci without the peers: layouts written here, the vfs driver.

(tests/interop/ proves the same against containers-storage, skopeo and umoci.)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from eventstore import errors
from eventstore.oci import (
    ImageNotFound, ImageRejected, Platform, chain_ids, export_oci, import_oci, parse_platform, parse_reference,
)
from eventstore.opener import open_store
from eventstore.store import LayerStore
from tests.cli.support import fails, ok
from tests.store.support import snapshot

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


# --- writing layouts ------------------------------------------------------------------

def layer_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def compress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(raw, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


class LayoutWriter:
    """An OCI layout under construction: blobs by content, images, index.json."""

    def __init__(self, path: Path):
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.index: list[dict] = []
        self.write_index()

    def blob(self, data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (self.path / "blobs" / "sha256" / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def json_blob(self, value, media_type: str) -> dict:
        return {"mediaType": media_type, **self.blob(json.dumps(value).encode())}

    def image(self, layers: list[dict[str, bytes]], *, how: str = "gzip", media_type: str = OCI_GZIP,
              arch: str = "amd64", diff_ids: list[str] | None = None) -> dict:
        """An image manifest descriptor (not yet in index.json)."""
        raws = [layer_tar(files) for files in layers]
        descs = [{"mediaType": media_type, **self.blob(compress(raw, how))} for raw in raws]
        config = {"architecture": arch, "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": diff_ids or ["sha256:" + hashlib.sha256(r).hexdigest() for r in raws]}}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": self.json_blob(config, OCI_CONFIG), "layers": descs}
        return self.json_blob(manifest, OCI_MANIFEST)

    def tag(self, desc: dict, tag: str | None, **extra) -> dict:
        entry = dict(desc, **extra)
        if tag:
            entry["annotations"] = {REF_NAME: tag}
        self.index.append(entry)
        self.write_index()
        return entry

    def write_index(self) -> None:
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.index}))

    def manifest(self, desc: dict) -> dict:
        return json.loads(self.blob_path(desc["digest"]).read_bytes())

    def rewrite_manifest(self, tag: str, change) -> dict:
        """Change the manifest tagged ``tag`` (``change`` edits it in place) and point
        the tag at the new one."""
        (entry,) = [d for d in self.index if d.get("annotations", {}).get(REF_NAME) == tag]
        manifest = self.manifest(entry)
        change(manifest)
        entry.update(self.json_blob(manifest, entry["mediaType"]))
        self.write_index()
        return manifest


THREE = [{"a.txt": b"one\n"}, {"b.txt": b"two\n" * 1000}, {"c.txt": b"three\n"}]


@pytest.fixture
def layout(tmp_path) -> LayoutWriter:
    return LayoutWriter(tmp_path / "layout")


@pytest.fixture
def image(layout) -> dict:
    """Three layers tagged "v1"; its manifest."""
    return layout.manifest(layout.tag(layout.image(THREE), "v1"))


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "store", "vfs") as s:
        yield s


def nothing_half_made(store: LayerStore) -> None:
    layers = store.layers()
    assert not [r.id for r in layers if r.incomplete]
    assert sorted(store.driver.layers()) == sorted(r.id for r in layers)
    tarsplits = store.root / "tarsplit"
    on_disk = sorted(p.name.removesuffix(".tar-split") for p in tarsplits.iterdir()) if tarsplits.exists() else []
    assert on_disk == sorted(r.id for r in layers if r.has_tarsplit)


def diff_ids(layout: LayoutWriter, manifest: dict) -> list[str]:
    config = json.loads(layout.blob_path(manifest["config"]["digest"]).read_bytes())
    return config["rootfs"]["diff_ids"]


# --- ids ------------------------------------------------------------------------------------

def test_chain_ids_match_the_ones_containers_storage_gave():
    # recorded from containers-storage 1.43 after `skopeo copy` of a two-layer image
    diff = ["sha256:a2fe9de4153db7e307b50a39c0501d5fa9c1a0e49db11245f3c64768a12000a4",
            "sha256:df437aaccbf44e134da5103fadc854628e00d14d4654529283142e8ded4f6d85"]
    assert chain_ids(diff) == ["a2fe9de4153db7e307b50a39c0501d5fa9c1a0e49db11245f3c64768a12000a4",
                               "f3fd71785c32b472fa9686f1da0dec58eaeabc83a726ce8e03218daf7c90a6b6"]


def test_layers_get_chain_ids_and_parents(store, layout, image):
    result = import_oci(store, layout.path, "v1")
    ids = chain_ids(diff_ids(layout, image))
    assert [layer.id for layer in result.layers] == ids and result.top == ids[-1]
    assert [store.lookup(i).parent for i in ids] == [None, ids[0], ids[1]]
    for rec, desc, diff in zip(map(store.lookup, ids), image["layers"], diff_ids(layout, image)):
        assert (rec.compressed_digest, rec.compressed_size, rec.diff_digest) == (desc["digest"], desc["size"], diff)
        assert rec.hold_refs == 0 and not rec.incomplete
    assert b"".join(store.diff(ids[1])) == layer_tar(THREE[1])


# --- choosing the image -------------------------------------------------------------------

def test_a_tag_picks_its_image(store, layout):
    layout.tag(layout.image([{"x": b"first"}]), "one")
    two = layout.manifest(layout.tag(layout.image([{"x": b"second"}]), "two"))
    assert import_oci(store, layout.path, "two").top == chain_ids(diff_ids(layout, two))[-1]
    assert len(store.layers()) == 1


def test_no_tag_takes_the_only_image(store, layout, image):
    assert import_oci(store, layout.path).top == chain_ids(diff_ids(layout, image))[-1]


def test_no_tag_among_several_images_names_the_tags(store, layout, image):
    layout.tag(layout.image([{"x": b"other"}]), "v2")
    with pytest.raises(ImageNotFound, match="name one of v1, v2"):
        import_oci(store, layout.path)


def test_an_unknown_tag_lists_the_tags(store, layout, image):
    with pytest.raises(ImageNotFound, match=r"no image tagged 'v9' \(tags: v1\)"):
        import_oci(store, layout.path, "v9")
    assert store.layers() == []


def _multi_arch(layout: LayoutWriter) -> dict[str, dict]:
    images = {arch: layout.image([{"arch": arch.encode()}], arch=arch) for arch in ("arm64", "amd64", "s390x")}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        dict(desc, platform={"os": "linux", "architecture": arch}) for arch, desc in images.items()]}
    layout.tag(layout.json_blob(index, OCI_INDEX), "multi")
    return {arch: layout.manifest(desc) for arch, desc in images.items()}


def test_an_image_index_gives_linux_amd64_by_default(store, layout):
    images = _multi_arch(layout)
    assert import_oci(store, layout.path, "multi").top == chain_ids(diff_ids(layout, images["amd64"]))[-1]


def test_platform_picks_another_image(store, layout):
    images = _multi_arch(layout)
    top = import_oci(store, layout.path, "multi", platform=Platform("linux", "arm64")).top
    assert top == chain_ids(diff_ids(layout, images["arm64"]))[-1]
    with pytest.raises(ImageNotFound, match="no image for platform linux/riscv64"):
        import_oci(store, layout.path, "multi", platform=Platform("linux", "riscv64"))


def test_an_image_index_without_the_platform_fails(store, layout):
    arm = layout.image([{"arch": b"arm64"}], arch="arm64")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [dict(arm, platform={"os": "linux", "architecture": "arm64"})]}
    layout.tag(layout.json_blob(index, OCI_INDEX), "arm-only")
    with pytest.raises(ImageNotFound, match=r"no image for platform linux/amd64 \(has linux/arm64\)"):
        import_oci(store, layout.path, "arm-only")
    assert import_oci(store, layout.path, "arm-only", platform=Platform("linux", "arm64")).top


def test_platform_must_match_a_single_image(store, layout, image):
    with pytest.raises(ImageNotFound, match="is for linux/amd64, not linux/arm64"):
        import_oci(store, layout.path, "v1", platform=Platform("linux", "arm64"))


def test_parse_reference_and_platform(tmp_path):
    assert parse_reference("dir:tag") == (Path("dir"), "tag")
    assert parse_reference("dir") == (Path("dir"), None)
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_reference(str(odd)) == (odd, None)
    assert parse_platform("linux/arm/v7") == Platform("linux", "arm", "v7")
    for bad in ("linux", "linux/", "a/b/c/d"):
        with pytest.raises(errors.InvalidArgument):
            parse_platform(bad)


# --- media types --------------------------------------------------------------------------

@pytest.mark.parametrize("how, media_type", [
    ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
    ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("none", "application/vnd.oci.image.layer.v1.tar"),
    ("gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ("none", "application/vnd.docker.image.rootfs.diff.tar"),
    ("zstd", "application/vnd.docker.image.rootfs.diff.tar.zstd"),
    ("gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
    ("gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
])
def test_layer_media_types(store, layout, how, media_type):
    manifest = layout.manifest(layout.tag(layout.image(THREE, how=how, media_type=media_type), "t"))
    result = import_oci(store, layout.path, "t")
    assert [store.lookup(i.id).compression for i in result.layers] == [how] * 3
    assert [i.diff_digest for i in result.layers] == diff_ids(layout, manifest)


def test_docker_schema2_manifest(store, layout):
    desc = layout.image(THREE, media_type="application/vnd.docker.image.rootfs.diff.tar.gzip")
    manifest = layout.manifest(desc)
    manifest["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    manifest["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    layout.tag(layout.json_blob(manifest, manifest["mediaType"]), "docker")
    assert import_oci(store, layout.path, "docker").top == chain_ids(diff_ids(layout, manifest))[-1]


# --- present layers and holds ---------------------------------------------------------------

def test_a_whiteout_below_a_file_is_ignored(store, layout):
    """umoci writes ``rm -rf d; echo > d`` as the file d, then d/.wh.inner: nothing can
    be below a file, so containers-storage skips the whiteout, and so do we."""
    replaced = {"d": b"now a file\n", "d/.wh.inner": b""}
    layout.tag(layout.image([{"d/inner/c": b"c\n"}, replaced]), "t")
    top = import_oci(store, layout.path, "t").top
    assert (store.driver.diff_path(top) / "d").read_bytes() == b"now a file\n"
    assert b"".join(store.diff(top)) == layer_tar(replaced)


def test_a_tar_that_stops_inside_the_last_padding_is_read(store, layout):
    """umoci 0.4.7's ``insert`` writes no padding after the last file and no end
    blocks; containers-storage reads such a layer, with the bytes as they are."""
    whole = layer_tar({"etc/.wh..wh..opq": b"", "etc/fresh": b"fresh\n"})
    cut = whole[:whole.index(b"fresh\n") + 6]
    raw = {"mediaType": OCI_GZIP, **layout.blob(gzip.compress(cut, mtime=0))}
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(cut).hexdigest()]}}
    manifest = {"schemaVersion": 2, "config": layout.json_blob(config, OCI_CONFIG), "layers": [raw]}
    layout.tag(layout.json_blob(manifest, OCI_MANIFEST), "cut")
    top = import_oci(store, layout.path, "cut").top
    assert store.lookup(top).diff_size == len(cut) and len(cut) % 512
    assert b"".join(store.diff(top)) == cut
    assert (store.driver.diff_path(top) / "etc/fresh").read_bytes() == b"fresh\n"


def test_a_present_layer_is_not_read_again(store, layout, image):
    first = import_oci(store, layout.path, "v1")
    for desc in image["layers"]:  # the blobs are not needed any more
        layout.blob_path(desc["digest"]).unlink()
    again = import_oci(store, layout.path, "v1")
    assert again.top == first.top
    assert [layer.imported for layer in first.layers] == [True] * 3
    assert [layer.imported for layer in again.layers] == [False] * 3
    assert [r.hold_refs for r in store.layers()] == [0, 0, 0]


def test_only_missing_layers_are_imported(store, layout, image):
    ids = chain_ids(diff_ids(layout, image))
    with open(layout.blob_path(image["layers"][0]["digest"]), "rb") as blob:
        store.create(ids[0], content=blob)
    assert [layer.imported for layer in import_oci(store, layout.path, "v1").layers] == [False, True, True]
    assert store.lookup(ids[0]).hold_refs == 0


def test_the_chain_is_held_while_the_import_runs(tmp_path, store, layout, image):
    ids = chain_ids(diff_ids(layout, image))
    seen = []

    def progress(step):
        def report(done: int) -> None:
            if step.number == 3 and not seen:
                with open_store(store.root) as other:  # another handle, as another process would be
                    seen.append([other.lookup(i).hold_refs for i in ids[:2]])
                    with pytest.raises(errors.LayerInUse):
                        other.delete(ids[1])
        return report

    import_oci(store, layout.path, "v1", progress=progress)
    assert seen == [[1, 1]]
    assert [store.lookup(i).hold_refs for i in ids] == [0, 0, 0]


def test_holds_go_when_an_import_fails(store, layout, image):
    blob = layout.blob_path(image["layers"][2]["digest"])
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes (gzip's own crc may catch it first)
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageRejected, match="layer 3/3"):
        import_oci(store, layout.path, "v1")
    ids = chain_ids(diff_ids(layout, image))
    assert [r.id for r in store.layers()] == ids[:2]
    assert [r.hold_refs for r in store.layers()] == [0, 0]
    nothing_half_made(store)


def test_name_names_the_top_layer(store, layout, image):
    top = import_oci(store, layout.path, "v1", name="app").top
    assert store.lookup("app").id == top
    assert import_oci(store, layout.path, "v1", name="app").top == top  # again: fine


def test_a_name_held_by_another_layer_fails_first(store, layout, image):
    store.create(names=["app"])
    before = snapshot(store)
    with pytest.raises(errors.NameInUse):
        import_oci(store, layout.path, "v1", name="app")
    assert snapshot(store) == before


# --- bad input ------------------------------------------------------------------------------

def _corrupt_layer_content(layout, manifest):
    blob = layout.blob_path(manifest["layers"][1]["digest"])
    blob.write_bytes(gzip.compress(layer_tar({"b.txt": b"not what the digest says"}), mtime=0)
                     .ljust(blob.stat().st_size, b"\0")[:blob.stat().st_size])


def _wrong_diff_id(layout, manifest):
    config_path = layout.blob_path(manifest["config"]["digest"])
    config = json.loads(config_path.read_bytes())
    config["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
    layout.rewrite_manifest("v1", lambda m: m["config"].update(layout.json_blob(config, OCI_CONFIG)))


def _truncated_gzip(layout, manifest):
    blob = layout.blob_path(manifest["layers"][1]["digest"])
    cut = blob.read_bytes()[:-20]
    blob.unlink()
    layout.rewrite_manifest("v1", lambda m: m["layers"][1].update(layout.blob(cut)))


@pytest.mark.parametrize("damage, message, kept", [
    (_corrupt_layer_content, "layer 2/3 .*compressed digest mismatch|layer 2/3 .*refused", 1),
    (_wrong_diff_id, "layer 2/3 .*diff digest mismatch", 1),
    (_truncated_gzip, "layer 2/3 .*truncated gzip", 1),
])
def test_bad_layer_content_keeps_the_layers_below(store, layout, image, damage, message, kept):
    damage(layout, image)
    with pytest.raises(ImageRejected, match=message):
        import_oci(store, layout.path, "v1")
    assert len(store.layers()) == kept
    nothing_half_made(store)


def _drop_blob(layout, manifest):
    layout.blob_path(manifest["layers"][2]["digest"]).unlink()


def _wrong_size(layout, manifest):
    layout.rewrite_manifest("v1", lambda m: m["layers"][2].update(size=m["layers"][2]["size"] + 1))


def _manifest_not_json(layout, manifest):
    (entry,) = layout.index
    entry.update(layout.blob(b"{this is not json"))
    layout.write_index()


def _manifest_digest_mismatch(layout, manifest):
    layout.blob_path(layout.index[0]["digest"]).write_bytes(json.dumps(manifest).encode() + b" ")


def _unknown_media_type(layout, manifest):
    layout.rewrite_manifest("v1", lambda m: m["layers"][2].update(mediaType="application/x-mystery"))


def _config_not_image(layout, manifest):
    layout.rewrite_manifest("v1", lambda m: m["config"].update(mediaType="application/vnd.example+json"))


def _too_few_diff_ids(layout, manifest):
    layout.rewrite_manifest("v1", lambda m: m["layers"].append(m["layers"][0]))


def _no_layers(layout, manifest):
    config = json.loads(layout.blob_path(manifest["config"]["digest"]).read_bytes())
    config["rootfs"]["diff_ids"] = []
    layout.rewrite_manifest("v1", lambda m: (m["layers"].clear(),
                                             m["config"].update(layout.json_blob(config, OCI_CONFIG))))


def _sha512(layout, manifest):
    layout.rewrite_manifest("v1", lambda m: m["layers"][0].update(digest="sha512:" + "ab" * 64))


def _path_in_digest(layout, manifest):
    layout.rewrite_manifest("v1", lambda m: m["layers"][0].update(digest="sha256:../../../etc/passwd"))


def _schema1(layout, manifest):
    layout.index[0]["mediaType"] = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    layout.write_index()


def _index_not_json(layout, manifest):
    (layout.path / "index.json").write_text("{not json")


def _string_size(layout, manifest):
    layout.rewrite_manifest("v1", lambda m: m["layers"][0].update(size="12"))


@pytest.mark.parametrize("damage, message", [
    (_drop_blob, "layer 3/3 sha256:[0-9a-f]+: blob missing"),
    (_wrong_size, "layer 3/3 sha256:[0-9a-f]+: blob is \\d+ bytes, its descriptor says"),
    (_manifest_not_json, "manifest sha256:[0-9a-f]+: not JSON"),
    (_manifest_digest_mismatch, "blob is \\d+ bytes|blob content has digest"),
    (_unknown_media_type, "layer 3/3 has unknown media type 'application/x-mystery'"),
    (_config_not_image, "is not an image config"),
    (_too_few_diff_ids, "4 layers, but its config lists 3 diff ids"),
    (_no_layers, "the image has no layers"),
    (_sha512, "unsupported digest algorithm"),
    (_path_in_digest, "invalid digest"),
    (_schema1, "Docker schema 1 manifests are not supported"),
    (_index_not_json, "index.json: not JSON"),
    (_string_size, "not a valid manifest: Expected `int`"),
])
def test_bad_layouts_fail_before_anything_is_imported(store, layout, image, damage, message):
    damage(layout, image)
    before = snapshot(store)
    with pytest.raises(ImageRejected, match=message):
        import_oci(store, layout.path, "v1")
    assert snapshot(store) == before


def test_not_a_layout(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageNotFound, match="no oci-layout file"):
        import_oci(store, tmp_path / "empty")
    with pytest.raises(ImageNotFound, match="no such directory"):
        import_oci(store, tmp_path / "nowhere")


# --- export ---------------------------------------------------------------------------------

def _blobs_are_what_they_say(path: Path) -> None:
    for blob in (path / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


@pytest.mark.parametrize("compression", ["gzip", "none", "zstd"])
def test_export_then_import_gives_the_same_layers(tmp_path, store, layout, image, compression):
    top = import_oci(store, layout.path, "v1").top
    result = export_oci(store, top, tmp_path / "out", "again", compression=compression)
    _blobs_are_what_they_say(tmp_path / "out")
    with open_store(tmp_path / "fresh", "vfs") as fresh:
        again = import_oci(fresh, tmp_path / "out", "again")
        assert again.top == top
        assert [(r.id, r.diff_digest) for r in fresh.layers()] == [(r.id, r.diff_digest) for r in store.layers()]
        assert [fresh.lookup(i.id).compression for i in again.layers] == [compression] * 3
    assert [layer.diff_digest for layer in result.layers] == diff_ids(layout, image)
    assert [r.hold_refs for r in store.layers()] == [0, 0, 0]


def test_export_is_deterministic_and_keeps_other_tags(tmp_path, store, layout, image):
    top = import_oci(store, layout.path, "v1").top
    first = export_oci(store, top, tmp_path / "out", "a")
    second = export_oci(store, store.lookup(top).parent, tmp_path / "out", "b")
    third = export_oci(store, top, tmp_path / "out", "a")
    assert third.manifest == first.manifest
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [(d["annotations"][REF_NAME], d["digest"]) for d in index["manifests"]] == \
        [("b", second.manifest), ("a", first.manifest)]
    config = json.loads((tmp_path / "out" / "blobs/sha256" / first.config.removeprefix("sha256:")).read_text())
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids(layout, image)}
    assert not [p for p in (tmp_path / "out" / "blobs/sha256").iterdir() if p.name.startswith(".tmp")]


def test_export_refuses_a_directory_that_is_not_a_layout(tmp_path, store, layout, image):
    top = import_oci(store, layout.path, "v1").top
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    with pytest.raises(errors.InvalidArgument, match="not an OCI image layout"):
        export_oci(store, top, tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["file"]


def test_export_of_a_layer_made_without_content(tmp_path, store):
    base = store.create()
    result = export_oci(store, base, tmp_path / "out", compression="none")
    assert result.layers[0].diff_digest == result.layers[0].digest
    _blobs_are_what_they_say(tmp_path / "out")


# --- the CLI --------------------------------------------------------------------------------

def test_cli_import_prints_the_top_id(tmp_path, layout, image):
    root = tmp_path / "cli"
    top = ok(root, "import-oci", f"{layout.path}:v1", "--name", "app").strip()
    assert top == chain_ids(diff_ids(layout, image))[-1]
    assert ok(root, "layer", "app").splitlines()[0] == f"id: {top}"
    assert ok(root, "import-oci", f"{layout.path}:v1").strip() == top
    assert ok(root, "refs", top).strip() == "0"


def test_cli_errors(tmp_path, layout, image):
    root = tmp_path / "cli"
    assert "no image tagged 'nope'" in fails(root, 1, "import-oci", f"{layout.path}:nope")
    assert "invalid platform" in fails(root, 2, "import-oci", f"{layout.path}:v1", "--platform", "amd64")
    _unknown_media_type(layout, image)
    assert "unknown media type" in fails(root, 3, "import-oci", f"{layout.path}:v1")


def test_cli_refuses_a_bad_import_before_making_a_store(tmp_path, layout):
    """A mistyped layout path, a bad --jobs or --name: one line, and no new empty store
    left behind at the root."""
    root = tmp_path / "new"
    assert "no such directory" in fails(root, 1, "import-oci", f"{tmp_path / 'missing'}:v1")
    assert "--jobs" in fails(root, 2, "import-oci", f"{layout.path}:v1", "--jobs", "0")
    assert "--jobs" in fails(root, 2, "import-oci", f"{layout.path}:v1", "--jobs", "two")
    fails(root, 2, "import-oci", f"{layout.path}:v1", "--name", "bad\u0085name")
    assert not root.exists()


def test_cli_export(tmp_path, layout, image):
    root = tmp_path / "cli"
    top = ok(root, "import-oci", f"{layout.path}:v1").strip()
    digest = ok(root, "export-oci", top, f"{tmp_path / 'out'}:x", "--compress", "zstd").strip()
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"] == [{"mediaType": OCI_MANIFEST, "digest": digest, "size": index["manifests"][0]["size"],
                                   "annotations": {REF_NAME: "x"}}]
    assert ok(tmp_path / "other", "import-oci", f"{tmp_path / 'out'}:x").strip() == top


# --- reading blobs ----------------------------------------------------------------------

def test_a_blob_is_read_only_up_to_its_descriptor_size(tmp_path):
    from eventstore.oci.importer import BlobReader
    from eventstore.oci.layout import Descriptor

    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    digest = "sha256:" + "a" * 64
    (tmp_path / "blobs" / "sha256" / ("a" * 64)).write_bytes(b"0123456789")
    exact = BlobReader(tmp_path, Descriptor(digest=digest, size=10), "layer 1/1")
    assert not exact.opened
    assert exact.read(4) + exact.read() + exact.read() == b"0123456789" and exact.opened
    longer = BlobReader(tmp_path, Descriptor(digest=digest, size=8), "layer 1/1")
    assert longer.read() == b"01234567"
    with pytest.raises(ImageRejected, match="longer than its descriptor's 8 bytes"):
        longer.read()
    shorter = BlobReader(tmp_path, Descriptor(digest=digest, size=12), "layer 1/1")
    assert shorter.read() == b"0123456789"
    with pytest.raises(ImageRejected, match="ends before its descriptor's 12 bytes"):
        shorter.read()
