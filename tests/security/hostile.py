"""Hand-made tar blocks, for archives tarfile refuses to write."""

from __future__ import annotations

BLOCK = 512


def number(value: int, width: int) -> bytes:
    """Octal when it fits, else GNU base-256 (negative values included)."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    if value < 0:
        return (value + (1 << (8 * width))).to_bytes(width, "big")
    return (value | (0x80 << (8 * (width - 1)))).to_bytes(width, "big")


def header(name: bytes, *, size: int = 0, typeflag: bytes = b"0", linkname: bytes = b"",
           mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: int = 1_700_000_000,
           devmajor: int = 0, devminor: int = 0, checksum_delta: int = 0) -> bytes:
    block = bytearray(BLOCK)
    block[0:len(name[:100])] = name[:100]
    block[100:108] = number(mode, 8)
    block[108:116] = number(uid, 8)
    block[116:124] = number(gid, 8)
    block[124:136] = number(size, 12)
    block[136:148] = number(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157:157 + len(linkname[:100])] = linkname[:100]
    block[257:265] = b"ustar\x0000"
    block[329:337] = number(devmajor, 8)
    block[337:345] = number(devminor, 8)
    block[148:156] = b"%06o\0 " % (sum(block) + checksum_delta)
    return bytes(block)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: bytes, data: bytes = b"", pax: dict[bytes, bytes] | None = None,
           **fields) -> bytes:
    out = b""
    if pax:
        records = b"".join(pax_record(k, v) for k, v in pax.items())
        out += header(b"PaxHeaders/x", size=len(records), typeflag=b"x") + pad(records)
    return out + header(name, size=len(data), **fields) + pad(data)


def archive(*members: bytes, end: bool = True) -> bytes:
    return b"".join(members) + (bytes(2 * BLOCK) if end else b"")
