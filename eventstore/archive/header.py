"""Pure parsing of tar header blocks, PAX records and sparse maps (no I/O).

Everything here works on bytes and raises ``HeaderError`` with a short reason; the
reader adds the entry name and the stream offset before it reaches a user.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from urllib.parse import unquote_to_bytes

BLOCK = 512

# the ustar layout; for old-GNU headers the last 155+12 bytes hold atime, ctime,
# offset, longnames, the first four sparse entries, isextended and realsize instead
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_DECIMAL = re.compile(rb"0|[1-9][0-9]*")
_TIME = re.compile(rb"(-?)([0-9]+)(?:\.([0-9]*))?")

# typeflags
REGULAR = b"0"
REGULAR_OLD = b"\0"
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
CONTIGUOUS = b"7"
PAX_LOCAL = b"x"
PAX_GLOBAL = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
GNU_SPARSE = b"S"
GNU_DUMPDIR = b"D"
GNU_VOLUME = b"V"

#: types whose size field does not announce a payload (as Go's archive/tar reads
#: them, which is what containers-storage uses: we must split the stream alike)
HEADER_ONLY = frozenset((HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO))

MAX_SPARSE_SEGMENTS = 1_000_000


class HeaderError(Exception):
    """A header block, PAX record or sparse map is malformed."""


class RawHeader:
    """The fields of one 512-byte header block, numbers decoded."""

    __slots__ = ("name", "mode", "uid", "gid", "size", "mtime", "typeflag", "linkname",
                 "devmajor", "devminor", "is_gnu", "block")

    def __init__(self, block: bytes):
        (name, mode, uid, gid, size, mtime, _chk, typeflag, linkname, magic, version,
         _uname, _gname, devmajor, devminor, prefix) = _USTAR.unpack(block)
        self.block = block
        self.is_gnu = magic == b"ustar " and version == b" \0"
        self.typeflag = typeflag
        name = _cstring(name)
        if magic == b"ustar\0" and prefix[0]:
            name = _cstring(prefix) + b"/" + name
        self.name = name
        self.linkname = _cstring(linkname)
        self.mode = _known_number(mode, "mode")
        self.uid = _known_number(uid, "uid")
        self.gid = _known_number(gid, "gid")
        self.size = _known_number(size, "size")
        self.mtime = _known_number(mtime, "mtime")
        if typeflag in (CHARDEV, BLOCKDEV):
            self.devmajor = number(devmajor, "devmajor")
            self.devminor = number(devminor, "devminor")
        else:
            self.devmajor = self.devminor = 0


def is_zero_block(block: bytes) -> bool:
    return block.count(0) == BLOCK


def verify_checksum(block: bytes) -> None:
    """Raise unless the header checksum matches (unsigned, or the historic signed sum)."""
    stored = block[148:156]
    try:
        expected = number(stored, "checksum")
    except HeaderError:
        raise HeaderError("not a tar header (bad checksum field)") from None
    unsigned = byte_sum(block) - sum(stored) + 8 * 32
    if unsigned == expected:
        return
    high = sum(1 for b in block[:148] if b & 0x80) + sum(1 for b in block[156:] if b & 0x80)
    if unsigned - 256 * high != expected:
        raise HeaderError("not a tar header (checksum mismatch)")


def byte_sum(block: bytes) -> int:
    """``sum(block)`` for a 512-byte block, in C: adler32 gives it modulo 65521, the
    block as an integer gives it modulo 255 (256 = 1 mod 255), and the sum is below
    65521 * 255, so the two residues fix it (Chinese remainder theorem)."""
    low = ((zlib.adler32(block) & 0xFFFF) - 1) % 65521
    if low % 255 == int.from_bytes(block, "little") % 255:
        return low
    return low + 65521  # at most 512 * 255 = 130560 < 2 * 65521: no third candidate


#: numeric fields seen before (modes, owners, times repeat across a layer's headers)
_NUMBERS: dict[bytes, int] = {}


def _known_number(field: bytes, what: str) -> int:
    value = _NUMBERS.get(field)
    if value is None:
        value = number(field, what)
        if len(_NUMBERS) >= 4096:
            _NUMBERS.clear()
        _NUMBERS[field] = value
    return value


def number(field: bytes, what: str) -> int:
    """Decode a numeric header field: NUL/space padded octal, or GNU base-256."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field, "big")
        bits = 8 * len(field)
        if field[0] & 0x40:  # negative: the marker bit doubles as the sign extension
            return value - (1 << bits)
        return value & ~(0x80 << (bits - 8))
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    # isdigit() admits no sign, "_" or "0o" (which int() would); int() refuses 8 and 9
    if digits.isdigit():
        try:
            return int(digits, 8)
        except ValueError:
            pass
    raise HeaderError(f"{what} field is not a number")


