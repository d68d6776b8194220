"""The pure header parsers, byte by byte."""

from __future__ import annotations

import pytest

from eventstore.archive import header as h


@pytest.mark.parametrize("field, value", [
    (b"0000644\0", 0o644),
    (b"  644 \0\0", 0o644),
    (b"\0\0\0\0\0\0\0\0", 0),
    (b"\x80\0\0\0\0\0\0\x01", 1),
    (b"\x80" + (1 << 40).to_bytes(11, "big"), 1 << 40),
    (b"\xff" * 8, -1),
    (b"\xff" * 7 + b"\xfe", -2),
])
def test_numbers(field, value):
    assert h.number(field, "x") == value


@pytest.mark.parametrize("field", [b"12a\0", b"+12\0", b"1_2\0", b"-1\0", b"0o17\0", b"0018\0"])
def test_bad_numbers(field):
    with pytest.raises(h.HeaderError):
        h.number(field, "x")


def test_pax_records_keep_order_and_bytes():
    data = b"30 mtime=1700000000.123456789\n" + b"15 path=caf\xe9/\xff\n"
    assert h.parse_pax(data) == [(b"mtime", b"1700000000.123456789"), (b"path", b"caf\xe9/\xff")]


@pytest.mark.parametrize("data", [
    b"99 path=x\n",          # length past the end
    b"9 path=xy\n",          # length ends before the newline
    b"abc path=x\n",
    b"9 path=x\r",
    b"8 =value\n",
])
def test_bad_pax_records(data):
    with pytest.raises(h.HeaderError):
        h.parse_pax(data)


@pytest.mark.parametrize("text, ns", [
    (b"1", 1_000_000_000), (b"1.5", 1_500_000_000), (b"-1.5", -1_500_000_000),
    (b"0.123456789123", 123_456_789),
])
def test_pax_times(text, ns):
    assert h.pax_time_ns(text, "mtime") == ns


def test_checksum_accepts_signed_sums():
    block = bytearray(512)
    block[0:4] = b"\xe9\xe9ab"
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in block)
    block[148:156] = b"%06o\0 " % signed
    h.verify_checksum(bytes(block))
    block[200] = 1
    with pytest.raises(h.HeaderError):
        h.verify_checksum(bytes(block))


def test_sparse_map_checks():
    h.check_sparse([(0, 10), (100, 5)], 200, 15)
    for segments, real, stored in [([(10, 5), (0, 5)], 100, 10), ([(0, 10)], 5, 10),
                                   ([(0, 10)], 100, 9)]:
        with pytest.raises(h.HeaderError):
            h.check_sparse(segments, real, stored)


@pytest.mark.parametrize("seed", range(4))
def test_byte_sum_is_the_sum_of_the_bytes(seed):
    # the checksum's C shortcut must agree with sum() everywhere, across the two
    # candidates it picks from (sums below and above 65521) and at both extremes
    import random

    rng = random.Random(seed)
    blocks = [bytes(512), b"\xff" * 512, b"\xff" * 257 + bytes(255), b"\xff" * 256 + b"\x01" + bytes(255)]
    blocks += [bytes(rng.choice((0, 255, rng.randrange(256))) for _ in range(512)) for _ in range(2000)]
    for block in blocks:
        assert h.byte_sum(block) == sum(block)
