"""Corruption: damage anywhere but a torn tail. Opening raises ``CorruptLog`` naming the
segment and the offset of the first bad byte, and changes no byte on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.errors import CorruptLog
from eventstore.events import LayerCreated, encode_batch
from eventstore.log import EventLog
from eventstore.log.format import (
    ALIGN, HEADER_SIZE, RECORD_HEADER_SIZE, decode_header, encode_header, encode_record,
)

from .support import RECORD_FIELDS, Disk, layer, write_log


def padded_event(n: int) -> LayerCreated:
    """An event whose record needs padding, so the padding bytes can be damaged too."""
    for width in range(1, ALIGN + 1):
        event = LayerCreated(layer=f"layer-{n}-" + "x" * width)
        if (RECORD_HEADER_SIZE + len(encode_batch([event]))) % ALIGN:
            return event
    raise AssertionError("unreachable: some width needs padding")


def expect_corrupt(root: Path, segment: Path, offset: int) -> CorruptLog:
    """Opening ``root`` (as writer and as reader) raises CorruptLog at ``segment``:``offset``
    and leaves every file as it was."""
    disk = Disk(root)
    before = disk.files()
    for writer in (True, False):
        with pytest.raises(CorruptLog) as caught:
            EventLog.open(root, writer=writer)
        assert (caught.value.segment, caught.value.offset) == (str(segment), offset), str(caught.value)
        assert caught.value.exit_code == 4
    assert disk.files() == before
    return caught.value


def field_bits(field: str, record) -> list[tuple[int, int]]:
    """(byte offset, bit) pairs to flip in ``field`` of ``record``: every bit of the
    header fields and of the padding, a sample of the payload's."""
    if field in RECORD_FIELDS:
        start, end = RECORD_FIELDS[field]
        return [(record.offset + i, bit) for i in range(start, end) for bit in range(8)]
    if field == "payload":
        start, end = record.payload
        return [(i, bit) for i in range(start, end) for bit in range(8)][::7]
    assert field == "padding" and record.padding
    return [(i, bit) for i in range(record.payload[1], record.end) for bit in range(8)]


@pytest.mark.parametrize("field", [*RECORD_FIELDS, "payload", "padding"])
def test_flipped_bit_in_a_non_final_record_is_corruption(tmp_path, root, disk, field):
    write_log(root, [padded_event(i) for i in range(1, 5)])
    segment = disk.last_segment()
    target = disk.records(segment)[1]
    for offset, bit in field_bits(field, target):
        case = tmp_path / f"flip-{offset}-{bit}"
        damaged = disk.copy_to(case)
        damaged.flip_bit(damaged.last_segment(), offset, bit)
        expect_corrupt(case, damaged.last_segment(), target.offset)


def test_flipped_bit_in_the_first_record_is_corruption(root, disk):
    write_log(root, [layer(1), layer(2)])
    segment = disk.last_segment()
    disk.flip_bit(segment, HEADER_SIZE + RECORD_HEADER_SIZE + 1, 0)
    expect_corrupt(root, segment, HEADER_SIZE)


def test_zeroed_record_before_a_valid_one_is_corruption(root, disk):
    write_log(root, [layer(1), layer(2), layer(3)])
    segment = disk.last_segment()
    second = disk.records(segment)[1]
    disk.zero(segment, second.offset, second.end)
    error = expect_corrupt(root, segment, second.offset)
    assert "valid record follows" in str(error)


def test_valid_checksum_over_a_wrong_lsn_is_corruption(root, disk):
    write_log(root, [layer(1), layer(2), layer(3)])
    segment = disk.last_segment()
    second = disk.records(segment)[1]
    disk.flip_bit(segment, second.offset + RECORD_FIELDS["lsn"][0], 2)
    disk.fix_checksum(segment, second.offset)
    error = expect_corrupt(root, segment, second.offset)
    assert "LSN" in str(error)


@pytest.mark.parametrize("damage", ["truncate", "zero", "flip", "append-zeros"])
def test_damage_at_the_very_end_of_a_non_last_segment_is_corruption(root, disk, damage):
    write_log(root, [layer(i) for i in range(1, 13)], segment_size=256)
    first = disk.segments()[0]
    assert len(disk.segments()) >= 3
    last = disk.last_record(first)
    offset = last.offset
    if damage == "truncate":
        disk.truncate(first, last.end - 1)
    elif damage == "zero":
        disk.zero(first, last.offset, last.end)
    elif damage == "flip":
        disk.flip_bit(first, last.end - 1 - last.padding, 0)
    else:
        disk.append(first, b"\0" * 4096)
        offset = last.end
    expect_corrupt(root, first, offset)


