"""Read a layer stream once: detect its compression, hash and count both sides.

``LayerSource`` turns the caller's stream into uncompressed chunks while it hashes the
bytes as given (compressed digest) and the bytes it hands out (diff digest), and stops
at ``max_size`` uncompressed bytes so a small bomb never fills a disk.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import zstandard
from isal import igzip_lib

READ_SIZE = 1 << 20
CHUNK_SIZE = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"


class StreamError(Exception):
    """The compressed stream is corrupt, truncated, or over the size limit."""


class SizeLimitExceeded(StreamError):
    pass


def detect(head: bytes) -> str:
    """The compression named by the first bytes of a stream ("none" when unknown)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or _is_zstd_skippable(head):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and 0x31 <= head[3] <= 0x39:
        return "bzip2"
    return "none"


def _is_zstd_skippable(head: bytes) -> bool:
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


class LayerSource:
    """The caller's stream, read once: yields uncompressed chunks, hashing both sides.

    Reading, decompressing and hashing run on a helper thread (zlib/igzip, zstd, lzma
    and hashlib all release the GIL on big buffers), a few chunks ahead of the
    extraction, which spends its time in syscalls: the two overlap on two cores.
    """

    def __init__(self, stream: BinaryIO, max_size: int,
                 progress: Callable[[int], None] | None = None):
        self._stream = stream
        self._max_size = max_size
        self._progress = progress
        self.compressed_hash = hashlib.sha256()
        self.compressed_size = 0
        self.diff_hash = hashlib.sha256()
        self.diff_size = 0
        self._pending = self._read_raw()
        self.compression = detect(self._pending)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_raw(self) -> bytes:
        data = self._stream.read(READ_SIZE)
        if data is None:  # a non-blocking stream with nothing yet
            raise StreamError("the input stream is non-blocking")
        if data:
            data = bytes(data)
            self.compressed_hash.update(data)
            self.compressed_size += len(data)
        return data

    def raw_chunks(self) -> Iterator[bytes]:
        """The bytes as given, each once."""
        data, self._pending = self._pending, b""
        while data:
            yield data
            if self._stop.is_set():
                return
            data = self._read_raw()

    def _decoded(self) -> Iterator[bytes]:
        decoder = {
            "none": _plain, "gzip": _gzip, "zstd": _zstd, "xz": _xz, "bzip2": _bzip2,
        }[self.compression]
        limit = self._max_size
        for chunk in decoder(self.raw_chunks()):
            self.diff_size += len(chunk)
            if self.diff_size > limit:
                raise SizeLimitExceeded(
                    f"uncompressed layer exceeds the limit of {limit} bytes")
            self.diff_hash.update(chunk)
            yield chunk

    def chunks(self) -> Iterator[bytes]:
        """Uncompressed chunks, every byte of the stream, hashed and counted.

        The digests and sizes are final once this is exhausted. Progress is reported
        from the calling thread.
        """
        queue_ = queue.Queue(maxsize=QUEUE_DEPTH)
        self._thread = threading.Thread(target=self._produce, args=(queue_,),
                                        name="layer-decompress", daemon=True)
        self._thread.start()
        reported = 0
        while True:
            item = queue_.get()
            if self._progress is not None and self.compressed_size != reported:
                reported = self.compressed_size
                self._progress(reported)
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        self._thread.join()

    def _produce(self, queue_: queue.Queue) -> None:
        try:
            for chunk in self._decoded():
                if not self._put(queue_, chunk):
                    return
            self._put(queue_, _END)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(queue_, err)

    def _put(self, queue_: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                queue_.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Stop the helper thread (the import failed); it may still be inside one
        read of the caller's stream, after which it stops."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


_END = object()
QUEUE_DEPTH = 8


# --- decoders: raw chunks in, uncompressed chunks (each <= CHUNK_SIZE) out ---------

def _plain(raw: Iterator[bytes]) -> Iterator[bytes]:
    yield from raw


def _members(raw: Iterator[bytes], new_decoder, magic: bytes, name: str,
             pad_unit: int = 1) -> Iterator[bytes]:
    """Drive a bounded-output decompressor (bz2/lzma/igzip style) over concatenated
    members. Zero bytes may pad the end (in ``pad_unit`` multiples, as xz wants);
    anything else after the last member is refused."""
    decoder = new_decoder()
    for data in raw:
        while True:
            if decoder.eof:
                if not data:
                    break
                if data[:len(magic)] == magic[:len(data)]:
                    decoder = new_decoder()
                elif _all_zero(data):
                    _expect_zeros(raw, name, pad_unit, len(data))
                    return
                else:
                    raise StreamError(f"data after the end of the {name} stream")
            try:
                out = decoder.decompress(data, CHUNK_SIZE)
            except (OSError, ValueError, EOFError, lzma.LZMAError, igzip_lib.IsalError) as err:
                raise StreamError(f"corrupt {name} stream: {err}") from None
            data = b""
            if out:
                yield out
            if decoder.eof:
                data = decoder.unused_data
            elif decoder.needs_input:
                break
    if not decoder.eof:
        raise StreamError(f"truncated {name} stream")


def _all_zero(data: bytes) -> bool:
    return data.count(0) == len(data)


def _expect_zeros(raw: Iterator[bytes], name: str, pad_unit: int, seen: int) -> None:
    for data in raw:
        if not _all_zero(data):
            raise StreamError(f"data after the end of the {name} stream")
        seen += len(data)
    if seen % pad_unit:
        raise StreamError(f"data after the end of the {name} stream")


def _gzip(raw: Iterator[bytes]) -> Iterator[bytes]:
    def new():
        return igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    return _members(raw, new, GZIP_MAGIC, "gzip")


def _xz(raw: Iterator[bytes]) -> Iterator[bytes]:
    return _members(raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), XZ_MAGIC, "xz",
                    pad_unit=4)


