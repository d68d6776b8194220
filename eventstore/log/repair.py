"""Repairing a log: cutting a torn tail (automatic), and the operator's repair of
corruption (explicit, ``layerstore log repair``). Both keep the bytes they remove."""

from __future__ import annotations

import os
from pathlib import Path

from eventstore.fsutil import fsync_dir
from eventstore.log.segment import aside_path, cut_torn_tail


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
