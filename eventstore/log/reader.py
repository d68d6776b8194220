"""Reading segments: walk records, stop at the first damage, and tell a torn tail from
corruption (docs/log-format.md, "Damage")."""

from __future__ import annotations

import functools
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


ARCHIVE_DIR = "archive"       # sealed segments, zstd-compressed: <name>.zst (docs/lifecycle.md)
ARCHIVE_SUFFIX = ".zst"
HORIZON_FILE = "HORIZON"      # where the log starts once retention dropped older segments


def list_segments(log_dir: Path, archived: bool = True) -> list[tuple[int, Path]]:
    """The segments of the log in ``log_dir``, by number (gaps are the reader's
    business): the live files, and (``archived``) the archived ones no live file
    replaces (a live file wins: an archive whose segment was not yet unlinked)."""
    found: dict[int, Path] = {}
    if archived:
        for number, path in _numbered(log_dir / ARCHIVE_DIR, ARCHIVE_SUFFIX):
            found[number] = path
    found.update(_numbered(log_dir, ""))
    return sorted(found.items())


def _numbered(directory: Path, suffix: str) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if suffix and not name.endswith(suffix):
            continue
        number = segment_number(name[:len(name) - len(suffix)] if suffix else name)
        if number is not None:
            found.append((number, directory / name))
    return found


def segment_path(log_dir: Path, number: int) -> Path:
    """Where segment ``number`` is: its live file, else its archive."""
    live = log_dir / segment_name(number)
    if live.exists():
        return live
    archived = log_dir / ARCHIVE_DIR / (segment_name(number) + ARCHIVE_SUFFIX)
    return archived if archived.exists() else live


def segment_size(path: Path) -> int:
    """The size of a segment's bytes (decompressed, for an archive: the size its zstd
    frame header states, which the frame is checked against whenever it is read)."""
    if path.name.endswith(ARCHIVE_SUFFIX):
        import zstandard

        with open(path, "rb") as f:
            head = f.read(18)  # the longest zstd frame header
        try:
            size = zstandard.frame_content_size(head)
        except zstandard.ZstdError as exc:
            raise FormatError(f"archived segment cannot be decompressed ({exc})") from None
        return size if size >= 0 else len(_decompressed(path))
    return os.stat(path).st_size


def read_horizon(log_dir: Path) -> tuple[int, int] | None:
    """(first segment, first LSN) of a log whose older segments retention dropped;
    None when it starts at segment 1. ChainError when the file is damaged."""
    path = log_dir / HORIZON_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    fields = data.split()
    try:
        segment, lsn, crc = (int(x) for x in fields)
    except ValueError:
        raise ChainError(path, "the horizon file is damaged") from None
    if crc32c(f"{segment} {lsn}".encode()) != crc or segment < 1 or lsn < 1:
        raise ChainError(path, "the horizon file is damaged (checksum)")
    return segment, lsn


def horizon_bytes(segment: int, lsn: int) -> bytes:
    """The contents of the horizon file for a log starting at ``segment`` / ``lsn``."""
    return f"{segment} {lsn} {crc32c(f'{segment} {lsn}'.encode())}\n".encode()


class ChainError(Exception):
    """The segment files do not form one log: ``path`` and what is wrong with it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(reason)
        self.path = path


def read_chain(log_dir: Path, quick: bool = False) -> dict[int, SegmentHeader]:
    """Every segment's header, checked as a chain: numbered 1, 2, … (or from the
    horizon's segment on) without a gap, each header valid and numbered as its file,
    one store, first LSNs starting at 1 (or the horizon's) and increasing. Archived
    segments count (``quick``: their headers read as ``read_header`` says). ChainError
    names the first segment that breaks it."""
    headers: dict[int, SegmentHeader] = {}
    horizon = read_horizon(log_dir)
    expected, first_lsn = horizon or (1, 1)
    previous_lsn, store = 0, None
    for number, path in list_segments(log_dir):
        if number < expected and horizon:
            continue  # dropped by retention, its archive not yet deleted: not the log any more
        if number != expected:
            raise ChainError(path, f"segment {segment_name(expected)} is missing")
        try:
            header = read_header(path, quick)
        except FormatError as exc:
            raise ChainError(path, str(exc)) from None
        if header.number != number:
            raise ChainError(path, f"header says segment {header.number}")
        if store is not None and header.store_uuid != store:
            raise ChainError(path, f"belongs to store {header.store_uuid}, not {store}")
        if header.first_lsn <= previous_lsn or (not headers and header.first_lsn != first_lsn):
            raise ChainError(path, f"first LSN {header.first_lsn} does not follow segment {number - 1}'s")
        store, previous_lsn = header.store_uuid, header.first_lsn
        headers[number] = header
        expected += 1
    return headers


def read_from(path: Path, offset: int, limit: int | None = None) -> bytes:
    """The bytes of ``path`` from ``offset`` to its current end (at most ``limit``); of
    an archived segment, its decompressed bytes."""
    if path.name.endswith(ARCHIVE_SUFFIX):
        data = _decompressed(path)
        return data[offset:] if limit is None else data[offset:offset + limit]
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        # archived since we listed it: the archive was checked before the file went
        archived = path.parent / ARCHIVE_DIR / (path.name + ARCHIVE_SUFFIX)
        if path.name.endswith(".wal") and archived.exists():
            return read_from(archived, offset, limit)
        raise
    try:
        size = os.fstat(fd).st_size
        if size <= offset:
            return b""
        length = size - offset if limit is None else min(limit, size - offset)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _decompressed_prefix(path: Path, length: int) -> bytes:
    import zstandard

    try:
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
            data = b""
            while len(data) < length:
                chunk = reader.read(length - len(data))
                if not chunk:
                    break
                data += chunk
            return data
    except zstandard.ZstdError as exc:
        raise FormatError(f"archived segment cannot be decompressed ({exc})") from None


def _decompressed(path: Path) -> bytes:
    st = os.stat(path)
    return _decompress_cached(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=2)  # a replay reads each archived segment from its start, once
def _decompress_cached(path: str, _mtime: int, _size: int) -> bytes:
    import zstandard

    with open(path, "rb") as f:
        data = f.read()
    try:
        # one whole frame, its size and checksum as written: a cut or flipped archive is
        # damage, never a shorter segment
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise FormatError(f"archived segment cannot be decompressed ({exc})") from None


def read_header(path: Path, quick: bool = False) -> SegmentHeader:
    """The header of the segment at ``path``; FormatError when it is not a valid one.
    Of an archived segment, the whole frame is decompressed and checked (its size and
    checksum) unless ``quick``: then only its first bytes, as every open reads them
    (the frame is checked whenever records are read from it: replay, history, verify,
    repair, a rebuild)."""
    if quick and path.name.endswith(ARCHIVE_SUFFIX):
        return decode_header(_decompressed_prefix(path, HEADER_SIZE))
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
        path = segment_path(log_dir, number)
        first = start[1] if number == start[0] else HEADER_SIZE
        try:
            data = read_from(path, first) if number != end[0] else read_from(path, first, end[1] - first)
        except FileNotFoundError:
            return None
        if number == end[0] and len(data) != end[1] - first:
            return None
        crc = crc32c(data, crc)
    return crc
