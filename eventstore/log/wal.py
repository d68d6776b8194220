"""The event log: the orchestrator over segments, reader, writer and repair.

Guarantees, each tested in tests/log/:
- ``append``/``append_many`` return only after fdatasync: an acknowledged event is durable;
- a batch is one record: after a crash it is there whole or not at all;
- LSNs are global and gap-free across segments and across processes;
- a failed fsync poisons the handle (``LogClosed``): it is never retried;
- open repairs a torn tail and refuses corruption without changing a byte.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from eventstore import faults
from eventstore.errors import CorruptLog, LogClosed, StorageError
from eventstore.events import Event, decode_batch, encode_batch
from eventstore.fsutil import fsync_dir
from eventstore.log.format import HEADER_SIZE, SegmentHeader, decode_header, encode_record
from eventstore.log.reader import Damage, RawRecord, read_from, read_header, scan
from eventstore.log.segment import create_segment, list_segments, remove_temp_files, segment_name
from eventstore.log.writer import GroupCommitter
from eventstore.private import FILE_MODE, make_dir

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024

for _name, _doc in [
    ("log.append.before-write", "a record is about to be written"),
    ("log.append.after-write", "a record is written, not yet synced"),
    ("log.append.after-fsync", "a record is durable, not yet acknowledged"),
    ("log.segment.before-fsync", "a new segment's header is written, not synced"),
    ("log.segment.before-rename", "a new segment is synced under its temp name"),
    ("log.segment.after-rename", "a new segment is in place"),
    ("log.repair.before-truncate", "a torn tail is copied aside, not yet truncated"),
]:
    faults.declare(_name, _doc)


class Position(NamedTuple):
    """A place in the log: a segment, a byte offset in it, and the LSN written there next."""

    segment: int
    offset: int
    lsn: int


class LogRecord(NamedTuple):
    """One record as read: the LSN of its first event, the events, where it ends."""

    lsn: int
    events: list[Event]
    end: Position


class VerifyReport(NamedTuple):
    segments: int
    records: int
    events: int
    last_lsn: int
    torn_tail: Damage | None


#: called with each record another process appended, in order, as the log catches up
Listener = Callable[[LogRecord], None]


class EventLog:
    """An open log under ``<root>/log``. Use ``EventLog.open``."""

    def __init__(self, log_dir: Path, segment_size: int, writer: bool, listener: Listener | None):
        self.log_dir = log_dir
        self.segment_size = segment_size
        self.writer = writer
        self.listener = listener
        self.store_uuid: uuidlib.UUID | None = None
        self._headers: dict[int, SegmentHeader] = {}
        self._tail = Position(0, 0, 1)
        self._fd: int | None = None        # the last segment, open for writing
        self._lock_fd: int | None = None   # the LOCK file; flock'd while writing
        self._lock_depth = 0
        self._thread_lock = threading.RLock()
        self._failed: BaseException | None = None
        self._closed = False
        self._committer = GroupCommitter(self._append_group)

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike, *, create: bool = True, writer: bool = True,
             segment_size: int = DEFAULT_SEGMENT_SIZE, resume: Position | None = None,
             listener: Listener | None = None) -> "EventLog":
        """Open (or create) the log, check it from ``resume`` (default: the start) to
        the end, repair a torn tail when ``writer``, raise ``CorruptLog`` on corruption."""
        log_dir = Path(root) / "log"
        if create and not log_dir.is_dir():
            make_dir(log_dir, parents=True)
            fsync_dir(log_dir.parent)
        if not log_dir.is_dir():
            raise StorageError(f"no log at {log_dir}")
        log = cls(log_dir, segment_size, writer, listener)
        if writer:
            log._lock_fd = os.open(log_dir / "LOCK", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            with log._locked_if_writer():
                log._load(create, resume)
        except BaseException:
            log.close()
            raise
        return log

    def _load(self, create: bool, resume: Position | None) -> None:
        if self.writer:
            remove_temp_files(self.log_dir)
        segments = list_segments(self.log_dir)
        if not segments:
            if not (create and self.writer):
                raise StorageError(f"log at {self.log_dir} has no segments")
            create_segment(self.log_dir, uuidlib.uuid4(), 1, 1)
            segments = list_segments(self.log_dir)
        self._read_headers(segments)
        start = self._start_position(resume)
        self._tail = start
        self._advance(deliver=False)

    def _read_headers(self, segments: list[tuple[int, Path]]) -> None:
        expected_number = segments[0][0]
        for number, path in segments:
            header = decode_header(read_header(path))
            if isinstance(header, str):
                raise CorruptLog(f"log: {path}: {header}", str(path), 0)
            if number != expected_number:
                raise CorruptLog(f"log: segment {segment_name(expected_number)} is missing", str(path), 0)
            if header.number != number:
                raise CorruptLog(f"log: {path}: header says segment {header.number}", str(path), 0)
            if self.store_uuid is None:
                self.store_uuid = header.store_uuid
            elif header.store_uuid != self.store_uuid:
                raise CorruptLog(
                    f"log: {path} belongs to store {header.store_uuid}, not {self.store_uuid}", str(path), 0)
            self._headers[number] = header
            expected_number += 1

    def _start_position(self, resume: Position | None) -> Position:
        if resume is not None and resume.segment in self._headers:
            path = self.log_dir / segment_name(resume.segment)
            # A resume point past the segment's end (the tail it named was cut as torn
            # since) is not trusted: start from the beginning instead.
            if HEADER_SIZE <= resume.offset <= path.stat().st_size:
                return resume
        first = min(self._headers)
        return Position(first, HEADER_SIZE, self._headers[first].first_lsn)

    # --- catching up ---------------------------------------------------------------------

    def _advance(self, deliver: bool) -> None:
        """Read from the tail to the end of the log, segment after segment; hand what
        others appended to the listener when ``deliver``; deal with damage."""
        if self._caught_up():
            return
        while True:
            number = self._tail.segment
            path = self.log_dir / segment_name(number)
            header = self._headers[number]
            if self._tail.offset == HEADER_SIZE and header.first_lsn != self._tail.lsn:
                raise CorruptLog(
                    f"log: {path}: first LSN {header.first_lsn}, expected {self._tail.lsn}", str(path), 0)
            records: list[RawRecord] | None = [] if deliver and self.listener else None
            last = (number + 1) not in self._headers and not (self.log_dir / segment_name(number + 1)).exists()
            buf = read_from(path, self._tail.offset)
            end, next_lsn, damage = scan(path, buf, self._tail.offset, header.salt, self._tail.lsn, last, records)
            if records:
                for raw in records:
                    self.listener(LogRecord(  # type: ignore[misc]
                        raw.header.lsn, decode_batch(raw.payload),
                        Position(number, raw.offset + raw.header.size, raw.header.lsn + raw.header.count)))
            self._tail = Position(number, end, next_lsn)
            if damage is not None:
                self._handle_damage(damage)
                return
            if last:
                return
            self._open_next_segment(number + 1)

    def _caught_up(self) -> bool:
        """True when nobody appended since we last looked: the tail segment, open for
        writing, has not grown, and no segment follows it. Two syscalls instead of a
        read: the path of every append while no other process writes."""
        number, offset, _ = self._tail
        if self._fd is None or number + 1 in self._headers:
            return False
        if os.fstat(self._fd).st_size != offset:
            return False
        return not os.path.exists(os.path.join(self.log_dir, segment_name(number + 1)))

    def _open_next_segment(self, number: int) -> None:
        if number not in self._headers:
            path = self.log_dir / segment_name(number)
            header = decode_header(read_header(path))
            if isinstance(header, str):
                raise CorruptLog(f"log: {path}: {header}", str(path), 0)
            if header.store_uuid != self.store_uuid:
                raise CorruptLog(f"log: {path} belongs to store {header.store_uuid}", str(path), 0)
            self._headers[number] = header
        self._tail = Position(number, HEADER_SIZE, self._tail.lsn)
        self._close_fd()

    def _handle_damage(self, damage: Damage) -> None:
        if not damage.torn:
            raise CorruptLog(
                f"log: corruption in {damage.segment} at offset {damage.offset}: {damage.reason}",
                str(damage.segment), damage.offset)
        if self.writer and self._lock_depth:
            # Only a writer under the lock may repair: a reader may be looking at a record
            # another process is writing right now.
            from eventstore.log.repair import cut_torn_tail

            cut_torn_tail(damage.segment, damage.offset)

    def catch_up(self) -> None:
        """Read what other processes appended since we last looked (listener gets it)."""
        self._check_usable()
        with self._thread_lock:
            self._advance(deliver=True)

    # --- writing ---------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator["EventLog"]:
        """Hold the writer lock (threads and processes), caught up with every append.

        The store decides and appends inside one ``locked`` block, so that the state it
        checks its rules against is the state its events follow.
        """
        self._check_usable()
        if not self.writer:
            raise StorageError("log opened read-only")
        with self._thread_lock:
            with self._locked_if_writer():
                if self._lock_depth == 1:
                    self._advance(deliver=True)
                yield self

    @contextmanager
    def _locked_if_writer(self) -> Iterator[None]:
        with self._thread_lock:
            if self._lock_fd is not None and self._lock_depth == 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_fd is not None and self._lock_depth == 0:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def append(self, event: Event) -> int:
        """Append one event; its LSN once it is durable."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[Event]) -> list[int]:
        """Append events as one atomic record; their LSNs once durable."""
        if not events:
            return []
        self._check_usable()
        if not self.writer:  # a reader holds no lock: its write could interleave with a writer's
            raise StorageError("log opened read-only")
        if self._lock_depth and self._thread_lock._is_owned():  # type: ignore[attr-defined]
            first = self._append_group(list(events))  # inside locked(): no grouping
        else:
            first = self._committer.submit(list(events))
        return list(range(first, first + len(events)))

    def _append_group(self, events: list[Event]) -> int:
        self._check_usable()
        payload = encode_batch(events)
        with self._thread_lock, self._locked_if_writer():
            if self._lock_depth == 1:
                self._advance(deliver=True)
            fd = self._writable_fd(len(payload))
            number, offset, lsn = self._tail
            record = encode_record(payload, lsn, len(events), self._headers[number].salt)
            faults.point("log.append.before-write")
            self._write_at(fd, record, offset)
            faults.point("log.append.after-write")
            try:
                os.fdatasync(fd)
            except OSError as exc:
                # The kernel may have dropped the dirty pages: whether the record is on
                # disk is unknowable, so this handle must never claim anything again.
                self._failed = exc
                raise LogClosed(f"log: fdatasync failed ({exc.strerror}); reopen the store") from exc
            faults.point("log.append.after-fsync")
            self._tail = Position(number, offset + len(record), lsn + len(events))
            return lsn

    def _write_at(self, fd: int, record: bytes, offset: int) -> None:
        try:
            view = memoryview(record)
            pos = offset
            while view:
                written = os.pwrite(fd, view, pos)
                view, pos = view[written:], pos + written
        except OSError as exc:
            # Nothing was acknowledged: take the partial record back so the log is as it
            # was. If even that fails, the handle is unusable.
            try:
                os.ftruncate(fd, offset)
            except OSError:
                self._failed = exc
            if exc.errno == errno.ENOSPC:
                raise StorageError("log: no space left on device; nothing was written") from exc
            raise StorageError(f"log: write failed: {exc.strerror}") from exc

    def _writable_fd(self, payload_size: int) -> int:
        number, offset, lsn = self._tail
        if offset > HEADER_SIZE and offset + payload_size > self.segment_size:
            create_segment(self.log_dir, self.store_uuid, number + 1, lsn)  # type: ignore[arg-type]
            self._open_next_segment(number + 1)
        if self._fd is None:
            self._fd = os.open(self.log_dir / segment_name(self._tail.segment), os.O_WRONLY)
        return self._fd

    # --- reading -----------------------------------------------------------------------------

    @property
    def tail(self) -> Position:
        """Where the next record goes: the end of everything read or written so far."""
        return self._tail

    @property
    def last_lsn(self) -> int:
        return self._tail.lsn - 1

    def records(self, start: Position | None = None, until: Position | None = None) -> Iterator[LogRecord]:
        """Every record from ``start`` (default: the beginning) to the tail, decoded."""
        until = until or self._tail
        pos = start if start is not None else self._start_position(None)
        while True:
            if pos.segment > until.segment:
                return
            path = self.log_dir / segment_name(pos.segment)
            header = self._headers.get(pos.segment)
            if header is None:
                return
            limit = until.offset if pos.segment == until.segment else None
            buf = read_from(path, pos.offset)
            if limit is not None:
                buf = buf[: max(0, limit - pos.offset)]
            raw: list[RawRecord] = []
            end, next_lsn, damage = scan(path, buf, pos.offset, header.salt, pos.lsn, False, raw)
            if damage is not None:
                raise CorruptLog(f"log: corruption in {path} at offset {damage.offset}: {damage.reason}",
                                 str(path), damage.offset)
            for r in raw:
                yield LogRecord(r.header.lsn, decode_batch(r.payload),
                                Position(pos.segment, r.offset + r.header.size, r.header.lsn + r.header.count))
            if pos.segment == until.segment:
                return
            pos = Position(pos.segment + 1, HEADER_SIZE, next_lsn)

    def events(self, from_lsn: int = 1) -> Iterator[tuple[int, Event]]:
        """(LSN, event) for every event from ``from_lsn`` on."""
        start = None
        for number in sorted(self._headers, reverse=True):
            header = self._headers[number]
            if header.first_lsn <= from_lsn:
                start = Position(number, HEADER_SIZE, header.first_lsn)
                break
        for record in self.records(start):
            for i, event in enumerate(record.events):
                if record.lsn + i >= from_lsn:
                    yield record.lsn + i, event

    def verify(self) -> VerifyReport:
        """Walk every segment and record, decoding each; raise CorruptLog at the first
        damage that is not a torn tail. Changes nothing."""
        segments = list_segments(self.log_dir)
        records = events = 0
        lsn = self._headers[min(self._headers)].first_lsn if self._headers else 1
        torn = None
        for i, (number, path) in enumerate(segments):
            header = decode_header(read_header(path))
            if isinstance(header, str) or header.store_uuid != self.store_uuid:
                raise CorruptLog(f"log: {path}: {header if isinstance(header, str) else 'foreign store'}", str(path), 0)
            if header.first_lsn != lsn:
                raise CorruptLog(f"log: {path}: first LSN {header.first_lsn}, expected {lsn}", str(path), 0)
            raw: list[RawRecord] = []
            _, lsn, damage = scan(path, read_from(path, HEADER_SIZE), HEADER_SIZE, header.salt, lsn,
                                  i == len(segments) - 1, raw)
            for r in raw:
                try:
                    events += len(decode_batch(r.payload))
                except Exception as exc:  # a valid CRC over an undecodable payload
                    raise CorruptLog(f"log: {path}: undecodable record at {r.offset}: {exc}", str(path), r.offset)
            records += len(raw)
            if damage is not None:
                if not damage.torn:
                    raise CorruptLog(f"log: corruption in {path} at offset {damage.offset}: {damage.reason}",
                                     str(path), damage.offset)
                torn = damage
        return VerifyReport(len(segments), records, events, lsn - 1, torn)

    # --- closing ---------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise LogClosed("log: handle is closed")
        if self._failed is not None:
            raise LogClosed(f"log: handle unusable after a failed sync ({self._failed}); reopen the store")

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Release the file handles and the lock. Every acknowledged append is already durable."""
        if self._closed:
            return
        self._closed = True
        self._close_fd()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
