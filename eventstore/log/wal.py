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
from eventstore.errors import CorruptLog, LogClosed, LostRecords, StorageError
from eventstore.events import Event, decode_batch, decode_lost, encode_batch
from eventstore.fsutil import fsync_dir
from eventstore.log.format import (HEADER_SIZE, TYPE_LOST, FormatError, SegmentHeader, encode_record, lost_record_info,
                                   segment_name)
from eventstore.log.group_commit import GroupCommitter
from eventstore.log.reader import (ChainError, Damage, RawRecord, list_segments, read_chain, read_from, read_header,
                                   record_header_at, scan, segment_path, segment_size, span_crc)
from eventstore.log.segment import create_segment, cut_torn_tail, remove_temp_files
from eventstore.private import FILE_MODE, make_dir

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024


class Position(NamedTuple):
    """A place in the log: a segment, a byte offset in it, and the LSN written there next."""

    segment: int
    offset: int
    lsn: int


class Fingerprint(NamedTuple):
    """A record as something else saw it: where it starts, its first LSN, its CRC.
    Read models and checkpoints keep the fingerprint of the last record they cover, so
    that an open can tell whether they follow this very log."""

    segment: int
    offset: int
    lsn: int
    crc: int


class Span(NamedTuple):
    """Record bytes from ``start`` to ``end`` and their CRC32C: what the read models
    projected since the newest checkpoint, checked at every open with one read."""

    start: Position
    end: Position
    crc: int


class LogRecord(NamedTuple):
    """One record as read: the LSN of its first event, the events, where it ends,
    where it starts (in ``end.segment``), its CRC and its bytes."""

    lsn: int
    events: list[Event]
    end: Position
    offset: int = 0
    crc: int = 0
    raw: bytes = b""

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.end.segment, self.offset, self.lsn, self.crc)


class VerifyReport(NamedTuple):
    segments: int
    records: int
    events: int
    last_lsn: int
    torn_tail: Damage | None
    lost: int = 0  # LSNs that records-lost markers stand for


def _read(path: Path, offset: int) -> bytes:
    """A segment's bytes from ``offset``; an archive that does not decompress whole (its
    size and checksum) is corruption of that segment, like a bad record."""
    try:
        return read_from(path, offset)
    except FormatError as exc:
        raise corruption(path, 0, str(exc)) from None


def decode_record(raw: RawRecord, segment: int) -> LogRecord:
    """The events of a checked record (a records-lost marker decodes to one event)."""
    header = raw.header
    if header.type == TYPE_LOST:
        events = [decode_lost(lost_record_info(raw.payload), header.lsn, header.count)]
    else:
        events = decode_batch(raw.payload)
    return LogRecord(header.lsn, events, Position(segment, raw.offset + header.size, header.lsn + header.count),
                     raw.offset, header.crc, raw.raw)


