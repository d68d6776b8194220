"""Split an uncompressed tar stream into entries, recording every byte that is not a
regular file's payload into the tar-split as it goes.

The consumer receives each ``Entry`` and must take its payload (``payload_pieces`` to
store it, or ``keep_payload_inline`` when it is not extracted) before asking for the
next one; the reader then records the padding and moves on.
"""

from __future__ import annotations

from collections.abc import Iterator

from eventstore.archive import header as h
from eventstore.archive.header import BLOCK, HeaderError
from eventstore.archive.tarsplit import TarSplitWriter

MAX_PAX_HEADER = 1 << 20
MAX_GNU_LONG = 1 << 16

# entry kinds after normalisation (GNU sparse and contiguous files are regular files)
REGULAR = "file"
KINDS = {
    h.REGULAR: REGULAR, h.REGULAR_OLD: REGULAR, h.CONTIGUOUS: REGULAR, h.GNU_SPARSE: REGULAR,
    h.HARDLINK: "hardlink", h.SYMLINK: "symlink", h.CHARDEV: "chardev",
    h.BLOCKDEV: "blockdev", h.DIRECTORY: "dir", h.FIFO: "fifo", h.GNU_DUMPDIR: "dir",
    h.GNU_VOLUME: "volume",
}


class TarError(Exception):
    """The tar stream is malformed; ``str`` is a one-line reason with its position."""


class Entry:
    """One tar member with its extension headers applied."""

    __slots__ = ("name", "linkname", "kind", "mode", "uid", "gid", "mtime_ns", "atime_ns",
                 "size", "devmajor", "devminor", "xattrs", "segments", "real_size", "offset")

    def __init__(self) -> None:
        self.xattrs: list[tuple[bytes, bytes]] = []
        self.segments: list[tuple[int, int]] | None = None  # sparse files only
        self.real_size = 0
        self.atime_ns: int | None = None


