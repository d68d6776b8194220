"""Appending: an acknowledged event is durable, a batch is one record, a failed sync
poisons the handle, a failed write leaves the log as it was."""

from __future__ import annotations

import errno
import os

import pytest

from eventstore.errors import LogClosed, StorageError
from eventstore.log import EventLog

from .support import layer, read_log, write_log


@pytest.fixture
def syncs(monkeypatch):
    """Every fdatasync the log makes, by file descriptor."""
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


def test_append_returns_gap_free_lsns(root):
    with EventLog.open(root) as log:
        assert [log.append(layer(i)) for i in range(1, 6)] == [1, 2, 3, 4, 5]
        assert log.append_many([layer(6), layer(7)]) == [6, 7]
        assert log.last_lsn == 7


def test_append_syncs_before_it_returns(root, syncs):
    with EventLog.open(root) as log:
        log.append(layer(1))
        assert len(syncs) == 1
        log.append_many([layer(2), layer(3)])
        assert len(syncs) == 2


def test_batch_is_one_record(root, disk):
    write_log(root, [layer(0), [layer(i) for i in range(1, 11)]])
    records = disk.records(disk.last_segment())
    assert [(r.lsn, r.count) for r in records] == [(1, 1), (2, 10)]


def test_empty_batch_writes_nothing(root, disk, syncs):
    with EventLog.open(root) as log:
        assert log.append_many([]) == []
    assert syncs == [] and disk.records(disk.last_segment()) == []


def test_failed_fdatasync_poisons_the_handle_and_is_never_retried(root, monkeypatch):
    write_log(root, [layer(1)])
    calls = []

    def failing(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "injected EIO")

    with EventLog.open(root) as log:
        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(LogClosed):
            log.append(layer(2))
        for attempt in (lambda: log.append(layer(3)), lambda: log.append_many([layer(4)]),
                        lambda: log.catch_up()):
            with pytest.raises(LogClosed):
                attempt()
        assert len(calls) == 1
        monkeypatch.undo()
        with pytest.raises(LogClosed):  # a working disk does not make the handle trustworthy again
            log.append(layer(5))
    # Whether the unsynced record reached the disk is unknowable; a new handle starts
    # from whatever did, gap-free.
    events = read_log(root)
    assert [e for _, e in events] in ([layer(1)], [layer(1), layer(2)])
    with EventLog.open(root) as log:
        assert log.append(layer(6)) == len(events) + 1


@pytest.mark.parametrize("written_before_failure", [0, 10])
def test_enospc_on_write_leaves_the_file_as_it_was(root, disk, monkeypatch, written_before_failure):
    write_log(root, [layer(1)])
    segment = disk.last_segment()
    size = segment.stat().st_size
    real = os.pwrite

    def full_disk(fd, data, offset):
        nonlocal written_before_failure
        if written_before_failure:
            written = real(fd, bytes(data[:written_before_failure]), offset)
            written_before_failure = 0
            return written
        raise OSError(errno.ENOSPC, "No space left on device")

    with EventLog.open(root) as log:
        monkeypatch.setattr(os, "pwrite", full_disk)
        with pytest.raises(StorageError) as caught:
            log.append(layer(2))
        assert not isinstance(caught.value, LogClosed)
        assert "no space" in str(caught.value)
        assert segment.stat().st_size == size
        monkeypatch.undo()
        assert log.append(layer(3)) == 2  # the failed append took no LSN
    assert read_log(root) == [(1, layer(1)), (2, layer(3))]


def test_closed_handle_refuses_appends(root):
    log = EventLog.open(root)
    log.close()
    with pytest.raises(LogClosed):
        log.append(layer(1))
    log.close()  # closing twice is harmless


def test_reader_handle_refuses_to_write(root, disk):
    write_log(root, [layer(1)])
    before = disk.files()
    with EventLog.open(root, writer=False) as log:
        with pytest.raises(StorageError):
            log.append(layer(2))
        with pytest.raises(StorageError):
            with log.locked():
                pass
    assert disk.files() == before


def test_writer_reads_what_another_handle_appended_before_it_appends(root):
    seen = []
    with EventLog.open(root, listener=seen.append) as mine, EventLog.open(root) as theirs:
        assert mine.append(layer("mine-1")) == 1
        assert theirs.append_many([layer("theirs-1"), layer("theirs-2")]) == [2, 3]
        assert theirs.append(layer("theirs-3")) == 4
        assert mine.append(layer("mine-2")) == 5
    assert [(r.lsn, r.events) for r in seen] == [
        (2, [layer("theirs-1"), layer("theirs-2")]), (4, [layer("theirs-3")])]
    assert [e for _, e in read_log(root)] == [
        layer("mine-1"), layer("theirs-1"), layer("theirs-2"), layer("theirs-3"), layer("mine-2")]


def test_locked_block_is_caught_up_and_appends_in_order(root):
    seen = []
    with EventLog.open(root, listener=seen.append) as mine, EventLog.open(root) as theirs:
        theirs.append(layer("theirs"))
        with mine.locked():
            assert [r.events for r in seen] == [[layer("theirs")]]
            assert mine.last_lsn == 1
            assert mine.append(layer("mine")) == 2
            assert mine.append_many([layer("a"), layer("b")]) == [3, 4]
    assert len(read_log(root)) == 4


def test_catch_up_hands_foreign_records_to_the_listener(root):
    seen = []
    with EventLog.open(root, listener=seen.append) as mine, EventLog.open(root) as theirs:
        theirs.append(layer(1))
        mine.catch_up()
        mine.catch_up()  # nothing new: nothing delivered twice
        assert [r.lsn for r in seen] == [1]
        assert mine.last_lsn == 1
