"""Repairing a log: cutting a torn tail (automatic), and the operator's repair of
corruption (explicit, ``layerstore log repair``). Both keep the bytes they remove."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from eventstore import faults
from eventstore.fsutil import fsync_dir


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
    truncate the segment there, and make both durable."""
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


def repair(root: str | os.PathLike) -> list[str]:
    """Cut the log at its first damage, keeping every removed byte aside.

    For the operator after ``CorruptLog``: the log keeps everything before the damage;
    the damaged segment's rest and every later segment are moved aside (``.broken-*``)
    so nothing is destroyed. Returns what was done, one line each.
    """
    from eventstore.errors import CorruptLog
    from eventstore.log.segment import list_segments
    from eventstore.log.wal import EventLog

    actions: list[str] = []
    while True:
        try:
            log = EventLog.open(root, create=False, writer=True)
        except CorruptLog as exc:
            if exc.segment is None or exc.offset is None:
                raise
            segment = Path(exc.segment)
            log_dir = segment.parent
            later = [p for n, p in list_segments(log_dir) if p.name > segment.name]
            for path in later:
                aside = aside_path(path, 0)
                os.rename(path, aside)
                actions.append(f"moved {path.name} aside to {aside.name}")
            if exc.offset == 0:
                aside = aside_path(segment, 0)
                os.rename(segment, aside)
                actions.append(f"moved {segment.name} aside to {aside.name} (bad header)")
            else:
                aside = cut_torn_tail(segment, exc.offset)
                actions.append(f"cut {segment.name} at offset {exc.offset}; removed bytes kept in {aside.name}")
            fsync_dir(log_dir)
            continue
        try:
            report = log.verify()
        except CorruptLog as exc:  # damage before the resume point: verify sees it
            log.close()
            if exc.segment is None or exc.offset is None:
                raise
            segment = Path(exc.segment)
            aside = cut_torn_tail(segment, exc.offset) if exc.offset else None
            later = [p for n, p in list_segments(segment.parent) if p.name > segment.name]
            for path in later:
                os.rename(path, aside_path(path, 0))
                actions.append(f"moved {path.name} aside")
            actions.append(f"cut {segment.name} at offset {exc.offset}" + (f"; kept in {aside.name}" if aside else ""))
            continue
        log.close()
        actions.append(f"log is whole: {report.segments} segment(s), {report.events} events, last LSN {report.last_lsn}")
        return actions
