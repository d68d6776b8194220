"""Tar header blocks for the tars we write (diff_changes): ustar when the fields fit,
with a PAX extended header in front for what does not (long or non-UTF-8 names, big
numbers, xattrs)."""

from __future__ import annotations

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)

TYPEFLAGS = {"file": b"0", "hardlink": b"1", "symlink": b"2", "chardev": b"3",
             "blockdev": b"4", "dir": b"5", "fifo": b"6"}

_MAX_OCTAL_7 = 0o7777777
_MAX_OCTAL_11 = 0o77777777777


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def header(name: bytes, kind: str, *, mode: int, uid: int, gid: int, mtime: int,
           size: int = 0, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
           xattrs: list[tuple[bytes, bytes]] = ()) -> bytes:
    """The header block(s) of one entry (``mtime`` in whole seconds)."""
    records: list[tuple[bytes, bytes]] = []
    name_field, prefix_field = _split_name(name)
    if name_field is None:
        records.append((b"path", name))
        name_field, prefix_field = name[:100], b""
    if len(linkname) > 100:
        records.append((b"linkpath", linkname))
    if not _utf8(name) or not _utf8(linkname):
        records.insert(0, (b"hdrcharset", b"BINARY"))
    for key, value, limit in ((b"uid", uid, _MAX_OCTAL_7), (b"gid", gid, _MAX_OCTAL_7),
                              (b"size", size, _MAX_OCTAL_11), (b"mtime", mtime, _MAX_OCTAL_11)):
        if not 0 <= value <= limit:
            records.append((key, b"%d" % value))
    for xname, xvalue in xattrs:
        records.append((b"SCHILY.xattr." + xname, xvalue))
    block = _ustar(name_field, prefix_field, TYPEFLAGS[kind], mode, uid, gid, size, mtime,
                   linkname[:100], devmajor, devminor)
    if not records:
        return block
    data = b"".join(_pax_record(k, v) for k, v in records)
    pax_name = (b"PaxHeaders/" + name.rstrip(b"/").rpartition(b"/")[2])[:100]
    pax = _ustar(pax_name, b"", b"x", 0o644, 0, 0, len(data), 0, b"", 0, 0)
    return pax + data + padding(len(data)) + block


def _split_name(name: bytes) -> tuple[bytes | None, bytes]:
    if len(name) <= 100:
        return name, b""
    # ustar: prefix (<=155) + "/" + name (<=100), split at a slash
    cut = name.find(b"/", max(0, len(name) - 101))
    while 0 <= cut <= 155:
        if 0 < len(name) - cut - 1 <= 100:
            return name[cut + 1:], name[:cut]
        cut = name.find(b"/", cut + 1)
    return None, b""


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def _octal(value: int, width: int) -> bytes:
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    if value < 0:  # base-256 two's complement (GNU), for pre-1970 times in the field
        value += 1 << (8 * width)
        return value.to_bytes(width, "big")
    return (value | (0x80 << (8 * (width - 1)))).to_bytes(width, "big")


def _ustar(name: bytes, prefix: bytes, typeflag: bytes, mode: int, uid: int, gid: int,
           size: int, mtime: int, linkname: bytes, devmajor: int, devminor: int) -> bytes:
    block = bytearray(BLOCK)
    block[0:len(name)] = name
    block[100:108] = _octal(mode & 0o7777, 8)
    block[108:116] = _octal(uid if uid <= _MAX_OCTAL_7 else 0, 8)
    block[116:124] = _octal(gid if gid <= _MAX_OCTAL_7 else 0, 8)
    block[124:136] = _octal(size if size <= _MAX_OCTAL_11 else 0, 12)
    block[136:148] = _octal(mtime if 0 <= mtime <= _MAX_OCTAL_11 else 0, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157:157 + len(linkname)] = linkname
    block[257:265] = b"ustar\x0000"
    block[329:337] = _octal(devmajor, 8)
    block[337:345] = _octal(devminor, 8)
    block[345:345 + len(prefix)] = prefix
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)
