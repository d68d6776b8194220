"""The on-disk format of the log: constants and the pure encode/decode of headers and
records. docs/log-format.md is the specification; this file follows it."""

from __future__ import annotations

import functools
import struct
import uuid as uuidlib
from typing import NamedTuple

import google_crc32c

MAGIC = b"LAYRWAL\n"
SEGMENT_SUFFIX = ".wal"
FORMAT_VERSION = 1

# segment header: magic, format version, event schema version, reserved, store uuid,
# segment number, first LSN, reserved, crc32c of the bytes before it.
HEADER = struct.Struct("<8sHHI16sQQ12s")
HEADER_SIZE = HEADER.size + 4  # 64

# record header: crc32c, payload length, type, padding length, reserved, event count, LSN
RECORD = struct.Struct("<IIBBHIQ")
RECORD_HEADER_SIZE = RECORD.size  # 24
ALIGN = 8

TYPE_EVENTS = 1
# A marker written by log repair in place of records that were damaged or missing: it
# occupies their LSNs (``count`` of them) so the log is gap-free again and says so.
TYPE_LOST = 2
RECORD_TYPES = frozenset({TYPE_EVENTS, TYPE_LOST})
LENGTH_PREFIX = struct.Struct("<I")

# A record larger than this is refused on write and taken as damage on read: a corrupt
# length word must not make the reader allocate gigabytes.
MAX_PAYLOAD = 64 * 1024 * 1024


def segment_name(number: int) -> str:
    """The file name of segment ``number``: 16 digits, ``.wal``."""
    return f"{number:016d}{SEGMENT_SUFFIX}"


def segment_number(name: str) -> int | None:
    """The number a segment file name says, or None when ``name`` is not one."""
    stem, dot, suffix = name.partition(".")
    if dot and "." + suffix == SEGMENT_SUFFIX and len(stem) == 16 and stem.isdigit():
        return int(stem)
    return None


class FormatError(ValueError):
    """Bytes that are not a valid segment header or record; the message says why."""


class SegmentHeader(NamedTuple):
    format_version: int
    schema_version: int
    store_uuid: uuidlib.UUID
    number: int
    first_lsn: int

    @property
    def salt(self) -> int:
        """Seed of every record CRC in this segment: bytes copied from another segment
        or another store never validate here."""
        return _salt(self)


class RecordHeader(NamedTuple):
    crc: int
    length: int
    type: int
    padding: int
    reserved: int
    count: int
    lsn: int

    @property
    def size(self) -> int:
        return RECORD_HEADER_SIZE + self.length + self.padding


@functools.lru_cache(maxsize=64)
def _salt(header: SegmentHeader) -> int:
    # Every append needs its segment's salt; a header never changes once written.
    return crc32c(encode_header(header)[:HEADER.size])


def crc32c(data: bytes | memoryview, seed: int = 0) -> int:
    return google_crc32c.extend(seed, bytes(data) if isinstance(data, memoryview) else data)


def encode_header(header: SegmentHeader) -> bytes:
    body = HEADER.pack(
        MAGIC, header.format_version, header.schema_version, 0,
        header.store_uuid.bytes, header.number, header.first_lsn, b"\0" * 12,
    )
    return body + struct.pack("<I", crc32c(body))


def decode_header(data: bytes) -> SegmentHeader:
    """The header at the start of ``data``; FormatError saying what is wrong with it."""
    if len(data) < HEADER_SIZE:
        raise FormatError(f"short header ({len(data)} bytes)")
    body = data[:HEADER.size]
    (magic, fmt, schema, _reserved, raw_uuid, number, first_lsn, _pad) = HEADER.unpack(body)
    if magic != MAGIC:
        raise FormatError("bad magic (not a layerstore log segment)")
    (stored_crc,) = struct.unpack_from("<I", data, HEADER.size)
    if stored_crc != crc32c(body):
        raise FormatError("header checksum mismatch")
    if fmt > FORMAT_VERSION:
        raise FormatError(f"format version {fmt} is newer than this program's {FORMAT_VERSION}")
    return SegmentHeader(fmt, schema, uuidlib.UUID(bytes=raw_uuid), number, first_lsn)


