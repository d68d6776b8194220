"""The operator's repair of a corrupt log: every valid record is kept (byte for byte, at
its offset), each damaged range becomes a records-lost marker that occupies exactly
the lost LSNs, the damaged bytes are kept aside, and nothing is deleted."""

from __future__ import annotations

import shutil

import pytest

from eventstore.errors import CorruptLog
from eventstore.events import LayerCreated, RecordsLost
from eventstore.log import EventLog
from eventstore.log.format import HEADER_SIZE
from eventstore.salvage import repair_store

from .support import layer, read_log, write_log

SMALL = 256


def lsns_and_layers(root) -> list[tuple[int, str]]:
    return [(lsn, "lost" if isinstance(e, RecordsLost) else e.layer) for lsn, e in read_log(root)]


def test_a_corrupt_middle_record_becomes_a_marker_and_every_later_record_is_kept(root, disk):
    write_log(root, [layer(i) for i in range(1, 6)])
    segment = disk.last_segment()
    original = segment.read_bytes()
    third = disk.records(segment)[2]
    disk.flip_bit(segment, third.payload[0] + 1, 4)
    damaged = segment.read_bytes()
    with pytest.raises(CorruptLog):
        EventLog.open(root)
    actions = repair_store(root)
    assert any("LSN 3 lost" in a for a in actions) and "whole" in actions[-1]
    assert lsns_and_layers(root) == [(1, "layer-1"), (2, "layer-2"), (3, "lost"), (4, "layer-4"), (5, "layer-5")]
    repaired = segment.read_bytes()
    assert repaired[:third.offset] == original[:third.offset]
    assert repaired[third.end:] == original[third.end:]  # later records kept at their offsets
    assert (segment.parent / f"{segment.name}.broken-{third.offset}").read_bytes() == damaged[third.offset:third.end]
    with EventLog.open(root) as log:
        assert log.append(layer("after")) == 6


def test_the_marker_names_the_lost_lsns(root, disk):
    write_log(root, [layer(1), [layer(2), layer(3), layer(4)], layer(5)])
    segment = disk.last_segment()
    batch = disk.records(segment)[1]
    disk.zero(segment, batch.offset, batch.end)
    repair_store(root)
    marker = dict(read_log(root))[2]
    assert isinstance(marker, RecordsLost) and (marker.first_lsn, marker.count) == (2, 3)
    assert [lsn for lsn, _ in read_log(root)] == [1, 2, 5]  # the marker stands for 2..4


