"""Reading segments: walk records, stop at the first damage, and tell a torn tail from
corruption (docs/log-format.md, "Damage")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from eventstore.log.format import (ALIGN, HEADER_SIZE, RECORD_HEADER_SIZE, FormatError, RecordHeader, SegmentHeader,
                                   check_record, decode_header, plausible_record)


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


def scan(path: Path, buf: bytes, base: int, salt: int, expected_lsn: int, last: bool,
         records: list[RawRecord] | None = None) -> tuple[int, int, Damage | None]:
    """Walk the records in ``buf`` (the segment's bytes from file offset ``base``).

    Appends each valid record to ``records`` when given. Returns the file offset after
    the last valid record, the next expected LSN, and the damage found there, if any.
    """
    pos, end = 0, len(buf)
    while pos < end:
        try:
            rec = check_record(buf, pos, end, salt, expected_lsn)
        except FormatError as exc:
            return base + pos, expected_lsn, classify(path, buf, base, pos, salt, str(exc), last)
        if records is not None:
            body = pos + RECORD_HEADER_SIZE
            records.append(RawRecord(base + pos, rec, buf[body:body + rec.length]))
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
    valid_after = _first_valid_record_after(buf, pos, salt)
    if valid_after is not None:
        return Damage(path, base + pos, f"{reason}; a valid record follows at offset {base + valid_after}", torn=False)
    return Damage(path, base + pos, reason, torn=True)


def _first_valid_record_after(buf: bytes, pos: int, salt: int) -> int | None:
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