@pytest.mark.parametrize("which", ["first", "last"])
def test_flipped_bit_in_a_segment_header_is_corruption(root, disk, which):
    write_log(root, [layer(i) for i in range(1, 13)], segment_size=256)
    segment = disk.segments()[0 if which == "first" else -1]
    disk.flip_bit(segment, 40, 5)  # inside the first LSN
    expect_corrupt(root, segment, 0)


def test_segment_from_another_store_is_refused(tmp_path, root, disk):
    other = tmp_path / "other"
    events = [layer(i) for i in range(1, 13)]
    write_log(root, events, segment_size=256)
    write_log(other, events, segment_size=256)
    assert len(disk.segments()) >= 3
    second = disk.segments()[1]
    second.write_bytes(Disk(other).segments()[1].read_bytes())
    error = expect_corrupt(root, second, 0)
    assert "belongs to store" in str(error)


def test_last_segment_from_another_store_is_refused(tmp_path, root, disk):
    other = tmp_path / "other"
    events = [layer(i) for i in range(1, 13)]
    write_log(root, events, segment_size=256)
    write_log(other, events, segment_size=256)
    last = disk.last_segment()
    last.write_bytes(Disk(other).last_segment().read_bytes())
    expect_corrupt(root, last, 0)


def test_missing_middle_segment_is_refused(root, disk):
    write_log(root, [layer(i) for i in range(1, 13)], segment_size=256)
    segments = disk.segments()
    assert len(segments) >= 3
    segments[1].unlink()
    error = expect_corrupt(root, segments[2], 0)
    assert segments[1].name in str(error) and "missing" in str(error)


def test_record_from_another_store_with_the_same_history_does_not_validate(tmp_path, root, disk):
    other = tmp_path / "other"
    events = [layer(1), layer(2), layer(3)]
    write_log(root, events)
    write_log(other, events)
    ours, theirs = disk.last_segment(), Disk(other).last_segment()
    second = disk.records(ours)[1]
    stale = theirs.read_bytes()[second.offset:second.end]
    assert stale[4:] == ours.read_bytes()[second.offset + 4:second.end]  # only the CRC differs
    disk.overwrite(ours, second.offset, stale)
    expect_corrupt(root, ours, second.offset)


def test_record_bytes_from_another_segment_do_not_validate(root, disk):
    write_log(root, [layer(i) for i in range(1, 13)], segment_size=256)
    first, second = disk.segments()[:2]
    salts = [decode_header(s.read_bytes()[:HEADER_SIZE]).salt for s in (first, second)]
    target = disk.records(second)[0]
    payload = second.read_bytes()[slice(*target.payload)]
    # The same record, as the first segment would have framed it: stale bytes of an
    # older segment at the very position and LSN the reader expects.
    assert encode_record(payload, target.lsn, target.count, salts[1]) == \
        second.read_bytes()[target.offset:target.end]
    disk.overwrite(second, target.offset, encode_record(payload, target.lsn, target.count, salts[0]))
    expect_corrupt(root, second, target.offset)


def test_corruption_is_reported_again_until_repaired(root, disk):
    write_log(root, [layer(1), layer(2), layer(3)])
    segment = disk.last_segment()
    disk.flip_bit(segment, HEADER_SIZE + 5, 1)
    expect_corrupt(root, segment, HEADER_SIZE)
    expect_corrupt(root, segment, HEADER_SIZE)


def test_segment_under_another_segments_name_is_refused(root, disk):
    write_log(root, [layer(i) for i in range(1, 13)], segment_size=256)
    segments = disk.segments()
    segments[1].unlink()
    segments[2].rename(segments[1])
    error = expect_corrupt(root, segments[1], 0)
    assert "header says segment 3" in str(error)


def test_segment_whose_first_lsn_does_not_follow_the_previous_one_is_refused(root, disk):
    write_log(root, [layer(i) for i in range(1, 13)], segment_size=256)
    second = disk.segments()[1]
    header = decode_header(second.read_bytes()[:HEADER_SIZE])
    disk.overwrite(second, 0, encode_header(header._replace(first_lsn=header.first_lsn + 1)))
    error = expect_corrupt(root, second, 0)
    assert "first LSN" in str(error)
