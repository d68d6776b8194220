"""Helpers for the log tests: writing and reading a log, and ``Disk``, whose byte-mangling
methods damage segments the way crashes and disks do."""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from eventstore.events import Event, LayerCreated
from eventstore.log import EventLog
from eventstore.log.format import HEADER_SIZE, RECORD, RECORD_HEADER_SIZE, crc32c, decode_header
from eventstore.log.reader import list_segments

# Byte offsets of the record header's fields (docs/log-format.md).
RECORD_FIELDS = {
    "crc": (0, 4),
    "length": (4, 8),
    "type": (8, 9),
    "padding-length": (9, 10),
    "reserved": (10, 12),
    "count": (12, 16),
    "lsn": (16, 24),
}


def layer(n: int | str) -> LayerCreated:
    """A small, distinguishable event."""
    return LayerCreated(layer=f"layer-{n}")


class RecordSpan(NamedTuple):
    """Where a record sits in its segment, as its header claims."""

    offset: int
    size: int
    length: int
    padding: int
    count: int
    lsn: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def payload(self) -> tuple[int, int]:
        start = self.offset + RECORD_HEADER_SIZE
        return start, start + self.length


class Disk:
    """The segments of one root, and the damage a test can do to them."""

    def __init__(self, root: Path):
        self.root = root
        self.log_dir = root / "log"

    # --- looking ---------------------------------------------------------------------

    def segments(self) -> list[Path]:
        return [path for _, path in list_segments(self.log_dir)]

    def last_segment(self) -> Path:
        return self.segments()[-1]

    def records(self, segment: Path) -> list[RecordSpan]:
        """The records of an undamaged segment, trusting each header's length."""
        data = segment.read_bytes()
        spans, pos = [], HEADER_SIZE
        while pos + RECORD_HEADER_SIZE <= len(data):
            _crc, length, _type, padding, _reserved, count, lsn = RECORD.unpack_from(data, pos)
            size = RECORD_HEADER_SIZE + length + padding
            spans.append(RecordSpan(pos, size, length, padding, count, lsn))
            pos += size
        return spans

    def last_record(self, segment: Path | None = None) -> RecordSpan:
        return self.records(segment or self.last_segment())[-1]

    def files(self) -> dict[str, str]:
        """sha256 of every file under log/: to prove that nothing changed."""
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.log_dir.iterdir()) if p.is_file()}

    def broken_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.broken-*"))

    # --- damaging --------------------------------------------------------------------

    def flip_bit(self, segment: Path, offset: int, bit: int) -> None:
        data = bytearray(segment.read_bytes())
        data[offset] ^= 1 << bit
        segment.write_bytes(bytes(data))

    def truncate(self, segment: Path, size: int) -> None:
        with open(segment, "r+b") as f:
            f.truncate(size)

    def zero(self, segment: Path, start: int, end: int) -> None:
        self.overwrite(segment, start, b"\0" * (end - start))

    def overwrite(self, segment: Path, offset: int, data: bytes) -> None:
        with open(segment, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def append(self, segment: Path, data: bytes) -> None:
        with open(segment, "ab") as f:
            f.write(data)

    def fix_checksum(self, segment: Path, offset: int) -> None:
        """Recompute the CRC of the record at ``offset``: damage the CRC cannot see."""
        data = segment.read_bytes()
        salt = decode_header(data[:HEADER_SIZE]).salt
        (length,) = struct.unpack_from("<I", data, offset + 4)
        crc = crc32c(data[offset + 4:offset + RECORD_HEADER_SIZE + length], salt)
        self.overwrite(segment, offset, struct.pack("<I", crc))

    def copy_to(self, root: Path) -> "Disk":
        shutil.copytree(self.root, root)
        return Disk(root)


Writes = Sequence[Event | Sequence[Event]]


def write_log(root: Path, writes: Writes, segment_size: int | None = None) -> list[int]:
    """Write a log: each item an event (``append``) or a list of events (``append_many``).
    The LSNs the log acknowledged."""
    options = {} if segment_size is None else {"segment_size": segment_size}
    lsns: list[int] = []
    with EventLog.open(root, **options) as log:
        for item in writes:
            if isinstance(item, Event):
                lsns.append(log.append(item))
            else:
                lsns.extend(log.append_many(list(item)))
    return lsns


def read_log(root: Path) -> list[tuple[int, Event]]:
    """Every (LSN, event) of the log, opened as a writer (so a torn tail is cut)."""
    with EventLog.open(root) as log:
        return list(log.events())