def encode_record(payload: bytes, lsn: int, count: int, salt: int, type_: int = TYPE_EVENTS) -> bytes:
    """One framed, padded record holding ``count`` events from ``lsn`` on."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    padding = -(RECORD_HEADER_SIZE + len(payload)) % ALIGN
    head = RECORD.pack(0, len(payload), type_, padding, 0, count, lsn)
    crc = crc32c(payload, crc32c(head[4:], salt))
    return struct.pack("<I", crc) + head[4:] + payload + b"\0" * padding


def plausible_record(buf: bytes | memoryview, pos: int, end: int) -> bool:
    """Cheap header checks only (no CRC): could a record start at ``pos``? Searching
    for valid records past damage tries every aligned offset; almost all fail here."""
    if end - pos < RECORD_HEADER_SIZE:
        return False
    rec = RecordHeader(*RECORD.unpack_from(buf, pos))
    return (rec.type in RECORD_TYPES and not rec.reserved and rec.padding < ALIGN and rec.count >= 1
            and rec.length <= MAX_PAYLOAD and pos + rec.size <= end)


def check_record(buf: bytes | memoryview, pos: int, end: int, salt: int,
                 expected_lsn: int | None) -> RecordHeader:
    """The header of the valid record at ``pos``; FormatError saying why there is none.

    ``expected_lsn`` None accepts any LSN (used when searching for valid records past
    damage).
    """
    if end - pos < RECORD_HEADER_SIZE:
        raise FormatError("partial record header")
    rec = RecordHeader(*RECORD.unpack_from(buf, pos))
    if rec.type not in RECORD_TYPES or rec.reserved or rec.padding >= ALIGN or rec.count < 1:
        raise FormatError("malformed record header")
    if rec.length > MAX_PAYLOAD or pos + rec.size > end:
        raise FormatError("record runs past the end of the segment")
    if (RECORD_HEADER_SIZE + rec.length + rec.padding) % ALIGN:
        raise FormatError("record misaligned")
    body_end = pos + RECORD_HEADER_SIZE + rec.length
    crc = crc32c(buf[pos + 4:body_end], salt)
    if crc != rec.crc:
        raise FormatError("record checksum mismatch")
    if any(buf[body_end:body_end + rec.padding]):
        raise FormatError("non-zero record padding")
    if expected_lsn is not None and rec.lsn != expected_lsn:
        raise FormatError(f"LSN {rec.lsn} where {expected_lsn} was expected")
    return rec


def encode_lost_record(info: bytes, lsn: int, count: int, salt: int, size: int | None = None) -> bytes:
    """A records-lost marker for LSNs ``lsn`` … ``lsn + count - 1``. Its payload is the
    length of ``info`` and ``info`` (what repair knows of the loss), zero-filled.

    With ``size`` (a multiple of 8, at least a record header) the marker is exactly that
    long, to replace a damaged range in place; ``info`` is left out when it does not fit.
    """
    if size is None:
        payload = LENGTH_PREFIX.pack(len(info)) + info
        return encode_record(payload, lsn, count, salt, TYPE_LOST)
    if size % ALIGN or size < RECORD_HEADER_SIZE:
        raise ValueError(f"a records-lost marker cannot be {size} bytes long")
    room = size - RECORD_HEADER_SIZE
    if room >= LENGTH_PREFIX.size + len(info):
        payload = LENGTH_PREFIX.pack(len(info)) + info
    else:
        payload = b""
    return encode_record(payload + b"\0" * (room - len(payload)), lsn, count, salt, TYPE_LOST)


def lost_record_info(payload: bytes) -> bytes:
    """The ``info`` a records-lost marker carries (empty when it had no room for it)."""
    if len(payload) < LENGTH_PREFIX.size:
        return b""
    (length,) = LENGTH_PREFIX.unpack_from(payload)
    return bytes(payload[LENGTH_PREFIX.size:LENGTH_PREFIX.size + length])
