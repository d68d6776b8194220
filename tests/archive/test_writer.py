"""The headers diff_changes writes read back the same, with tarfile and with our reader."""

from __future__ import annotations

import io
import tarfile

import pytest

from eventstore.archive import writer
from eventstore.archive.reader import TarReader


class NoSplit:
    def raw(self, data) -> None:
        pass


def one_entry(name: bytes, kind: str = "file", data: bytes = b"", **fields) -> bytes:
    fields.setdefault("mode", 0o644)
    fields.setdefault("uid", 0)
    fields.setdefault("gid", 0)
    fields.setdefault("mtime", 1_700_000_000)
    return (writer.header(name, kind, size=len(data), **fields) + data
            + writer.padding(len(data)) + writer.END_OF_ARCHIVE)


def ours(data: bytes):
    reader = TarReader(iter([data]), NoSplit(), 1 << 40)
    return list(reader.entries())


@pytest.mark.parametrize("name", [
    b"short",
    b"d" * 120 + b"/" + b"f" * 90,          # fits ustar with a prefix
    b"x" * 300,                              # needs PAX
    b"caf\xe9/\xff\xfe-not-utf8",            # bytes as they are
    b"caf\xe9/" + b"\xff" * 150,             # PAX with hdrcharset=BINARY
])
def test_names_round_trip(name):
    [entry] = ours(one_entry(name, data=b"payload"))
    assert entry.name == name
    with tarfile.open(fileobj=io.BytesIO(one_entry(name, data=b"payload")),
                      encoding="utf-8", errors="surrogateescape") as tar:
        [member] = tar.getmembers()
        assert member.name.encode("utf-8", "surrogateescape") == name
        assert tar.extractfile(member).read() == b"payload"


def test_big_numbers_and_xattrs():
    data = one_entry(b"f", uid=5_000_000, gid=7, mtime=-86400,
                     xattrs=[(b"user.a", b"\x00\x01"), (b"security.capability", b"cap")])
    [entry] = ours(data)
    assert (entry.uid, entry.gid, entry.mtime_ns) == (5_000_000, 7, -86400 * 10**9)
    assert entry.xattrs == [(b"user.a", b"\x00\x01"), (b"security.capability", b"cap")]


def test_devices_links_and_directories():
    data = b"".join(writer.header(n, k, mode=0o755, uid=0, gid=0, mtime=1, **f) for n, k, f in [
        (b"dir/", "dir", {}), (b"dir/null", "chardev", dict(devmajor=1, devminor=3)),
        (b"dir/big", "blockdev", dict(devmajor=259, devminor=1 << 21)),
        (b"dir/link", "symlink", dict(linkname=b"l" * 150)),
        (b"dir/hard", "hardlink", dict(linkname=b"dir/null")),
    ]) + writer.END_OF_ARCHIVE
    got = {e.name: e for e in ours(data)}
    assert got[b"dir/"].kind == "dir"
    assert (got[b"dir/null"].devmajor, got[b"dir/null"].devminor) == (1, 3)
    assert got[b"dir/big"].devminor == 1 << 21
    assert got[b"dir/link"].linkname == b"l" * 150
    assert got[b"dir/hard"].kind == "hardlink"
