"""The tar-split file: sealed, checked, and export notices when content changed."""

from __future__ import annotations

import os

import pytest

from eventstore.archive import export_layer, first_damaged_path
from eventstore.archive.tarsplit import TarSplitReader
from eventstore.errors import CorruptStore, InvalidArgument

from .support import TarBuilder


def imported(layer):
    data = (TarBuilder().file("a", b"first").file("big", os.urandom(300_000))
            .file("a", b"second").bytes())
    layer.import_bytes(data)
    return data


def test_footer_records_counts_digest_and_blobs(layer):
    data = imported(layer)
    fd = os.open(layer.tarsplit, os.O_RDONLY)
    try:
        footer = TarSplitReader(fd).footer
    finally:
        os.close(fd)
    assert (footer.entries, footer.payloads, footer.diff_size) == (3, 3, len(data))
    assert footer.diff_digest == layer.result.diff_digest
    assert list(footer.blobs) == [0]  # the first "a" was replaced: its bytes are kept


def test_small_for_headers_only(layer):
    imported(layer)
    assert layer.tarsplit.stat().st_size < 2000


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_damaged_tarsplit_is_corruption(layer, where):
    imported(layer)
    raw = bytearray(layer.tarsplit.read_bytes())
    at = {"start": 3, "middle": len(raw) // 2, "end": len(raw) - 3}[where]
    raw[at] ^= 0x40
    layer.tarsplit.write_bytes(bytes(raw))
    with pytest.raises(CorruptStore):
        b"".join(export_layer(layer.target, layer.tarsplit))


def test_truncated_tarsplit_is_corruption(layer):
    imported(layer)
    os.truncate(layer.tarsplit, layer.tarsplit.stat().st_size - 20)
    with pytest.raises(CorruptStore):
        export_layer(layer.target, layer.tarsplit)


def test_changed_file_is_noticed_and_named(layer):
    imported(layer)
    assert first_damaged_path(layer.target, layer.tarsplit) is None
    with open(layer.path("big"), "r+b") as f:
        f.write(b"X")  # same size, different bytes
    with pytest.raises(CorruptStore, match="big changed"):
        b"".join(export_layer(layer.target, layer.tarsplit))
    assert first_damaged_path(layer.target, layer.tarsplit) == "big"


def test_damaged_tarsplit_is_named_by_first_damaged_path(layer):
    imported(layer)
    layer.tarsplit.write_bytes(b"junk")
    assert first_damaged_path(layer.target, layer.tarsplit) == str(layer.tarsplit)


def test_resized_or_missing_file_is_noticed(layer):
    imported(layer)
    os.truncate(layer.path("big"), 10)
    with pytest.raises(CorruptStore):
        b"".join(export_layer(layer.target, layer.tarsplit))
    os.unlink(layer.path("big"))
    with pytest.raises(CorruptStore):
        b"".join(export_layer(layer.target, layer.tarsplit))


def test_export_never_follows_a_symlink_planted_in_the_layer(layer, tmp_path):
    imported(layer)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 300_000)
    os.unlink(layer.path("big"))
    os.symlink(secret, layer.path("big"))
    with pytest.raises(CorruptStore):
        b"".join(export_layer(layer.target, layer.tarsplit))


def test_missing_tarsplit_is_an_argument_error(layer):
    with pytest.raises(InvalidArgument):
        export_layer(layer.target, layer.tarsplit)


def test_not_a_tarsplit(layer):
    layer.tarsplit.write_bytes(b"something else entirely" * 10)
    with pytest.raises(CorruptStore):
        export_layer(layer.target, layer.tarsplit)
