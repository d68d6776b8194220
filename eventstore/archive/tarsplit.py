"""Our tar-split file: what it takes, beside the extracted files, to rebuild a layer's
tar byte for byte. The format is specified in docs/content.md; in short:

    file    = magic(8) version(u16) reserved(6) frame* trailer
    frame   = kind(u8) reserved(3) crc32c(u32) length(u64) payload[length]
      M     metadata: one zstd frame holding records
      B     blob: payload id (u64) + the exact tar payload of a file that a later
            entry replaced or deleted during the import
      E     end: the msgpack footer (counts, digest, where the blobs are)
    trailer = offset of the E frame (u64) + b"LSTSEND\\0"

    record  = 0x01 RAW    len(u32) bytes          header blocks, padding, anything inline
            | 0x02 FILE   len(u32) path size(u64) crc(u32)
                                                  a regular file's payload, from the layer
            | 0x03 SPARSE len(u32) path count(u32) (offset(u64) length(u64))*count crc(u32)

FILE and SPARSE records are numbered in order from 0: their payload id. ``crc`` is the
CRC-32 (zlib's) of the payload as it stands in the tar, so a damaged file is named.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import google_crc32c
import msgspec
import zstandard

MAGIC = b"LSTSPLIT"
VERSION = 1
TRAILER_MAGIC = b"LSTSEND\0"

_FILE_HEADER = struct.Struct("<8sH6x")
_FRAME = struct.Struct("<c3xIQ")
_TRAILER = struct.Struct("<Q8s")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PAIR = struct.Struct("<QQ")
_RECORD_HEAD = struct.Struct("<BI")  # tag, length
_FILE_TAIL = struct.Struct("<QI")  # size, crc

KIND_METADATA = b"M"
KIND_BLOB = b"B"
KIND_END = b"E"

RAW = 1
FILE = 2
SPARSE = 3

#: raw bytes gathered before a metadata frame is compressed and written
FRAME_TARGET = 1 << 20


class TarSplitError(Exception):
    """The tar-split file is damaged or is not ours."""


class Footer(msgspec.Struct, frozen=True, array_like=True):
    """What the end frame says about the whole file."""

    version: int
    entries: int
    payloads: int
    diff_size: int
    diff_digest: str
    #: payload id -> (offset of the payload bytes in this file, length)
    blobs: dict[int, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class FileRef:
    payload_id: int
    path: bytes
    size: int
    crc: int


@dataclass(frozen=True, slots=True)
class SparseRef:
    payload_id: int
    path: bytes
    segments: list[tuple[int, int]]
    crc: int

    @property
    def size(self) -> int:
        return sum(length for _, length in self.segments)


class TarSplitWriter:
    """Appends records while the tar is read; ``finish`` seals the file and fsyncs it."""

    def __init__(self, fd: int):
        self._fd = fd
        self._records = bytearray()
        self._raw = bytearray()
        self._offset = 0
        self._payloads = 0
        self._blobs: dict[int, tuple[int, int]] = {}
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._write(_FILE_HEADER.pack(MAGIC, VERSION))

    def raw(self, data) -> None:
        self._raw += data
        if len(self._raw) >= FRAME_TARGET:
            self._flush_raw()
            self._flush_frame()

    def file(self, path: bytes, size: int, crc: int) -> int:
        # once per regular file: appended in place, without the temporaries of ``+``
        records = self._records
        if self._raw:
            self._flush_raw()
        records += _RECORD_HEAD.pack(FILE, len(path))
        records += path
        records += _FILE_TAIL.pack(size, crc)
        return self._next_payload()

    def sparse(self, path: bytes, segments: list[tuple[int, int]], crc: int) -> int:
        self._flush_raw()
        self._records += b"\x03" + _U32.pack(len(path)) + path + _U32.pack(len(segments))
        self._records += b"".join(_PAIR.pack(o, n) for o, n in segments)
        self._records += _U32.pack(crc)
        return self._next_payload()

    def blob(self, payload_id: int, size: int, chunks: Iterator[bytes]) -> None:
        """Keep a payload whose file is about to be replaced: ``chunks`` must give
        exactly ``size`` bytes."""
        start = self._offset
        crc = google_crc32c.value(_U64.pack(payload_id))
        self._write(_FRAME.pack(KIND_BLOB, 0, 8 + size) + _U64.pack(payload_id))
        written = 0
        for chunk in chunks:
            crc = google_crc32c.extend(crc, chunk)
            self._write(chunk)
            written += len(chunk)
        if written != size:
            raise TarSplitError(f"blob {payload_id}: expected {size} bytes, got {written}")
        # the crc is known only now: patch it into the frame header
        os.pwrite(self._fd, struct.pack("<I", crc), start + 4)
        self._blobs[payload_id] = (start + _FRAME.size + 8, size)

    def finish(self, entries: int, diff_size: int, diff_digest: str) -> None:
        self._flush_raw()
        self._flush_frame()
        footer = msgspec.msgpack.encode(Footer(VERSION, entries, self._payloads, diff_size,
                                               diff_digest, self._blobs))
        end = self._offset
        self._frame(KIND_END, footer)
        self._write(_TRAILER.pack(end, TRAILER_MAGIC))
        os.fsync(self._fd)

    def _next_payload(self) -> int:
        self._payloads += 1
        if len(self._records) >= FRAME_TARGET:
            self._flush_frame()
        return self._payloads - 1

    def _flush_raw(self) -> None:
        if self._raw:
            self._records += _RECORD_HEAD.pack(RAW, len(self._raw))
            self._records += self._raw
            self._raw.clear()

    def _flush_frame(self) -> None:
        if self._records:
            self._frame(KIND_METADATA, self._compressor.compress(self._records))
            self._records.clear()

    def _frame(self, kind: bytes, payload: bytes) -> None:
        self._write(_FRAME.pack(kind, google_crc32c.value(payload), len(payload)) + payload)

    def _write(self, data) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._offset += len(data)


class TarSplitReader:
    """Reads a sealed tar-split file: the footer, then the records in order."""

    def __init__(self, fd: int):
        self._fd = fd
        size = os.fstat(fd).st_size
        head = os.pread(fd, _FILE_HEADER.size, 0)
        if len(head) != _FILE_HEADER.size:
            raise TarSplitError("not a layerstore tar-split file (too short)")
        magic, version = _FILE_HEADER.unpack(head)
        if magic != MAGIC:
            raise TarSplitError("not a layerstore tar-split file (bad magic)")
        if version != VERSION:
            raise TarSplitError(f"tar-split version {version} is not supported")
        if size < _FILE_HEADER.size + _TRAILER.size:
            raise TarSplitError("tar-split file is truncated (no trailer)")
        end, trailer_magic = _TRAILER.unpack(os.pread(fd, _TRAILER.size, size - _TRAILER.size))
        if trailer_magic != TRAILER_MAGIC or not _FILE_HEADER.size <= end < size:
            raise TarSplitError("tar-split file is truncated or damaged (bad trailer)")
        self._end = end
        kind, payload = self._read_frame(end, size - _TRAILER.size)
        if kind != KIND_END:
            raise TarSplitError("tar-split trailer does not point at the end frame")
        try:
            self.footer = msgspec.msgpack.decode(payload, type=Footer)
        except msgspec.DecodeError as err:
            raise TarSplitError(f"tar-split footer is damaged: {err}") from None

    def _frame_header(self, offset: int, limit: int) -> tuple[bytes, int, int]:
        head = os.pread(self._fd, _FRAME.size, offset)
        if len(head) != _FRAME.size:
            raise TarSplitError(f"tar-split frame at {offset} is truncated")
        kind, crc, length = _FRAME.unpack(head)
        if offset + _FRAME.size + length > limit:
            raise TarSplitError(f"tar-split frame at {offset} has a bad length")
        return kind, crc, length

    def _read_frame(self, offset: int, limit: int) -> tuple[bytes, bytes]:
        kind, crc, length = self._frame_header(offset, limit)
        payload = os.pread(self._fd, length, offset + _FRAME.size)
        if len(payload) != length or google_crc32c.value(payload) != crc:
            raise TarSplitError(f"tar-split frame at {offset} is damaged (crc)")
        return kind, payload

    def records(self) -> Iterator[bytes | FileRef | SparseRef]:
        """RAW records as bytes, FILE and SPARSE records as references."""
        offset = _FILE_HEADER.size
        payload_id = 0
        decompressor = zstandard.ZstdDecompressor()
        while offset < self._end:
            kind, _crc, length = self._frame_header(offset, self._end)
            if kind == KIND_METADATA:
                _, compressed = self._read_frame(offset, self._end)
                try:
                    data = decompressor.decompress(compressed)
                except zstandard.ZstdError as err:
                    raise TarSplitError(f"tar-split frame at {offset}: {err}") from None
                for record in _parse_records(data, offset):
                    if isinstance(record, FileRef):
                        record = FileRef(payload_id, record.path, record.size, record.crc)
                        payload_id += 1
                    elif isinstance(record, SparseRef):
                        record = SparseRef(payload_id, record.path, record.segments,
                                           record.crc)
                        payload_id += 1
                    yield record
            elif kind != KIND_BLOB:  # blobs are read through the footer's index
                raise TarSplitError(f"tar-split frame at {offset} has unknown kind {kind!r}")
            offset += _FRAME.size + length
        if payload_id != self.footer.payloads:
            raise TarSplitError("tar-split records and footer disagree on the payload count")

    def blob(self, payload_id: int) -> Iterator[bytes]:
        """The kept payload of a replaced file, in chunks."""
        offset, length = self.footer.blobs[payload_id]
        frame = offset - 8 - _FRAME.size
        kind, crc, framed = self._frame_header(frame, self._end)
        if kind != KIND_BLOB or framed != 8 + length:
            raise TarSplitError(f"tar-split blob {payload_id} is not where the footer says")
        running = google_crc32c.value(os.pread(self._fd, 8, offset - 8))
        while length:
            chunk = os.pread(self._fd, min(length, 1 << 20), offset)
            if not chunk:
                raise TarSplitError(f"tar-split blob {payload_id} is truncated")
            running = google_crc32c.extend(running, chunk)
            offset += len(chunk)
            length -= len(chunk)
            yield chunk
        if running != crc:
            raise TarSplitError(f"tar-split blob {payload_id} is damaged (crc)")


def _parse_records(data: bytes, frame_offset: int) -> Iterator[bytes | FileRef | SparseRef]:
    view = memoryview(data)
    pos, end = 0, len(data)
    try:
        while pos < end:
            tag = data[pos]
            (length,) = _U32.unpack_from(data, pos + 1)
            pos += 5
            if tag == RAW:
                yield view[pos:pos + length]
                pos += length
            elif tag == FILE:
                path = data[pos:pos + length]
                (size,) = _U64.unpack_from(data, pos + length)
                (crc,) = _U32.unpack_from(data, pos + length + 8)
                pos += length + 12
                yield FileRef(-1, path, size, crc)
            elif tag == SPARSE:
                path = data[pos:pos + length]
                (count,) = _U32.unpack_from(data, pos + length)
                pos += length + 4
                segments = [_PAIR.unpack_from(data, pos + 16 * i) for i in range(count)]
                pos += 16 * count
                (crc,) = _U32.unpack_from(data, pos)
                pos += 4
                yield SparseRef(-1, path, segments, crc)
            else:
                raise TarSplitError(f"tar-split frame at {frame_offset}: unknown record {tag}")
        if pos != end:
            raise struct.error("record runs past the frame")
    except struct.error:
        raise TarSplitError(f"tar-split frame at {frame_offset} has a cut record") from None
