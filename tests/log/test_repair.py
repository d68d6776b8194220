"""The operator's repair of a corrupt log: cut at the first damage, keep every removed
byte in a ``.broken-*`` file, and leave a log that opens with exactly what came before."""

from __future__ import annotations

import pytest

from eventstore.errors import CorruptLog
from eventstore.events import LayerCreated
from eventstore.log import EventLog
from eventstore.log.format import HEADER_SIZE
from eventstore.log.repair import repair

from .support import layer, read_log, write_log

SMALL = 256


def test_repair_cuts_a_corrupt_middle_record_and_keeps_the_rest(root, disk):
    write_log(root, [layer(i) for i in range(1, 6)])
    segment = disk.last_segment()
    original = segment.read_bytes()
    third = disk.records(segment)[2]
    disk.flip_bit(segment, third.payload[0] + 1, 4)
    damaged = segment.read_bytes()
    with pytest.raises(CorruptLog):
        EventLog.open(root)
    actions = repair(root)
    assert any("cut" in a for a in actions) and "whole" in actions[-1]
    assert segment.read_bytes() == original[:third.offset]
    assert (segment.parent / f"{segment.name}.broken-{third.offset}").read_bytes() == damaged[third.offset:]
    assert read_log(root) == [(1, layer(1)), (2, layer(2))]
    with EventLog.open(root) as log:
        assert log.append(layer("after")) == 3


def test_repair_moves_every_later_segment_aside(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    segments = disk.segments()
    assert len(segments) >= 4
    contents = {s.name: s.read_bytes() for s in segments}
    second = segments[1]
    damaged_record = disk.records(second)[1]
    disk.zero(second, damaged_record.offset, damaged_record.end)
    repair(root)
    assert disk.segments() == segments[:2]
    for later in segments[2:]:
        assert (later.parent / f"{later.name}.broken-0").read_bytes() == contents[later.name]
    assert second.read_bytes() == contents[second.name][:damaged_record.offset]
    assert [lsn for lsn, _ in read_log(root)] == list(range(1, damaged_record.lsn))


def test_repair_moves_a_segment_with_a_bad_header_aside(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    segments = disk.segments()
    third = segments[2]
    last_kept = disk.last_record(segments[1])
    disk.flip_bit(third, 20, 0)  # the store uuid
    repair(root)
    assert disk.segments() == segments[:2]
    assert (third.parent / f"{third.name}.broken-0").exists()
    assert [lsn for lsn, _ in read_log(root)] == list(range(1, last_kept.lsn + last_kept.count))


def test_repair_cuts_a_record_whose_checksum_is_valid_but_payload_undecodable(root, disk):
    write_log(root, [layer(1), layer(2), layer(3)])
    segment = disk.last_segment()
    second = disk.records(segment)[1]
    disk.overwrite(segment, second.payload[0], b"\xc1")  # never valid msgpack
    disk.fix_checksum(segment, second.offset)
    with EventLog.open(root) as log:  # the frame is sound: open does not decode
        with pytest.raises(CorruptLog) as caught:
            log.verify()
        assert caught.value.offset == second.offset
    repair(root)
    assert read_log(root) == [(1, layer(1))]


def test_repair_of_a_whole_log_changes_nothing(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    before = disk.files()
    actions = repair(root)
    assert actions == [f"log is whole: {len(disk.segments())} segment(s), 20 events, last LSN 20"]
    assert disk.files() == before


def test_repairing_twice_keeps_both_cuts(root, disk):
    write_log(root, [layer(i) for i in range(1, 4)])
    segment = disk.last_segment()
    second = disk.records(segment)[1]
    disk.flip_bit(segment, second.offset, 0)
    repair(root)
    write_log(root, [LayerCreated(layer="x"), LayerCreated(layer="y")])
    disk.flip_bit(segment, second.offset, 0)
    repair(root)
    assert len(disk.broken_files()) == 2
    assert read_log(root) == [(1, layer(1))]
    assert segment.stat().st_size == second.offset and second.offset > HEADER_SIZE