def _cstring(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def cstring_strict(data: bytes, what: str) -> bytes:
    """A GNU long name/link payload: the name, then NULs only."""
    end = data.find(b"\0")
    if end < 0:
        return data
    if data.count(0, end) != len(data) - end:
        raise HeaderError(f"NUL byte inside the {what}")
    return data[:end]


def parse_pax(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PAX extended header payload into (key, value) records, in order."""
    records = []
    pos, end = 0, len(data)
    while pos < end:
        if data.count(0, pos) == end - pos:  # some writers pad with NULs
            break
        space = data.find(b" ", pos, pos + 20)
        if space < 0:
            raise HeaderError("PAX record without a length")
        digits = data[pos:space]
        if not _DECIMAL.fullmatch(digits):
            raise HeaderError("PAX record length is not a number")
        length = int(digits)
        stop = pos + length
        if length <= space - pos + 1 or stop > end or data[stop - 1] != 0x0A:
            raise HeaderError("PAX record length does not match its content")
        equals = data.find(b"=", space + 1, stop)
        if equals <= space + 1:
            raise HeaderError("PAX record without a key")
        records.append((data[space + 1:equals], data[equals + 1:stop - 1]))
        pos = stop
    return records


def pax_int(value: bytes, key: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise HeaderError(f"PAX {key} is not a non-negative integer")
    return int(value)


def pax_time_ns(value: bytes, key: str) -> int:
    """A PAX time ("-12.5", "1700000000.123456789") in nanoseconds."""
    match = _TIME.fullmatch(value)
    if not match:
        raise HeaderError(f"PAX {key} is not a time")
    sign, seconds, fraction = match.groups()
    fraction = (fraction or b"")[:9].ljust(9, b"0")
    ns = int(seconds) * 1_000_000_000 + int(fraction)
    return -ns if sign else ns


def pax_xattr(key: bytes, value: bytes) -> tuple[bytes, bytes] | None:
    """The (name, value) of an extended-attribute record, or None for other keys."""
    if key.startswith(b"SCHILY.xattr."):
        return key[13:], value
    if key.startswith(b"LIBARCHIVE.xattr."):
        try:
            return unquote_to_bytes(key[17:]), base64.b64decode(value + b"==", validate=False)
        except ValueError:
            raise HeaderError("LIBARCHIVE.xattr value is not base64") from None
    return None


# --- sparse maps -----------------------------------------------------------------

def old_gnu_sparse(block: bytes, start: int, count: int) -> tuple[list[tuple[int, int]], bool]:
    """Entries of an old-GNU sparse array (``count`` pairs of 12-byte numbers at
    ``start``) and the isextended flag that follows them."""
    segments = []
    for i in range(count):
        at = start + 24 * i
        if block[at] == 0:
            break
        segments.append((number(block[at:at + 12], "sparse offset"),
                         number(block[at + 12:at + 24], "sparse length")))
    return segments, block[start + 24 * count] != 0


def pax_sparse_pairs(numbers: list[int]) -> list[tuple[int, int]]:
    if len(numbers) % 2:
        raise HeaderError("sparse map has an odd number of values")
    return list(zip(numbers[0::2], numbers[1::2]))


def parse_sparse_map_text(data: bytes) -> tuple[list[tuple[int, int]], int] | None:
    """The in-band map of a GNU PAX 1.0 sparse file, and the bytes it takes (a
    multiple of 512); None when ``data`` does not hold the whole map yet."""
    lines = data.split(b"\n")
    if len(lines) < 2:
        return None
    count = pax_int(lines[0], "sparse map count")
    if count > MAX_SPARSE_SEGMENTS:
        raise HeaderError("sparse map has too many segments")
    if len(lines) < 2 * count + 2:  # the last element is whatever follows the last \n
        return None
    numbers = [pax_int(x, "sparse map value") for x in lines[1:2 * count + 1]]
    used = sum(len(x) + 1 for x in lines[:2 * count + 1])
    padded = -(-used // BLOCK) * BLOCK
    return pax_sparse_pairs(numbers), padded


def check_sparse(segments: list[tuple[int, int]], real_size: int, stored: int) -> None:
    """Segments must be in order, apart, inside the file and add up to the payload."""
    if len(segments) > MAX_SPARSE_SEGMENTS:
        raise HeaderError("sparse map has too many segments")
    position = 0
    total = 0
    for offset, length in segments:
        if offset < position or length < 0:
            raise HeaderError("sparse map segments overlap or are out of order")
        position = offset + length
        total += length
    if position > real_size:
        raise HeaderError("sparse map reaches past the file's size")
    if total != stored:
        raise HeaderError("sparse map does not add up to the stored data")
