"""The byte layout: pure encode and check, no files (docs/log-format.md)."""

from __future__ import annotations

import uuid

import pytest

from eventstore.log.format import (
    ALIGN, HEADER_SIZE, MAX_PAYLOAD, RECORD_HEADER_SIZE, FormatError, SegmentHeader, check_record, decode_header,
    encode_header, encode_record,
)

HEADER = SegmentHeader(1, 1, uuid.UUID(int=7), 3, 42)


def test_segment_header_round_trips_in_64_bytes():
    data = encode_header(HEADER)
    assert len(data) == HEADER_SIZE == 64
    assert decode_header(data) == HEADER


@pytest.mark.parametrize("offset", range(0, HEADER_SIZE, 5))
def test_damaged_segment_header_is_refused(offset):
    data = bytearray(encode_header(HEADER))
    data[offset] ^= 0x10
    with pytest.raises(FormatError):
        decode_header(bytes(data))


def test_segment_header_from_a_newer_format_is_refused():
    newer = encode_header(HEADER._replace(format_version=2))
    with pytest.raises(FormatError, match="newer"):
        decode_header(newer)


def test_short_header_is_refused():
    with pytest.raises(FormatError, match="short"):
        decode_header(encode_header(HEADER)[:63])


@pytest.mark.parametrize("size", range(0, 20))
def test_records_are_aligned_and_round_trip(size):
    payload = bytes(range(size))
    record = encode_record(payload, 5, 2, HEADER.salt)
    assert len(record) % ALIGN == 0
    rec = check_record(record, 0, len(record), HEADER.salt, 5)
    assert (rec.lsn, rec.count, rec.length, rec.size) == (5, 2, size, len(record))
    assert record[RECORD_HEADER_SIZE:RECORD_HEADER_SIZE + size] == payload


def test_record_under_another_salt_does_not_validate():
    other = HEADER._replace(store_uuid=uuid.UUID(int=8))
    record = encode_record(b"payload", 1, 1, HEADER.salt)
    with pytest.raises(FormatError, match="^record checksum mismatch$"):
        check_record(record, 0, len(record), other.salt, 1)
    next_segment = HEADER._replace(number=4)
    with pytest.raises(FormatError, match="^record checksum mismatch$"):
        check_record(record, 0, len(record), next_segment.salt, 1)


def test_record_with_an_unexpected_lsn_is_rejected():
    record = encode_record(b"payload", 7, 1, HEADER.salt)
    with pytest.raises(FormatError, match="LSN 7"):
        check_record(record, 0, len(record), HEADER.salt, 8)
    assert check_record(record, 0, len(record), HEADER.salt, None).lsn == 7


def test_partial_record_is_rejected():
    record = encode_record(b"payload!", 1, 1, HEADER.salt)
    with pytest.raises(FormatError, match="^partial record header$"):
        check_record(record, 0, 10, HEADER.salt, 1)
    with pytest.raises(FormatError, match="past the end"):
        check_record(record, 0, len(record) - 1, HEADER.salt, 1)


def test_oversized_payload_is_refused_on_write_and_on_read():
    with pytest.raises(ValueError):
        encode_record(b"\0" * (MAX_PAYLOAD + 1), 1, 1, HEADER.salt)
    record = bytearray(encode_record(b"x", 1, 1, HEADER.salt))
    record[4:8] = (MAX_PAYLOAD + 1).to_bytes(4, "little")
    with pytest.raises(FormatError):
        check_record(bytes(record), 0, len(record), HEADER.salt, 1)