class TarReader:
    def __init__(self, chunks: Iterator[bytes], split: TarSplitWriter, max_size: int):
        self._chunks = chunks
        self._split = split
        self._max_size = max_size
        self._buf = b""
        self._view = memoryview(b"")
        self._pos = 0
        self.offset = 0  # uncompressed bytes consumed so far
        self.entries_read = 0
        self.current: Entry | None = None
        self._payload_left = 0

    # --- byte access -------------------------------------------------------------

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf, self._view, self._pos = chunk, memoryview(chunk), 0
                return True
        return False

    def _read_upto(self, n: int) -> bytes:
        end = self._pos + n
        if end <= len(self._buf):
            data = self._buf[self._pos:end]
            self._pos = end
            self.offset += n
            return data
        parts = []
        while n:
            if self._pos >= len(self._buf) and not self._fill():
                break
            part = self._buf[self._pos:self._pos + n]
            self._pos += len(part)
            n -= len(part)
            parts.append(part)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def _read(self, n: int, what: str) -> bytes:
        data = self._read_upto(n)
        if len(data) != n:
            raise TarError(f"tar stream is truncated inside {what} (at byte {self.offset})")
        return data

    def payload_pieces(self, n: int) -> Iterator[memoryview]:
        """The next ``n`` payload bytes of the current entry, in pieces."""
        if n > self._payload_left:
            raise TarError("internal: payload read past the entry")
        self._payload_left -= n
        while n:
            if self._pos >= len(self._buf) and not self._fill():
                raise TarError(f"tar stream is truncated inside the data of "
                               f"{_show(self.current.name)} (at byte {self.offset})")
            take = min(n, len(self._buf) - self._pos)
            piece = self._view[self._pos:self._pos + take]
            self._pos += take
            self.offset += take
            n -= take
            yield piece

    def keep_payload_inline(self) -> None:
        """Record the rest of the current payload in the tar-split instead of a file."""
        for piece in self.payload_pieces(self._payload_left):
            self._split.raw(piece)

    # --- entries -------------------------------------------------------------------

    def entries(self) -> Iterator[Entry]:
        while True:
            start = self.offset
            block = self._read_upto(BLOCK)
            if not block:
                return  # ended at a header boundary without the end marker: accepted
            if len(block) != BLOCK:
                raise TarError(f"tar stream is truncated inside a header (at byte {start})")
            if h.is_zero_block(block):
                self._split.raw(block)
                self._trailing(start)
                return
            entry = self._member(block, start)
            if entry is None:
                continue
            self.entries_read += 1
            self.current = entry
            yield entry
            if self._payload_left:
                self.keep_payload_inline()
            self._padding(entry.size)

    def _member(self, block: bytes, start: int) -> Entry | None:
        """Read one member's headers; None for a PAX global header.

        Global headers are kept in the tar-split but not applied to later entries:
        Go's archive/tar (containers-storage, moby) ignores them too, and a layer must
        not mean one thing to us and another to the peer.
        """
        pax: list[tuple[bytes, bytes]] = []
        long_name = long_link = None
        while True:
            try:
                h.verify_checksum(block)
                raw = h.RawHeader(block)
            except HeaderError as err:
                raise TarError(f"{err} at byte {start}") from None
            self._split.raw(block)
            flag = raw.typeflag
            if flag in (h.PAX_LOCAL, h.PAX_GLOBAL, h.GNU_LONGNAME, h.GNU_LONGLINK):
                data = self._extension(raw, start)
                try:
                    if flag == h.PAX_LOCAL:
                        pax.extend(h.parse_pax(data))
                    elif flag == h.PAX_GLOBAL:
                        h.parse_pax(data)  # well-formed, but not applied
                        if not pax and long_name is None and long_link is None:
                            return None
                    elif flag == h.GNU_LONGNAME:
                        long_name = h.cstring_strict(data, "long name")
                    else:
                        long_link = h.cstring_strict(data, "long link name")
                except HeaderError as err:
                    raise TarError(f"{err} (extension header at byte {start})") from None
                start = self.offset
                block = self._read(BLOCK, "a header")
                if h.is_zero_block(block):
                    raise TarError(f"extension header at byte {start - BLOCK} "
                                   "is not followed by an entry")
                continue
            try:
                return self._entry(raw, start, dict(pax), pax, long_name, long_link)
            except HeaderError as err:
                name = _show(long_name or raw.name)
                raise TarError(f"entry {name} (at byte {start}): {err}") from None

    def _extension(self, raw: h.RawHeader, start: int) -> bytes:
        limit = MAX_PAX_HEADER if raw.typeflag in (h.PAX_LOCAL, h.PAX_GLOBAL) else MAX_GNU_LONG
        if raw.size < 0 or raw.size > limit:
            raise TarError(f"extension header at byte {start} is {raw.size} bytes "
                           f"(the limit is {limit})")
        data = self._read(raw.size, "an extension header")
        self._split.raw(data)
        self._split.raw(self._read(-raw.size % BLOCK, "padding"))
        return data

    def _entry(self, raw: h.RawHeader, start: int, records: dict[bytes, bytes],
               pax: list[tuple[bytes, bytes]], long_name: bytes | None,
               long_link: bytes | None) -> Entry:
        entry = Entry()
        entry.offset = start
        entry.name = records.get(b"GNU.sparse.name") or records.get(b"path") or long_name \
            or raw.name
        entry.linkname = records.get(b"linkpath") or long_link or raw.linkname
        flag = raw.typeflag
        if flag == h.REGULAR_OLD and entry.name.endswith(b"/"):
            flag = h.DIRECTORY
        kind = KINDS.get(flag)
        if kind is None:
            raise HeaderError(f"unsupported entry type {flag!r}")
        entry.kind = kind
        entry.mode = raw.mode
        entry.uid = h.pax_int(records[b"uid"], "uid") if b"uid" in records else raw.uid
        entry.gid = h.pax_int(records[b"gid"], "gid") if b"gid" in records else raw.gid
        size = h.pax_int(records[b"size"], "size") if b"size" in records else raw.size
        if b"mtime" in records:
            entry.mtime_ns = h.pax_time_ns(records[b"mtime"], "mtime")
        else:
            entry.mtime_ns = raw.mtime * 1_000_000_000
        if b"atime" in records:
            entry.atime_ns = h.pax_time_ns(records[b"atime"], "atime")
        entry.devmajor, entry.devminor = raw.devmajor, raw.devminor
        for key, value in records.items():
            xattr = h.pax_xattr(key, value)
            if xattr is not None:
                entry.xattrs.append(xattr)
        if min(entry.mode, entry.uid, entry.gid, size, entry.devmajor, entry.devminor) < 0:
            for what, value in (("mode", entry.mode), ("uid", entry.uid), ("gid", entry.gid),
                                ("size", size), ("device number", entry.devmajor),
                                ("device number", entry.devminor)):
                if value < 0:
                    raise HeaderError(f"negative {what}")
        if entry.uid >= 1 << 32 or entry.gid >= 1 << 32:
            raise HeaderError("uid or gid out of range")
        if flag in h.HEADER_ONLY:
            size = 0
        if size > self._max_size:
            raise HeaderError(f"size {size} exceeds the limit of {self._max_size} bytes")
        entry.size = size
        self._payload_left = size
        if flag == h.GNU_SPARSE:
            self._old_gnu_sparse(entry, raw)
        elif b"GNU.sparse.major" in records or b"GNU.sparse.map" in records \
                or b"GNU.sparse.offset" in records or b"GNU.sparse.numblocks" in records:
            self._pax_sparse(entry, records, pax)
        return entry

    # --- sparse files --------------------------------------------------------------

    def _old_gnu_sparse(self, entry: Entry, raw: h.RawHeader) -> None:
        block = raw.block
        segments, extended = h.old_gnu_sparse(block, 386, 4)
        while extended:
            more = self._read(BLOCK, "a sparse header")
            self._split.raw(more)
            found, extended = h.old_gnu_sparse(more, 0, 21)
            segments += found
            if len(segments) > h.MAX_SPARSE_SEGMENTS:
                raise HeaderError("sparse map has too many segments")
        real_size = h.number(block[483:495], "sparse real size")
        h.check_sparse(segments, real_size, entry.size)
        entry.segments, entry.real_size = segments, real_size

    def _pax_sparse(self, entry: Entry, records: dict[bytes, bytes],
                    pax: list[tuple[bytes, bytes]]) -> None:
        major = records.get(b"GNU.sparse.major")
        real = records.get(b"GNU.sparse.realsize") or records.get(b"GNU.sparse.size")
        if real is None:
            raise HeaderError("sparse file without a real size")
        real_size = h.pax_int(real, "GNU.sparse.realsize")
        if major == b"1":
            if records.get(b"GNU.sparse.minor") != b"0":
                raise HeaderError("unsupported GNU sparse format")
            segments, used = self._sparse_map_in_data(entry)
            stored = entry.size - used
        elif major not in (None, b"0"):
            raise HeaderError("unsupported GNU sparse format")
        elif b"GNU.sparse.map" in records:
            text = records[b"GNU.sparse.map"]
            numbers = [h.pax_int(x, "GNU.sparse.map") for x in text.split(b",")] if text else []
            segments = h.pax_sparse_pairs(numbers)
            stored = entry.size
        else:
            offsets = [h.pax_int(v, "GNU.sparse.offset") for k, v in pax
                       if k == b"GNU.sparse.offset"]
            lengths = [h.pax_int(v, "GNU.sparse.numbytes") for k, v in pax
                       if k == b"GNU.sparse.numbytes"]
            if len(offsets) != len(lengths):
                raise HeaderError("sparse map has unpaired offsets and lengths")
            segments = list(zip(offsets, lengths))
            stored = entry.size
        h.check_sparse(segments, real_size, stored)
        entry.segments, entry.real_size = segments, real_size

    def _sparse_map_in_data(self, entry: Entry) -> tuple[list[tuple[int, int]], int]:
        """GNU PAX 1.0 keeps the map at the start of the data, padded to a block."""
        text = b""
        while True:
            if len(text) + BLOCK > entry.size:
                raise HeaderError("sparse map runs past the entry's data")
            block = bytes(b"".join(self.payload_pieces(BLOCK)))
            self._split.raw(block)
            text += block
            parsed = h.parse_sparse_map_text(text)
            if parsed is not None:
                segments, used = parsed
                if used != len(text):
                    raise HeaderError("sparse map is padded wrongly")
                return segments, used
            if len(text) > 40 * h.MAX_SPARSE_SEGMENTS:
                raise HeaderError("sparse map is too long")

    # --- end of archive ---------------------------------------------------------------

    def _padding(self, size: int) -> None:
        pad = -size % BLOCK
        if pad:
            # A stream may end inside the last entry's padding: umoci 0.4.7's `insert`
            # writes such tars, and Go's archive/tar (so containers/storage) reads them.
            # The payload is whole; the bytes that are there are kept for the digest,
            # and the next header read finds the end (accepted, as a missing end marker is).
            self._split.raw(self._read_upto(pad))

    def _trailing(self, marker: int) -> None:
        """After the first zero block only zero bytes may follow (the second zero
        block, then any blocking-factor padding); they are kept for the digest."""
        if self._pos < len(self._buf):
            self._tail_piece(self._view[self._pos:], marker)
            self.offset += len(self._buf) - self._pos
            self._pos = len(self._buf)
        for chunk in self._chunks:
            self._tail_piece(chunk, marker)
            self.offset += len(chunk)

    def _tail_piece(self, piece, marker: int) -> None:
        data = bytes(piece)
        if data.count(0) != len(data):
            bad = self.offset + len(data) - len(data.lstrip(b"\0"))
            raise TarError(f"data after the end-of-archive marker at byte {marker} "
                           f"(non-zero byte at {bad})")
        self._split.raw(data)


def _show(name: bytes | None) -> str:
    return (name or b"").decode("utf-8", "backslashreplace")
