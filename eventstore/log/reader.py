"""Reading segments: walk records, stop at the first damage, and tell a torn tail from
corruption (docs/log-format.md, "Damage")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from eventstore.log.format import (ALIGN, HEADER_SIZE, RECORD, RECORD_HEADER_SIZE, FormatError, RecordHeader,
                                   SegmentHeader, check_record, crc32c, decode_header, plausible_record, segment_name,
                                   segment_number)


class Damage(NamedTuple):
    """The first bad byte of a segment, why it is bad, and whether it is a torn tail."""

    segment: Path
    offset: int
    reason: str
    torn: bool


class RawRecord(NamedTuple):
    offset: int
    header: RecordHeader
    payload: bytes
    raw: bytes  # the whole record as it is on disk: header, payload, padding


def list_segments(log_dir: Path) -> list[tuple[int, Path]]:
    """The segment files in ``log_dir``, by number (gaps are the reader's business)."""
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    found = ((segment_number(name), name) for name in names)
    return sorted((number, log_dir / name) for number, name in found if number is not None)


class ChainError(Exception):
    """The segment files do not form one log: ``path`` and what is wrong with it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(reason)
        self.path = path


def read_chain(log_dir: Path) -> dict[int, SegmentHeader]:
    """Every segment's header, checked as a chain: numbered 1, 2, … without a gap, each
    header valid and numbered as its file, one store, first LSNs starting at 1 and
    increasing. ChainError names the first segment that breaks it."""
    headers: dict[int, SegmentHeader] = {}
    expected, previous_lsn, store = 1, 0, None
    for number, path in list_segments(log_dir):
        if number != expected:
            raise ChainError(path, f"segment {segment_name(expected)} is missing")
        try:
            header = read_header(path)
        except FormatError as exc:
            raise ChainError(path, str(exc)) from None
        if header.number != number:
            raise ChainError(path, f"header says segment {header.number}")
        if store is not None and header.store_uuid != store:
            raise ChainError(path, f"belongs to store {header.store_uuid}, not {store}")
        if header.first_lsn <= previous_lsn or (number == 1 and header.first_lsn != 1):
            raise ChainError(path, f"first LSN {header.first_lsn} does not follow segment {number - 1}'s")
        store, previous_lsn = header.store_uuid, header.first_lsn
        headers[number] = header
        expected += 1
    return headers


def read_from(path: Path, offset: int, limit: int | None = None) -> bytes:
    """The bytes of ``path`` from ``offset`` to its current end (at most ``limit``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size <= offset:
            return b""
        length = size - offset if limit is None else min(limit, size - offset)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def read_header(path: Path) -> SegmentHeader:
    """The header of the segment at ``path``; FormatError when it is not a valid one."""
    return decode_header(read_from(path, 0, HEADER_SIZE))


def record_header_at(path: Path, offset: int) -> RecordHeader | None:
    """The (unchecked) record header at ``offset`` of ``path``; None when the file is
    missing or too short. Enough to compare a fingerprint (LSN, count, CRC)."""
    try:
        data = read_from(path, offset, RECORD_HEADER_SIZE)
    except FileNotFoundError:
        return None
    if len(data) < RECORD_HEADER_SIZE:
        return None
    return RecordHeader(*RECORD.unpack_from(data, 0))


def scan(path: Path, buf: bytes, base: int, salt: int, expected_lsn: int, last: bool,
         records: list[RawRecord] | None = None, seen_lsn: int = 0) -> tuple[int, int, Damage | None]:
    """Walk the records in ``buf`` (the segment's bytes from file offset ``base``).

    Appends each valid record to ``records`` when given. Returns the file offset after
    the last valid record, the next expected LSN, and the damage found there, if any.
    ``seen_lsn``: the highest LSN derived data (read models, checkpoints) has seen;
    damage at or before it was acknowledged, so it is never a torn tail.
    """
    pos, end = 0, len(buf)
    while pos < end:
        try:
            rec = check_record(buf, pos, end, salt, expected_lsn)
        except FormatError as exc:
            reason = str(exc)
            if expected_lsn <= seen_lsn:
                reason += f" (LSN {expected_lsn} was acknowledged: the read models or a checkpoint have seen LSN {seen_lsn})"
            return base + pos, expected_lsn, classify(path, buf, base, pos, salt, reason,
                                                      last and expected_lsn > seen_lsn)
        if records is not None:
            body = pos + RECORD_HEADER_SIZE
            records.append(RawRecord(base + pos, rec, buf[body:body + rec.length], buf[pos:pos + rec.size]))
        expected_lsn = rec.lsn + rec.count
        pos += rec.size
    return base + pos, expected_lsn, None


def classify(path: Path, buf: bytes, base: int, pos: int, salt: int, reason: str, last: bool) -> Damage:
    """Torn tail when the damage is in the last segment and nothing valid follows it.

    One fdatasync covers exactly one record (group commit writes a group as one
    record), so a crash can tear at most the last record; a valid record *after* bad
    bytes means the bad bytes were once acknowledged: that is corruption.
    """
    if not last:
        return Damage(path, base + pos, reason, torn=False)
    tail = buf[pos:]
    if not tail.strip(b"\0"):
        return Damage(path, base + pos, reason + " (zero-filled tail)", torn=True)
    valid_after = first_valid_record_after(buf, pos, salt)
    if valid_after is not None:
        return Damage(path, base + pos, f"{reason}; a valid record follows at offset {base + valid_after}", torn=False)
    return Damage(path, base + pos, reason, torn=True)


def first_valid_record_after(buf: bytes, pos: int, salt: int) -> int | None:
    """The offset in ``buf`` of the first valid record after ``pos`` (any LSN), or None."""
    # Records are 8-byte aligned relative to the segment start (the header is 64 bytes),
    # so only aligned offsets can start one. The cheap header checks reject almost every
    # offset before a CRC is computed.
    start = pos + ALIGN - (pos % ALIGN) if pos % ALIGN else pos + ALIGN
    end = len(buf)
    for p in range(start, end - RECORD_HEADER_SIZE + 1, ALIGN):
        if not plausible_record(buf, p, end):
            continue
        try:
            check_record(buf, p, end, salt, None)
        except FormatError:
            continue
        return p
    return None


def span_crc(log_dir: Path, start: tuple[int, int], end: tuple[int, int]) -> int | None:
    """CRC32C of the record bytes from ``start`` to ``end`` (each a segment number and
    an offset), across segments, every later segment from just after its header; None
    when a segment is missing or ends before the span does."""
    crc = 0
    for number in range(start[0], end[0] + 1):
        path = log_dir / segment_name(number)
        first = start[1] if number == start[0] else HEADER_SIZE
        try:
            data = read_from(path, first) if number != end[0] else read_from(path, first, end[1] - first)
        except FileNotFoundError:
            return None
        if number == end[0] and len(data) != end[1] - first:
            return None
        crc = crc32c(data, crc)
    return crc