def corruption(segment: Path, offset: int, reason: str) -> CorruptLog:
    """The one way the log reports damage that is not a torn tail: which segment, which
    byte, why."""
    return CorruptLog(f"log: corruption in {segment} at offset {offset}: {reason}", str(segment), offset)


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
        self._lock_owner: int | None = None  # the thread inside locked(), if any
        self._thread_lock = threading.RLock()
        self._failed: BaseException | None = None
        self._closed = False
        self._seen_lsn = 0
        self.span_verified = False  # the open checked the read models' span with one CRC
        self.check_start = Position(0, 0, 1)  # where the open's check of records began
        self._committer = GroupCommitter(self._append_group)

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike, *, create: bool = True, writer: bool = True,
             segment_size: int = DEFAULT_SEGMENT_SIZE, start: Position | None = None, span: Span | None = None,
             seen_lsn: int = 0, listener: Listener | None = None) -> "EventLog":
        """Open (or create) the log and check it (docs/integrity.md, "What an open checks"):
        the chain of segment headers, then every record from ``start`` (the newest
        checkpoint's position; default the beginning) to the end — or, when the bytes
        of ``span`` still have its CRC, only the records after it. A torn tail is cut
        when ``writer``; corruption raises ``CorruptLog``. ``seen_lsn``: the highest
        LSN the read models or a checkpoint have seen; a log that no longer reaches it
        has lost acknowledged records (``LostRecords``)."""
        faults.check_environment()
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
                log._load(create, start, span, seen_lsn)
        except BaseException:
            log.close()
            raise
        return log

    @staticmethod
    @contextmanager
    def exclusive(root: str | os.PathLike) -> Iterator[None]:
        """Hold the writer lock of the log at ``root`` without opening it (a repair of a
        log that cannot be opened must still keep writers out)."""
        log_dir = Path(root) / "log"
        fd = os.open(log_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self, create: bool, start: Position | None, span: Span | None, seen_lsn: int) -> None:
        if self.writer:
            remove_temp_files(self.log_dir)
        segments = list_segments(self.log_dir)
        if not segments and seen_lsn:
            raise LostRecords(f"log: records lost: {self.log_dir} has no segments, but LSN {seen_lsn} was "
                              f"acknowledged; see 'layerstore log repair'", 1, seen_lsn)
        if not segments:
            if not (create and self.writer):
                raise StorageError(f"log at {self.log_dir} has no segments")
            create_segment(self.log_dir, uuidlib.uuid4(), 1, 1)
            segments = list_segments(self.log_dir)
        self._read_headers(segments)
        self.check_start = self._start_position(start)
        self.span_verified = span is not None and self.span_holds(span)
        self._tail = span.end if self.span_verified else self.check_start
        self._seen_lsn = seen_lsn
        try:
            self._advance(deliver=False)
        finally:
            self._seen_lsn = 0
        if self.last_lsn < seen_lsn:
            raise LostRecords(f"log: records lost: the log ends at LSN {self.last_lsn}, but LSN {seen_lsn} was "
                              f"acknowledged (the read models or a checkpoint have seen it); "
                              f"see 'layerstore log repair'", self.last_lsn + 1, seen_lsn)

    def span_holds(self, span: Span) -> bool:
        """True when the record bytes of ``span`` still have its CRC."""
        if span.start.segment not in self._headers or span.end.segment not in self._headers:
            return False
        if not HEADER_SIZE <= span.start.offset or (span.start.segment, span.start.offset) > span.end[:2]:
            return False
        return span_crc(self.log_dir, span.start[:2], span.end[:2]) == span.crc

    def matches(self, fingerprint: Fingerprint, end: Position | None = None) -> bool:
        """True when the record at ``fingerprint``'s place has its LSN and CRC (and,
        given ``end``, ends there)."""
        if fingerprint.segment not in self._headers or fingerprint.offset < HEADER_SIZE:
            return False
        header = record_header_at(segment_path(self.log_dir, fingerprint.segment), fingerprint.offset)
        if header is None or (header.lsn, header.crc) != (fingerprint.lsn, fingerprint.crc):
            return False
        return end is None or end == Position(fingerprint.segment, fingerprint.offset + header.size,
                                              header.lsn + header.count)

    def _read_headers(self, segments: list[tuple[int, Path]]) -> None:
        try:
            self._headers = read_chain(self.log_dir, quick=True)
        except ChainError as exc:
            raise corruption(exc.path, 0, str(exc)) from None
        self.store_uuid = self._headers[min(self._headers)].store_uuid

    def _checked_header(self, path: Path, number: int) -> SegmentHeader:
        """The header of segment ``number``, checked: valid, numbered as its file name
        says, of this store (the first header read decides which store that is)."""
        try:
            header = read_header(path)
        except FormatError as exc:
            raise corruption(path, 0, str(exc)) from None
        if header.number != number:
            raise corruption(path, 0, f"header says segment {header.number}")
        if self.store_uuid is None:
            self.store_uuid = header.store_uuid
        elif header.store_uuid != self.store_uuid:
            raise corruption(path, 0, f"belongs to store {header.store_uuid}, not {self.store_uuid}")
        return header

    def _start_position(self, start: Position | None) -> Position:
        # a start past its segment's end (its bytes cut or lost since) is not trusted
        if start is not None and start.segment in self._headers and \
                HEADER_SIZE <= start.offset <= segment_size(segment_path(self.log_dir, start.segment)):
            return start
        return self.first_position

    def forget_before(self, first_segment: int) -> None:
        """Retention dropped the segments before ``first_segment``: the log starts there."""
        for number in [n for n in self._headers if n < first_segment]:
            del self._headers[number]

    def headers(self) -> dict[int, SegmentHeader]:
        """The header of every segment of the log, by number (archived ones included)."""
        return dict(self._headers)

    @property
    def first_position(self) -> Position:
        """Where the first record of the log is (or goes)."""
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
                raise corruption(path, 0, f"first LSN {header.first_lsn}, expected {self._tail.lsn}")
            records: list[RawRecord] | None = [] if deliver and self.listener else None
            last = (number + 1) not in self._headers and not (self.log_dir / segment_name(number + 1)).exists()
            buf = _read(path, self._tail.offset)
            end, next_lsn, damage = scan(path, buf, self._tail.offset, header.salt, self._tail.lsn, last, records,
                                         self._seen_lsn)
            if records:
                for raw in records:
                    self.listener(decode_record(raw, number))  # type: ignore[misc]
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
            self._headers[number] = self._checked_header(self.log_dir / segment_name(number), number)
        self._tail = Position(number, HEADER_SIZE, self._tail.lsn)
        self._close_fd()

    def _handle_damage(self, damage: Damage) -> None:
        if not damage.torn:
            raise corruption(damage.segment, damage.offset, damage.reason)
        if self.writer and self._lock_depth:
            # Only a writer under the lock may repair: a reader may be looking at a record
            # another process is writing right now.
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
            self._lock_owner = threading.get_ident()
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._lock_owner = None
                    if self._lock_fd is not None:
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
        if self._lock_depth and self._lock_owner == threading.get_ident():
            first = self._append_group(list(events))  # inside locked(): no grouping
        else:
            first = self._committer.submit(list(events))
        return list(range(first, first + len(events)))

    def _append_group(self, events: list[Event]) -> int:
        return self._write_record(events).lsn

    def append_record(self, events: Sequence[Event]) -> LogRecord:
        """Append ``events`` as one record from inside ``locked()``; the record as it
        was written, once durable (its caller projects it)."""
        if not (self._lock_depth and self._lock_owner == threading.get_ident()):
            raise StorageError("log: append_record needs the writer lock (use locked())")
        return self._write_record(list(events))

    def _write_record(self, events: list[Event]) -> LogRecord:
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
            crc = int.from_bytes(record[:4], "little")
            return LogRecord(lsn, events, self._tail, offset, crc, record)

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
        """The LSN of the last event read or written (0: none)."""
        return self._tail.lsn - 1

    def records(self, start: Position | None = None, until: Position | None = None) -> Iterator[LogRecord]:
        """Every record from ``start`` (default: the beginning) to the tail, decoded."""
        until = until or self._tail
        pos = start if start is not None else self.first_position
        while True:
            if pos.segment > until.segment:
                return
            path = segment_path(self.log_dir, pos.segment)
            header = self._headers.get(pos.segment)
            if header is None:
                return
            limit = until.offset if pos.segment == until.segment else None
            buf = _read(path, pos.offset)
            if limit is not None:
                buf = buf[: max(0, limit - pos.offset)]
            raw: list[RawRecord] = []
            end, next_lsn, damage = scan(path, buf, pos.offset, header.salt, pos.lsn, False, raw)
            if damage is not None:
                raise corruption(path, damage.offset, damage.reason)
            for r in raw:
                yield decode_record(r, pos.segment)
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
            lsn = record.lsn
            if lsn >= from_lsn:
                yield from zip(range(lsn, lsn + len(record.events)), record.events)
            else:
                for i, event in enumerate(record.events):
                    if lsn + i >= from_lsn:
                        yield lsn + i, event

    def verify(self, seen_lsn: int = 0) -> VerifyReport:
        """Walk every segment and record, decoding each; raise CorruptLog at the first
        damage that is not a torn tail (damage at or before ``seen_lsn`` never is).
        Changes nothing."""
        first = min(self._headers) if self._headers else 1
        segments = [(n, p) for n, p in list_segments(self.log_dir) if n >= first]  # not behind the horizon
        records = events = lost = 0
        lsn = self._headers[min(self._headers)].first_lsn if self._headers else 1
        torn = None
        for i, (number, path) in enumerate(segments):
            header = self._checked_header(path, number)
            if header.first_lsn != lsn:
                raise corruption(path, 0, f"first LSN {header.first_lsn}, expected {lsn}")
            raw: list[RawRecord] = []
            _, lsn, damage = scan(path, _read(path, HEADER_SIZE), HEADER_SIZE, header.salt, lsn,
                                  i == len(segments) - 1, raw, seen_lsn)
            for r in raw:
                try:
                    events += len(decode_record(r, number).events)
                except Exception as exc:  # a valid CRC over an undecodable payload
                    raise corruption(path, r.offset, f"undecodable record: {exc}") from None
                if r.header.type == TYPE_LOST:
                    lost += r.header.count
            records += len(raw)
            if damage is not None:
                if not damage.torn:
                    raise corruption(path, damage.offset, damage.reason)
                torn = damage
        if lsn - 1 < seen_lsn:
            raise LostRecords(f"log: records lost: the log ends at LSN {lsn - 1}, but LSN {seen_lsn} was "
                              f"acknowledged", lsn, seen_lsn)
        return VerifyReport(len(segments), records, events, lsn - 1, torn, lost)

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