def _bzip2(raw: Iterator[bytes]) -> Iterator[bytes]:
    return _members(raw, bz2.BZ2Decompressor, BZIP2_MAGIC, "bzip2")


class _ZstdFrames:
    """Follows zstd frame and block boundaries in the compressed bytes.

    zstandard's stream reader ends quietly when its input stops mid-frame; this walker
    reads only frame and block headers (skipping block contents) to tell a complete
    stream from a truncated one.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._skip = 0
        self._state = self._frame_start
        self._checksum = False

    @property
    def complete(self) -> bool:
        return self._state == self._frame_start and not self._buffer and not self._skip

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = self._state(None)
            take = need - len(self._buffer)
            self._buffer += bytes(view[:take])
            view = view[take:]
            if len(self._buffer) == need:
                head, self._buffer = self._buffer, b""
                self._state(head)

    # each state, called with None, says how many header bytes it needs; called with
    # them, it moves on (setting _skip for content it does not need to see)
    def _frame_start(self, head: bytes | None) -> int:
        if head is None:
            return 4
        if head == ZSTD_MAGIC:
            self._state = self._frame_descriptor
        elif _is_zstd_skippable(head):
            self._state = self._skippable_size
        else:
            raise StreamError("data after the end of the zstd stream")
        return 0

    def _skippable_size(self, head: bytes | None) -> int:
        if head is None:
            return 4
        self._skip = int.from_bytes(head, "little")
        self._state = self._frame_start
        return 0

    def _frame_descriptor(self, head: bytes | None) -> int:
        if head is None:
            return 1
        descriptor = head[0]
        single_segment = descriptor >> 5 & 1
        self._checksum = bool(descriptor >> 2 & 1)
        content_size = (single_segment, 2, 4, 8)[descriptor >> 6]
        self._skip = (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3] + content_size
        self._state = self._block_header
        return 0

    def _block_header(self, head: bytes | None) -> int:
        if head is None:
            return 3
        header = int.from_bytes(head, "little")
        block_type = header >> 1 & 3
        if block_type == 3:
            raise StreamError("corrupt zstd stream: reserved block type")
        self._skip = 1 if block_type == 1 else header >> 3
        if header & 1:  # last block of the frame
            self._skip += 4 if self._checksum else 0
            self._state = self._frame_start
        return 0


class _RawReader:
    """A file-like view of raw chunks for zstandard's stream reader."""

    def __init__(self, raw: Iterator[bytes], frames: _ZstdFrames):
        self._raw = raw
        self._frames = frames
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        if not self._buffer:
            self._buffer = next(self._raw, b"")
            self._frames.feed(self._buffer)
        if size < 0 or size >= len(self._buffer):
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _zstd(raw: Iterator[bytes]) -> Iterator[bytes]:
    frames = _ZstdFrames()
    reader = zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(
        _RawReader(raw, frames), read_size=READ_SIZE, read_across_frames=True)
    while True:
        try:
            out = reader.read(CHUNK_SIZE)
        except zstandard.ZstdError as err:
            raise StreamError(f"corrupt zstd stream: {err}") from None
        if not out:
            break
        yield out
    if not frames.complete:
        raise StreamError("truncated zstd stream")


class _Uncompressed:
    """``out`` itself as a sink, flushed at the end."""

    def __init__(self, out: BinaryIO):
        self.write = out.write
        self.close = out.flush


@contextmanager
def compressing(kind: str, out: BinaryIO) -> Iterator[BinaryIO]:
    """A writer that compresses what it is given into ``out`` (``none``, ``gzip`` with no
    timestamp, so the same input gives the same bytes, or ``zstd``). Finished when the
    block ends; ``out`` stays open."""
    if kind == "gzip":
        from isal import igzip

        sink = igzip.IGzipFile(fileobj=out, mode="wb", mtime=0)
    elif kind == "zstd":
        sink = zstandard.ZstdCompressor().stream_writer(out, closefd=False)
    elif kind == "none":
        sink = _Uncompressed(out)
    else:
        raise ValueError(f"unknown compression {kind!r}")
    yield sink  # type: ignore[misc]
    sink.close()
