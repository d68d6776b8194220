"""Where the records of a log segment lie, read from the documented format
(docs/log-format.md) and not from ``eventstore.log``: the harness aims its byte damage
with its own reading of the specification, so a reader bug cannot hide itself.

    segment header  64 bytes
    record          24-byte header (CRC, payload length at 4, padding length at 9, LSN at 16)
                    + payload + padding to a multiple of 8
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

SEGMENT_HEADER_SIZE = 64
SEGMENT_UUID_OFFSET = 16  # 16 bytes: the store uuid
RECORD_HEADER_SIZE = 24
RECORD_LSN_OFFSET = 16  # 8 bytes: the LSN of the record's first event


class RecordSpan(NamedTuple):
    """One record: where it starts, where its payload starts, where it ends."""

    offset: int
    payload: int
    end: int
    lsn: int

    @property
    def payload_middle(self) -> int:
        return self.payload + (self.end - self.payload) // 2


def record_spans(path: Path) -> list[RecordSpan]:
    """The records of the segment at ``path``, in order, up to the first that does not
    frame (zeros, a cut, a length past the end)."""
    data = path.read_bytes()
    spans: list[RecordSpan] = []
    offset = SEGMENT_HEADER_SIZE
    while offset + RECORD_HEADER_SIZE <= len(data):
        length, = struct.unpack_from("<I", data, offset + 4)
        padding = data[offset + 9]
        lsn, = struct.unpack_from("<Q", data, offset + RECORD_LSN_OFFSET)
        end = offset + RECORD_HEADER_SIZE + length + padding
        if length == 0 or end > len(data):
            break
        spans.append(RecordSpan(offset, offset + RECORD_HEADER_SIZE, end, lsn))
        offset = end
    return spans
