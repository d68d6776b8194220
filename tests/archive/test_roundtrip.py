"""Import then export gives back the original tar, byte for byte."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from .support import TarBuilder, sha256

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}
BIG = os.urandom(1 << 20) + b"tail"


def every_kind(fmt: int) -> bytes:
    long_dir = "d" * 60 + "/" + "e" * 60
    tar = (TarBuilder(fmt)
           .dir("./")
           .dir("bin", mode=0o755)
           .file("bin/tool", b"#!/bin/sh\necho hi\n", mode=0o4755, uid=1000, gid=1000)
           .file("bin/empty", b"")
           .file("bin/big", BIG, mode=0o600)
           .dir("shared", mode=0o2775, gid=50)
           .dir("tmp", mode=0o1777)
           .symlink("bin/sh", "tool")
           .symlink("etc-link", "/etc/passwd")
           .hardlink("bin/tool-again", "bin/tool", mode=0o4755, uid=1000, gid=1000)
           .chardev("dev-null", 1, 3, mode=0o666)
           .blockdev("dev-loop", 7, 0, mode=0o660)
           .fifo("pipe", mode=0o600)
           .dir(long_dir)
           .file(long_dir + "/" + "f" * 80, b"deep"))
    if fmt != tarfile.USTAR_FORMAT:  # ustar cannot say these
        tar.file("n" * 150 + "/" + "x" * 120, b"long name")
        tar.symlink("long-link", "t" * 300)
    if fmt == tarfile.PAX_FORMAT:
        tar.file("big-owner", b"x", uid=3_000_000, gid=3_000_001)
        tar.file("with-xattrs", b"x",
                 pax_headers={"SCHILY.xattr.user.note": "hello",
                              "SCHILY.xattr.trusted.secret": "s"})
        tar.file("ns-time", b"x", pax_headers={"mtime": "1700000000.123456789"})
    return tar.bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_entry_kind_round_trips(layer, fmt):
    data = every_kind(FORMATS[fmt])
    result = layer.import_bytes(data)
    assert result.diff_digest == sha256(data)
    assert layer.export() == data


@pytest.mark.parametrize("whiteout_format", ["overlay", "delete"])
def test_round_trip_in_both_whiteout_formats(layer, whiteout_format):
    data = (TarBuilder().file("a", b"1").file(".wh.gone").dir("d").file("d/.wh..wh..opq")
            .file("d/x", b"2").bytes())
    layer.import_bytes(data, whiteout_format)
    assert layer.export() == data


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicates_keep_every_payload(layer, fmt):
    data = (TarBuilder(FORMATS[fmt])
            .file("same", b"first version")
            .file("same", b"second, longer version")
            .file("same", b"third")
            .bytes())
    layer.import_bytes(data)
    assert layer.path("same").read_bytes() == b"third"
    assert layer.export() == data


def test_file_replaced_while_hardlinked_keeps_both_contents(layer):
    data = (TarBuilder().file("f", b"old content").hardlink("g", "f").file("f", b"new")
            .bytes())
    layer.import_bytes(data)
    assert layer.path("f").read_bytes() == b"new"
    assert layer.path("g").read_bytes() == b"old content"
    assert layer.export() == data


def test_directory_replaces_file_and_file_replaces_directory(layer):
    data = (TarBuilder()
            .file("x", b"was a file")
            .dir("x")
            .file("x/inside", b"payload under a directory that goes away")
            .dir("x/sub")
            .file("x/sub/deeper", b"deeper payload")
            .file("x", b"a file again")
            .dir("y")
            .symlink("y", "elsewhere")
            .bytes())
    layer.import_bytes(data)
    assert layer.path("x").read_bytes() == b"a file again"
    assert layer.path("y").is_symlink()
    assert layer.export() == data


def test_whiteout_of_a_file_from_the_same_tar_keeps_its_payload(layer):
    data = TarBuilder().file("victim", b"payload").file(".wh.victim").bytes()
    layer.import_bytes(data, "overlay")
    assert layer.export() == data
    layer2_data = TarBuilder().dir("v").file("v/a", b"aaa").file(".wh.v").bytes()
    other = type(layer)(layer.target.parent, "delete-format")
    other.import_bytes(layer2_data, "delete")
    assert not other.path("v").exists()
    assert other.export() == layer2_data


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_utf8_names(layer, fmt):
    name = b"caf\xe9-\xff\xfe"
    data = (TarBuilder(FORMATS[fmt]).dir(name).file(name + b"/" + name, b"latin-1")
            .symlink(b"link-\xe9", name).bytes())
    layer.import_bytes(data)
    assert (layer.target / os.fsdecode(name) / os.fsdecode(name)).read_bytes() == b"latin-1"
    assert os.readlink(os.fsencode(layer.target) + b"/link-\xe9") == name
    assert layer.export() == data


COMPRESSORS = {
    "none": lambda d: d,
    "gzip": lambda d: gzip.compress(d, 6),
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    "xz": lzma.compress,
    "bzip2": bz2.compress,
}


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_each_compression(layer, compression):
    data = every_kind(tarfile.PAX_FORMAT)
    given = COMPRESSORS[compression](data)
    result = layer.import_bytes(given)
    assert result.compression == compression
    assert result.compressed_digest == sha256(given)
    assert result.compressed_size == len(given)
    assert result.diff_digest == sha256(data)
    assert result.diff_size == len(data)
    assert layer.export() == data


def test_concatenated_gzip_members(layer):
    data = every_kind(tarfile.GNU_FORMAT)
    given = gzip.compress(data[:7000]) + gzip.compress(data[7000:])
    result = layer.import_bytes(given)
    assert result.diff_digest == sha256(data)
    assert layer.export() == data


def test_trailing_zeros_are_kept(layer):
    data = TarBuilder().file("a", b"x").bytes() + bytes(10240 + 100)
    result = layer.import_bytes(data)
    assert result.diff_size == len(data)
    assert layer.export() == data


def test_stream_without_end_marker_is_accepted(layer):
    data = TarBuilder().file("a", b"x").bytes()[:-1024]
    result = layer.import_bytes(data)
    assert result.entries == 1
    assert layer.export() == data


def test_stream_ending_inside_the_last_padding_is_accepted(layer):
    # umoci 0.4.7 writes these; the payload is whole, Go's archive/tar reads them
    data = TarBuilder().file("a", b"x").bytes()[:700]
    result = layer.import_bytes(data)
    assert result.entries == 1 and layer.path("a").read_bytes() == b"x"
    assert layer.export() == data


def test_empty_stream_is_an_empty_layer(layer):
    result = layer.import_bytes(b"")
    assert (result.entries, result.diff_size) == (0, 0)
    assert layer.export() == b""


def test_global_pax_header_round_trips(layer):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "made by a test"}) as tar:
        info = tarfile.TarInfo("f")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    data = buffer.getvalue()
    result = layer.import_bytes(data)
    assert result.entries == 1
    assert layer.export() == data


# --- GNU tar made archives: sparse files, real trees ------------------------------------

needs_gnu_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")


def make_sparse_file(path: Path) -> bytes:
    size = 8 << 20
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, 1 << 20, 5 << 20):
            f.seek(offset)
            f.write(os.urandom(10000))
        f.seek(size - 5)
        f.write(b"tail!")
    return path.read_bytes()


@needs_gnu_tar
@pytest.mark.parametrize("options", [
    ["--format=gnu"],
    ["--format=posix", "--sparse-version=0.0"],
    ["--format=posix", "--sparse-version=0.1"],
    ["--format=posix", "--sparse-version=1.0"],
], ids=["gnu", "pax-0.0", "pax-0.1", "pax-1.0"])
def test_gnu_sparse_files(tmp_path, layer, options):
    source = tmp_path / "src"
    source.mkdir()
    content = make_sparse_file(source / "sparse.img")
    (source / "hole-at-end").write_bytes(b"")
    os.truncate(source / "hole-at-end", 3 << 20)
    data = subprocess.run(["tar", "-S", "-c", *options, "-C", str(source), "."],
                          check=True, capture_output=True).stdout
    layer.import_bytes(data)
    extracted = layer.path("sparse.img")
    assert extracted.read_bytes() == content
    assert extracted.stat().st_blocks * 512 < 1 << 20  # stored sparse, not 8 MiB
    assert layer.path("hole-at-end").stat().st_size == 3 << 20
    assert layer.path("hole-at-end").stat().st_blocks == 0
    assert layer.export() == data


@needs_gnu_tar
@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "v7"])
def test_gnu_tar_of_a_real_tree(tmp_path, layer, fmt):
    source = Path(os.__file__).parent / "json"
    data = subprocess.run(["tar", "-c", f"--format={fmt}", "-C", str(source.parent),
                           "json"], check=True, capture_output=True).stdout
    result = layer.import_bytes(data)
    assert result.diff_digest == sha256(data)
    assert layer.export() == data
    assert (layer.path("json/__init__.py").read_bytes()
            == (source / "__init__.py").read_bytes())
