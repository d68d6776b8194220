"""Segment files: names, listing, and creating a new one atomically."""

from __future__ import annotations

import os
import shutil
import uuid as uuidlib
from pathlib import Path

from eventstore import faults
from eventstore.events import SCHEMA_VERSION
from eventstore.fsutil import fsync_dir
from eventstore.log.format import FORMAT_VERSION, HEADER_SIZE, SegmentHeader, encode_header, segment_name

def create_segment(log_dir: Path, store_uuid: uuidlib.UUID, number: int, first_lsn: int) -> SegmentHeader:
    """Write a new segment holding only its header, whole or not at all.

    temp file, fsync, rename, fsync the directory: a crash leaves either no segment or
    a complete header, never a torn one.
    """
    header = SegmentHeader(FORMAT_VERSION, SCHEMA_VERSION, store_uuid, number, first_lsn)
    path = log_dir / segment_name(number)
    tmp = log_dir / f".{segment_name(number)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
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


def aside_path(segment: Path, offset: int) -> Path:
    """``<segment>.broken-<offset>``, or with ``.1``, ``.2``... appended when taken:
    a second tear at the same offset must not overwrite the bytes kept from the first."""
    aside = segment.with_name(f"{segment.name}.broken-{offset}")
    n = 0
    while aside.exists():
        n += 1
        aside = segment.with_name(f"{segment.name}.broken-{offset}.{n}")
    return aside


def cut_torn_tail(segment: Path, offset: int) -> Path:
    """Copy ``segment``'s bytes from ``offset`` aside to ``<segment>.broken-<offset>``,
    truncate the segment there, and make both durable; the copy's path."""
    aside = aside_path(segment, offset)
    with open(segment, "rb") as src, open(aside, "xb") as dst:
        src.seek(offset)
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    fsync_dir(segment.parent)
    faults.point("log.repair.before-truncate")
    fd = os.open(segment, os.O_WRONLY)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return aside
