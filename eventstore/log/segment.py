"""Segment files: names, listing, and creating a new one atomically."""

from __future__ import annotations

import os
import re
import uuid as uuidlib
from pathlib import Path

from eventstore import faults
from eventstore.events import SCHEMA_VERSION
from eventstore.fsutil import fsync_dir
from eventstore.log.format import FORMAT_VERSION, HEADER_SIZE, SegmentHeader, encode_header
from eventstore.private import FILE_MODE

SEGMENT_RE = re.compile(r"^(\d{16})\.wal$")


def segment_name(number: int) -> str:
    return f"{number:016d}.wal"


def list_segments(log_dir: Path) -> list[tuple[int, Path]]:
    """The segment files in ``log_dir``, by number (gaps are the reader's business)."""
    found = []
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    for name in names:
        m = SEGMENT_RE.match(name)
        if m:
            found.append((int(m.group(1)), log_dir / name))
    return sorted(found)


def create_segment(log_dir: Path, store_uuid: uuidlib.UUID, number: int, first_lsn: int) -> SegmentHeader:
    """Write a new segment holding only its header, whole or not at all.

    temp file, fsync, rename, fsync the directory: a crash leaves either no segment or
    a complete header, never a torn one.
    """
    header = SegmentHeader(FORMAT_VERSION, SCHEMA_VERSION, store_uuid, number, first_lsn)
    path = log_dir / segment_name(number)
    tmp = log_dir / f".{segment_name(number)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        data = encode_header(header)
        assert len(data) == HEADER_SIZE
        os.write(fd, data)
        faults.point("log.segment.before-fsync")
        os.fsync(fd)
    finally:
        os.close(fd)
    faults.point("log.segment.before-rename")
    os.rename(tmp, path)
    fsync_dir(log_dir)
    faults.point("log.segment.after-rename")
    return header


def remove_temp_files(log_dir: Path) -> None:
    """Remove half-created segments a crash left behind (they were never renamed)."""
    removed = False
    for name in os.listdir(log_dir):
        if name.startswith(".") and name.endswith(".tmp"):
            os.unlink(log_dir / name)
            removed = True
    if removed:
        fsync_dir(log_dir)
