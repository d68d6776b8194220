"""Segments roll at ``segment_size``; LSNs run on across them; reading crosses them."""

from __future__ import annotations

import pytest

from eventstore.log import EventLog, Position
from eventstore.log.format import HEADER_SIZE, decode_header

from .support import Disk, layer, read_log, write_log

SMALL = 256


def headers(disk: Disk):
    return [decode_header(s.read_bytes()[:HEADER_SIZE]) for s in disk.segments()]


def test_log_rolls_to_a_new_segment_when_one_is_full(root, disk):
    write_log(root, [layer(i) for i in range(1, 31)], segment_size=SMALL)
    segments = disk.segments()
    assert len(segments) > 3
    assert [s.name for s in segments] == [f"{n:016d}.wal" for n in range(1, len(segments) + 1)]
    for segment in segments[:-1]:
        # a segment holds at least one record, and is only exceeded by its last one
        records = disk.records(segment)
        assert records and records[-1].offset < SMALL


def test_each_segment_header_names_its_number_store_and_first_lsn(root, disk):
    write_log(root, [layer(i) for i in range(1, 31)], segment_size=SMALL)
    found = headers(disk)
    assert len({h.store_uuid for h in found}) == 1
    assert [h.number for h in found] == list(range(1, len(found) + 1))
    assert [h.first_lsn for h in found] == [disk.records(s)[0].lsn for s in disk.segments()]


def test_lsns_run_on_across_segments_and_reopens(root, disk):
    lsns = write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    lsns += write_log(root, [[layer(i) for i in range(21, 26)], layer(26)], segment_size=SMALL)
    assert lsns == list(range(1, 27))
    assert read_log(root) == [(i, layer(i)) for i in range(1, 27)]


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(root, disk):
    big = [layer(f"{i}-" + "x" * 100) for i in range(10)]
    write_log(root, [layer(0), big, layer(11)], segment_size=SMALL)
    sizes = [s.stat().st_size for s in disk.segments()]
    assert len(sizes) == 3 and sizes[1] > SMALL
    assert [e for _, e in read_log(root)] == [layer(0), *big, layer(11)]


def test_events_from_any_lsn(root):
    write_log(root, [layer(1), [layer(i) for i in range(2, 9)], *[layer(i) for i in range(9, 31)],
                     [layer(i) for i in range(31, 36)]], segment_size=SMALL)
    everything = [(i, layer(i)) for i in range(1, 36)]
    with EventLog.open(root, writer=False) as log:
        for start in range(1, 38):
            assert list(log.events(start)) == everything[start - 1:], start


def test_records_carry_their_end_position_to_resume_from(root):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    with EventLog.open(root, writer=False) as log:
        records = list(log.records())
        middle = records[9].end
        assert [r.lsn for r in log.records(middle)] == list(range(11, 21))
        assert records[-1].end == log.tail


def test_reopening_from_a_start_position_checks_only_what_follows(root, disk):
    write_log(root, [layer(i) for i in range(1, 11)], segment_size=SMALL)
    with EventLog.open(root) as log:
        start = log.tail
    write_log(root, [layer(i) for i in range(11, 21)], segment_size=SMALL)
    disk.flip_bit(disk.segments()[0], HEADER_SIZE + 30, 0)  # before the start: not looked at
    with EventLog.open(root, start=start) as log:
        assert log.last_lsn == 20
        assert log.append(layer(21)) == 21


def test_a_start_position_past_the_end_is_not_trusted(root):
    write_log(root, [layer(i) for i in range(1, 11)])
    with EventLog.open(root) as log:
        beyond = Position(log.tail.segment, log.tail.offset + 4096, 99)
    with EventLog.open(root, start=beyond) as log:
        assert log.last_lsn == 10


@pytest.mark.parametrize("segment_size", [SMALL, 64 * 1024 * 1024])
def test_verify_counts_segments_records_and_events(root, disk, segment_size):
    write_log(root, [layer(1), [layer(i) for i in range(2, 12)], *[layer(i) for i in range(12, 20)]],
              segment_size=segment_size)
    before = disk.files()
    with EventLog.open(root, writer=False) as log:
        report = log.verify()
    assert report.segments == len(disk.segments())
    assert report.records == 1 + 1 + 8
    assert (report.events, report.last_lsn, report.torn_tail) == (19, 19, None)
    assert disk.files() == before


def test_verify_of_an_empty_log(root):
    with EventLog.open(root) as log:
        assert tuple(log.verify()) == (1, 0, 0, 0, None, 0)
        assert log.last_lsn == 0 and list(log.events()) == []


def test_reader_of_a_missing_log_is_refused(root):
    from eventstore.errors import StorageError

    with pytest.raises(StorageError):
        EventLog.open(root, create=False)
    assert not root.exists()


def test_writers_sharing_a_root_roll_segments_together(root, disk):
    with EventLog.open(root, segment_size=SMALL) as one, EventLog.open(root, segment_size=SMALL) as two:
        for i in range(1, 41):
            assert (one if i % 3 else two).append(layer(i)) == i
    assert len(disk.segments()) > 3
    assert [h.first_lsn for h in headers(disk)] == [disk.records(s)[0].lsn for s in disk.segments()]
    assert read_log(root) == [(i, layer(i)) for i in range(1, 41)]


def test_crash_right_after_a_new_segment_is_created_loses_nothing(root, disk):
    from eventstore import faults

    write_log(root, [layer(i) for i in range(1, 4)], segment_size=SMALL)
    before, last = len(disk.segments()), 3
    faults.arm("log.segment.after-rename", "eio")
    try:
        with EventLog.open(root, segment_size=SMALL) as log, pytest.raises(OSError):
            for i in range(4, 40):
                log.append(layer(i))
                last = i
    finally:
        faults.disarm()
    assert len(disk.segments()) == before + 1
    assert disk.records(disk.last_segment()) == []
    assert read_log(root) == [(i, layer(i)) for i in range(1, last + 1)]
    write_log(root, [layer("next")], segment_size=SMALL)
    assert disk.records(disk.last_segment())[0].lsn == last + 1
