"""Digests and sizes are those of the bytes, as hashlib computes them."""

from __future__ import annotations

import gzip
import hashlib
import io
import os

import pytest

from eventstore.archive import DEFAULT_MAX_SIZE, import_layer
from eventstore.errors import ContentRejected

from .support import TarBuilder, sha256


def big_tar() -> bytes:
    tar = TarBuilder()
    for i in range(40):
        tar.file(f"f{i}", os.urandom(100_000))
    return tar.bytes()


def test_digests_and_sizes_match_hashlib(layer):
    data = big_tar()
    given = gzip.compress(data)
    result = layer.import_bytes(given)
    assert result.compressed_digest == "sha256:" + hashlib.sha256(given).hexdigest()
    assert result.compressed_size == len(given)
    assert result.diff_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.diff_size == len(data)
    assert result.entries == 40


def test_uncompressed_digests_are_equal(layer):
    data = big_tar()
    result = layer.import_bytes(data)
    assert result.compression == "none"
    assert result.compressed_digest == result.diff_digest == sha256(data)


def test_progress_reports_compressed_bytes_read(layer):
    given = gzip.compress(big_tar(), 1)
    seen: list[int] = []
    layer.import_bytes(given, progress=seen.append)
    assert seen and seen == sorted(seen)
    assert seen[-1] == len(given)


class Pipe(io.RawIOBase):
    """A stream that hands out a few bytes at a time, like a pipe."""

    def __init__(self, data: bytes):
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), 777, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def test_short_reads_from_a_pipe(tmp_path):
    data = big_tar()
    given = gzip.compress(data)
    (tmp_path / "t").mkdir()
    result = import_layer(Pipe(given), tmp_path / "t", tmp_path / "ts",
                          whiteout_format="overlay")
    assert result.diff_digest == sha256(data)
    assert result.compressed_digest == sha256(given)


def test_max_size_counts_uncompressed_bytes(layer):
    data = big_tar()
    with pytest.raises(ContentRejected, match="limit"):
        layer.import_bytes(gzip.compress(data), max_size=len(data) - 1)


def test_default_limit_is_documented_value():
    assert DEFAULT_MAX_SIZE == 64 << 30
