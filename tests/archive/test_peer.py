"""Against the real peer: containers-storage imports the same files to the same digests."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from .support import TarBuilder
from .test_roundtrip import every_kind, make_sparse_file

PEER = shutil.which("containers-storage")
pytestmark = pytest.mark.skipif(
    PEER is None, reason="containers-storage is not installed (apt-get install "
                         "containers-storage; .ci/run does it)")

# containers-storage's numbering of compressions in `layers --json`
PEER_COMPRESSION = {0: "none", 1: "bzip2", 2: "gzip", 3: "xz", 4: "zstd"}


class Peer:
    def __init__(self, base: Path):
        self.args = [PEER, "--graph", str(base / "graph"), "--run", str(base / "run"),
                     "--storage-driver", "vfs"]

    def run(self, *args: str) -> bytes:
        done = subprocess.run([*self.args, *args], capture_output=True, timeout=120)
        if done.returncode:
            raise AssertionError(f"containers-storage {args[0]} failed: {done.stderr!r}")
        return done.stdout

    def import_layer(self, path: Path) -> dict:
        layer_id = self.run("import-layer", "-f", str(path)).decode().strip()
        [record] = json.loads(self.run("layers", "--json"))
        assert record["id"] == layer_id
        return record


def tarballs(tmp_path: Path) -> dict[str, bytes]:
    plain = every_kind(tarfile.PAX_FORMAT)
    gnu = every_kind(tarfile.GNU_FORMAT)
    found = {
        "pax-gzip": gzip.compress(plain),
        "gnu-uncompressed": gnu,
        "pax-zstd": zstandard.ZstdCompressor(level=5).compress(plain),
        "gnu-xz": lzma.compress(gnu),
        "gnu-bzip2": bz2.compress(gnu),
        "trailing-zeros": gzip.compress(plain + bytes(7 * 1024)),
        # (not duplicates: the peer refuses "duplicates of file paths"; we keep them)
        "dir-to-file": gzip.compress(TarBuilder().dir("d").dir("d/e").file("x", b"1")
                                     .symlink("s", "x").bytes()),
        "whiteouts": gzip.compress(TarBuilder().dir("etc").file("etc/.wh.passwd")
                                   .dir("o").file("o/.wh..wh..opq").file("o/k", b"k")
                                   .bytes()),
    }
    if shutil.which("tar"):
        source = tmp_path / "sparse-src"
        source.mkdir()
        make_sparse_file(source / "disk.img")
        # (PAX sparse only: the peer refuses old-GNU sparse entries, type 'S')
        found["tar-sparse-posix"] = subprocess.run(
            ["tar", "-S", "-cz", "--format=posix", "-C", str(source), "."],
            check=True, capture_output=True).stdout
    return found


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, bytes]:
    return tarballs(tmp_path_factory.mktemp("tarballs"))


@pytest.mark.parametrize("name", ["pax-gzip", "gnu-uncompressed", "pax-zstd", "gnu-xz",
                                  "gnu-bzip2", "trailing-zeros", "dir-to-file", "whiteouts",
                                  "tar-sparse-posix"])
def test_same_digests_and_sizes_as_containers_storage(tmp_path, new_layer, cases, name):
    if name not in cases:
        pytest.skip("GNU tar is not installed")
    given = cases[name]
    path = tmp_path / f"{name}.layer"
    path.write_bytes(given)
    peer = Peer(tmp_path / "peer").import_layer(path)
    ours = new_layer().import_bytes(given, "overlay")
    assert ours.diff_digest == peer["diff-digest"]
    assert ours.compressed_digest == peer["compressed-diff-digest"]
    assert ours.diff_size == peer["diff-size"]
    assert ours.compressed_size == peer["compressed-size"]
    assert ours.compression == PEER_COMPRESSION[peer.get("compression", 0)]


def test_export_equals_the_peers_diff(tmp_path, new_layer, cases):
    given = cases["pax-gzip"]
    path = tmp_path / "layer.tgz"
    path.write_bytes(given)
    peer = Peer(tmp_path / "peer")
    record = peer.import_layer(path)
    peer_tar = peer.run("diff", "-u", record["id"])
    layer = new_layer()
    layer.import_bytes(given)
    assert layer.export() == peer_tar


def test_peer_diff_imports_to_the_same_diff_digest(tmp_path, new_layer, cases):
    """A layer the peer holds, exported by the peer and imported by us."""
    path = tmp_path / "layer.tar"
    path.write_bytes(cases["gnu-uncompressed"])
    peer = Peer(tmp_path / "peer")
    record = peer.import_layer(path)
    ours = new_layer().import_bytes(peer.run("diff", "-u", record["id"]))
    assert ours.diff_digest == record["diff-digest"]
    assert os.path.exists(tmp_path / "peer")