def test_damage_in_a_middle_segment_keeps_every_later_segment(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    segments = disk.segments()
    assert len(segments) >= 4
    contents = {s.name: s.read_bytes() for s in segments}
    second = segments[1]
    damaged_record = disk.records(second)[1]
    disk.zero(second, damaged_record.offset, damaged_record.end)
    repair_store(root)
    assert disk.segments() == segments
    for later in segments[2:]:
        assert later.read_bytes() == contents[later.name]
    events = lsns_and_layers(root)
    assert [lsn for lsn, _ in events][-1] == 20 and (damaged_record.lsn, "lost") in events
    assert sum(1 for _, what in events if what == "lost") == 1


def test_a_segment_header_is_rebuilt_when_its_records_validate_under_it(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    third = disk.segments()[2]
    before = read_log(root)
    disk.flip_bit(third, 50, 0)  # a reserved byte: the header's CRC no longer matches
    with pytest.raises(CorruptLog):
        EventLog.open(root)
    actions = repair_store(root)
    assert any("header damaged; rebuilt" in a for a in actions)
    assert read_log(root) == before  # nothing lost


def test_a_segment_from_another_store_is_set_aside_and_its_lsns_marked(root, disk, tmp_path):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    other = tmp_path / "other"
    write_log(other, [layer(f"x{i}") for i in range(1, 21)], segment_size=SMALL)
    third = disk.segments()[2]
    first_lsn_of_third = disk.records(third)[0].lsn
    fourth_first = disk.records(disk.segments()[3])[0].lsn
    ours = third.read_bytes()
    shutil.copy(other / "log" / third.name, third)
    repair_store(root)
    kept = third.with_name(f"{third.name}.broken-0")
    assert kept.exists() and kept.read_bytes() != ours
    events = dict(read_log(root))
    marker = events[first_lsn_of_third]
    assert isinstance(marker, RecordsLost) and marker.first_lsn + marker.count == fourth_first
    assert max(events) == 20


def test_a_missing_middle_segment_is_recreated_holding_a_marker(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    segments = disk.segments()
    lost = segments[1]
    lost_range = (disk.records(lost)[0].lsn, disk.records(segments[2])[0].lsn)
    lost.unlink()
    with pytest.raises(CorruptLog, match="missing"):
        EventLog.open(root)
    repair_store(root)
    assert lost.exists()
    marker = dict(read_log(root))[lost_range[0]]
    assert isinstance(marker, RecordsLost) and marker.first_lsn + marker.count == lost_range[1]


def test_a_record_whose_checksum_is_valid_but_payload_undecodable_becomes_a_marker(root, disk):
    write_log(root, [layer(1), layer(2), layer(3)])
    segment = disk.last_segment()
    second = disk.records(segment)[1]
    disk.overwrite(segment, second.payload[0], b"\xc1")  # never valid msgpack
    disk.fix_checksum(segment, second.offset)
    with EventLog.open(root) as log:  # the frame is sound: open does not decode
        with pytest.raises(CorruptLog) as caught:
            log.verify()
        assert caught.value.offset == second.offset
    repair_store(root)
    assert lsns_and_layers(root) == [(1, "layer-1"), (2, "lost"), (3, "layer-3")]


def test_bytes_that_held_no_lsn_are_taken_out_and_the_log_is_as_it_was(root, disk):
    write_log(root, [layer(i) for i in range(1, 4)])
    segment = disk.last_segment()
    original = segment.read_bytes()
    third = disk.records(segment)[2]
    segment.write_bytes(original[:third.offset] + b"\0" * 8 + original[third.offset:])
    with pytest.raises(CorruptLog):
        EventLog.open(root)
    repair_store(root)
    assert segment.read_bytes() == original
    assert disk.broken_files()  # the 8 bytes are kept aside


def test_a_torn_tail_nobody_acknowledged_is_cut_not_marked(root, disk):
    write_log(root, [layer(i) for i in range(1, 4)])
    segment = disk.last_segment()
    last = disk.last_record(segment)
    disk.truncate(segment, last.end - 3)
    actions = repair_store(root)
    assert any("torn tail" in a for a in actions)
    assert lsns_and_layers(root) == [(1, "layer-1"), (2, "layer-2")]


def test_repair_of_a_whole_log_changes_nothing(root, disk):
    write_log(root, [layer(i) for i in range(1, 21)], segment_size=SMALL)
    before = disk.files()
    actions = repair_store(root)
    assert actions == [f"nothing to repair: log is whole: {len(disk.segments())} segment(s), 20 records, "
                       f"last LSN 20"]
    assert disk.files() == before


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(root, disk):
    write_log(root, [layer(i) for i in range(1, 6)])
    segment = disk.last_segment()
    disk.flip_bit(segment, disk.records(segment)[2].payload[0], 1)
    before = disk.files()
    actions = repair_store(root, dry_run=True)
    assert any("LSN 3 lost" in a for a in actions) and actions[-1] == "dry run: nothing was changed"
    assert disk.files() == before


def test_repairing_twice_finds_nothing_the_second_time(root, disk):
    write_log(root, [layer(i) for i in range(1, 4)])
    segment = disk.last_segment()
    second = disk.records(segment)[1]
    disk.flip_bit(segment, second.offset + 30, 0)
    repair_store(root)
    repaired = disk.files()
    assert repair_store(root)[0].startswith("nothing to repair")
    assert disk.files() == repaired
    write_log(root, [LayerCreated(layer="x")])
    assert [lsn for lsn, _ in read_log(root)] == [1, 2, 3, 4]
    assert segment.stat().st_size > HEADER_SIZE
