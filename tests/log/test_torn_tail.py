"""A torn tail: damage at the very end of the last segment with nothing valid after it.

What a crash during an append leaves. Opening as a writer copies the damaged bytes to
``<segment>.broken-<offset>``, cuts the segment there and carries on; every record
before the damage is kept, and the next append takes the next LSN.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventstore.log import EventLog

from .support import Disk, layer, read_log, write_log

FIRST = [layer(1), layer(2), layer(3)]


def expect_cut(case: Path, original: bytes, cut_at: int, end: int, kept: list) -> None:
    """The log at ``case`` holds ``kept``; bytes ``cut_at:end`` of the original last
    segment are in its .broken file; appending continues right after ``kept``."""
    disk = Disk(case)
    assert read_log(case) == kept
    segment = disk.last_segment()
    assert segment.stat().st_size == cut_at
    if end > cut_at:
        broken = segment.with_name(f"{segment.name}.broken-{cut_at}")
        assert broken.read_bytes() == original[cut_at:end]
    else:
        assert disk.broken_files() == []
    next_lsn = len(kept) + 1
    with EventLog.open(case) as log:
        assert log.append(layer("after")) == next_lsn
    assert read_log(case) == kept + [(next_lsn, layer("after"))]


@pytest.mark.parametrize("last", [layer("last"), [layer(f"batch-{i}") for i in range(5)]],
                         ids=["record", "batch"])
def test_truncated_trailing_record_is_dropped_at_every_offset(tmp_path, root, disk, last):
    write_log(root, FIRST + [last])
    segment = disk.last_segment()
    original = segment.read_bytes()
    record = disk.last_record()
    kept = [(i + 1, e) for i, e in enumerate(FIRST)]
    for cut in range(record.offset, record.end):
        case = tmp_path / f"cut-{cut}"
        disk.copy_to(case)
        Disk(case).truncate(Disk(case).last_segment(), cut)
        expect_cut(case, original, record.offset, cut, kept)


def test_whole_log_before_the_torn_record_survives_in_earlier_segments(tmp_path, root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=256)
    assert len(disk.segments()) > 2
    record = disk.last_record()
    original = disk.last_segment().read_bytes()
    disk.truncate(disk.last_segment(), record.end - 1)
    kept = [(i, layer(i)) for i in range(1, record.lsn)]
    expect_cut(root, original, record.offset, record.end - 1, kept)


def test_torn_first_record_of_a_segment_leaves_it_empty_and_usable(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=256)
    segment = disk.last_segment()
    while len(disk.records(segment)) > 1:  # make the last segment hold one record
        write_log(root, [layer("more")], segment_size=256)
        segment = disk.last_segment()
    events = read_log(root)
    record = disk.last_record()
    disk.truncate(segment, record.offset + 10)
    assert read_log(root) == events[:-1]
    assert segment.stat().st_size == record.offset
    with EventLog.open(root, segment_size=256) as log:
        assert log.append(layer("again")) == record.lsn
    assert disk.last_segment() == segment


def test_zero_filled_sectors_after_the_last_record_are_a_torn_tail(root, disk):
    write_log(root, FIRST)
    segment = disk.last_segment()
    size = segment.stat().st_size
    disk.append(segment, b"\0" * 4096)
    expect_cut(root, segment.read_bytes(), size, size + 4096,
               [(i + 1, e) for i, e in enumerate(FIRST)])


def test_zeroed_last_record_is_a_torn_tail(root, disk):
    write_log(root, FIRST + [layer("last")])
    segment = disk.last_segment()
    record = disk.last_record()
    disk.zero(segment, record.offset, record.end)
    expect_cut(root, segment.read_bytes(), record.offset, record.end,
               [(i + 1, e) for i, e in enumerate(FIRST)])


def test_half_written_record_followed_by_zeros_is_a_torn_tail(root, disk):
    write_log(root, FIRST + [[layer(f"b{i}") for i in range(20)]])
    segment = disk.last_segment()
    record = disk.last_record()
    disk.truncate(segment, record.offset + record.size // 2)
    disk.append(segment, b"\0" * (4096 - segment.stat().st_size % 4096))
    size = segment.stat().st_size
    expect_cut(root, segment.read_bytes(), record.offset, size,
               [(i + 1, e) for i, e in enumerate(FIRST)])


def test_zeros_where_the_record_header_belongs_then_its_tail_is_a_torn_tail(root, disk):
    # A crash can persist the later page of a record and not the earlier one.
    write_log(root, FIRST + [[layer(f"b{i}") for i in range(40)]])
    segment = disk.last_segment()
    record = disk.last_record()
    disk.zero(segment, record.offset, record.offset + 64)
    assert read_log(root) == [(i + 1, e) for i, e in enumerate(FIRST)]


def test_garbage_after_the_last_record_is_a_torn_tail(root, disk):
    write_log(root, FIRST)
    segment = disk.last_segment()
    size = segment.stat().st_size
    garbage = bytes(range(1, 200)) * 3
    disk.append(segment, garbage)
    expect_cut(root, segment.read_bytes(), size, size + len(garbage),
               [(i + 1, e) for i, e in enumerate(FIRST)])


def test_bad_checksum_in_the_last_record_is_a_torn_tail(root, disk):
    write_log(root, FIRST + [layer("last")])
    record = disk.last_record()
    disk.flip_bit(disk.last_segment(), record.payload[0] + 2, 3)
    assert read_log(root) == [(i + 1, e) for i, e in enumerate(FIRST)]


def test_bad_length_at_end_is_a_torn_tail(root, disk):
    write_log(root, FIRST + [layer("last")])
    record = disk.last_record()
    disk.flip_bit(disk.last_segment(), record.offset + 6, 0)  # length += 64 KiB
    assert read_log(root) == [(i + 1, e) for i, e in enumerate(FIRST)]


def test_reader_sees_a_torn_tail_but_changes_no_byte(root, disk):
    write_log(root, FIRST + [layer("last")])
    segment = disk.last_segment()
    record = disk.last_record()
    disk.truncate(segment, record.end - 3)
    before = disk.files()
    with EventLog.open(root, writer=False) as log:
        assert list(log.events()) == [(i + 1, e) for i, e in enumerate(FIRST)]
        report = log.verify()
    assert report.torn_tail is not None and report.torn_tail.offset == record.offset
    assert report.events == 3
    assert disk.files() == before


def test_second_torn_tail_at_the_same_offset_keeps_both_copies(root, disk):
    write_log(root, FIRST)
    segment = disk.last_segment()
    size = segment.stat().st_size
    disk.append(segment, b"first crash")
    read_log(root)
    disk.append(segment, b"second crash")
    read_log(root)
    kept = sorted(p.read_bytes() for p in disk.broken_files())
    assert kept == [b"first crash", b"second crash"]
    assert segment.stat().st_size == size


def test_a_crash_before_the_cut_is_finished_repeats_it(root, disk):
    # The copy aside is durable before the truncate: a crash between the two leaves
    # the tail in both places, and the next open cuts it again.
    write_log(root, FIRST)
    segment = disk.last_segment()
    size = segment.stat().st_size
    disk.append(segment, b"torn bytes")
    aside = segment.with_name(f"{segment.name}.broken-{size}")
    aside.write_bytes(b"torn bytes")
    assert read_log(root) == [(i + 1, e) for i, e in enumerate(FIRST)]
    assert segment.stat().st_size == size
    assert b"torn bytes" in [p.read_bytes() for p in disk.broken_files()]


def test_unfinished_segment_creation_is_forgotten(root, disk):
    write_log(root, FIRST)
    tmp = disk.log_dir / ".0000000000000002.wal.tmp"
    tmp.write_bytes(b"half a header")
    assert read_log(root) == [(i + 1, e) for i, e in enumerate(FIRST)]
    assert not tmp.exists()
    assert os.listdir(disk.log_dir).count("0000000000000002.wal") == 0
