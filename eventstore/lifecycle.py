"""The log's lifecycle (docs/lifecycle.md): sealing, archiving, retention.

Run by a writer right after a checkpoint, under the writer lock:

- ``seals_due``: a ``segment-sealed`` event for every segment the new checkpoint wholly
  covers (every segment before the one holding the checkpoint's position);
- ``archive``: sealed segments compressed to ``log/archive/<name>.zst``, each read back
  and checked against its seal before the plain file goes;
- ``horizon_due`` and ``drop_before``: with a retention policy, the archived segments
  behind the horizon dropped, once a ``history-horizon`` event (and the ``HORIZON``
  file) say where the log now starts.

Every step is idempotent and crash-safe: each can be redone from what the log and the
disk say, and at every moment one checked copy of every segment the log still counts
exists.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from eventstore import events as ev
from eventstore import faults
from eventstore.errors import InvalidArgument
from eventstore.fsutil import fsync_dir, write_atomic
from eventstore.log.format import HEADER_SIZE, FormatError, crc32c, segment_name
from eventstore.log.reader import (ARCHIVE_DIR, ARCHIVE_SUFFIX, HORIZON_FILE, horizon_bytes, list_segments,
                                   read_from, scan)
from eventstore.private import FILE_MODE, make_dir

#: what a sealed segment's row holds: first LSN, last LSN, size, CRC, last event time
Sealed = dict[int, tuple[int, ...]]


class Retention(NamedTuple):
    """Keep the history of the last ``seconds`` (by the time of a segment's last
    event), or of the last ``events`` events."""

    seconds: int = 0
    events: int = 0

    def __str__(self) -> str:
        return f"{self.seconds}s" if self.seconds else f"{self.events} events"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_retention(text: str) -> Retention:
    """``90d``, ``12h``, ``3600s`` (a time) or ``5000000`` (events); InvalidArgument
    (one line) otherwise."""
    text = text.strip()
    m = re.fullmatch(r"(\d+)\s*([smhdw]?)", text)
    if not m or int(m[1]) <= 0:
        raise InvalidArgument(f"history retention {text!r}: want a time (90d, 12h, 30m, 3600s) or a number "
                              f"of events (5000000), greater than zero")
    if m[2]:
        return Retention(seconds=int(m[1]) * _UNITS[m[2]])
    return Retention(events=int(m[1]))


# --- sealing ------------------------------------------------------------------------------------

def seals_due(log, sealed: Sealed, checkpoint_segment: int) -> list[ev.SegmentSealed]:
    """A seal for every live segment before ``checkpoint_segment`` not sealed yet."""
    numbers = sorted(n for n in log.headers() if n < checkpoint_segment and n not in sealed)
    seals = []
    for number in numbers:
        path = log.log_dir / segment_name(number)
        if not path.exists():
            continue  # archived already (its seal was lost with a rebuild): nothing to read cheaply
        data = read_from(path, 0)
        header = log.headers()[number]
        last_lsn = log.headers()[number + 1].first_lsn - 1
        seals.append(ev.SegmentSealed(segment=number, first_lsn=header.first_lsn, last_lsn=last_lsn,
                                      size=len(data), crc=crc32c(data),
                                      last_time=_last_event_time(path, data, header)))
    return seals


def reseals_due(log, sealed: Sealed) -> list[ev.SegmentSealed]:
    """A new seal for every sealed segment a repair rewrote: its plain file is back,
    its archive was moved aside, and its bytes are no longer the sealed ones (a
    records-lost marker stands in the log for what changed)."""
    seals = []
    headers = log.headers()
    for number, (_first, last_lsn, size, crc, _time) in sorted(sealed.items()):
        path = log.log_dir / segment_name(number)
        if number not in headers or archive_path(log.log_dir, number).exists() or not path.exists():
            continue
        data = read_from(path, 0)
        if len(data) == size and crc32c(data) == crc:
            continue
        header = headers[number]
        seals.append(ev.SegmentSealed(segment=number, first_lsn=header.first_lsn, last_lsn=last_lsn,
                                      size=len(data), crc=crc32c(data),
                                      last_time=_last_event_time(path, data, header)))
    return seals


def _last_event_time(path: Path, data: bytes, header) -> int:
    records: list = []
    scan(path, data[HEADER_SIZE:], HEADER_SIZE, header.salt, header.first_lsn, False, records)
    if not records:
        return 0
    from eventstore.log.wal import decode_record

    return max(e.time for e in decode_record(records[-1], header.number).events)


# --- archiving ----------------------------------------------------------------------------------

def archive_path(log_dir: Path, number: int) -> Path:
    return log_dir / ARCHIVE_DIR / (segment_name(number) + ARCHIVE_SUFFIX)


def archive(log_dir: Path, sealed: Sealed) -> list[str]:
    """Compress every sealed segment that still has its plain file; what was done."""
    done = []
    for number, (_first, _last, size, crc, _time) in sorted(sealed.items()):
        live = log_dir / segment_name(number)
        if not live.exists():
            continue
        target = archive_path(log_dir, number)
        if not (target.exists() and _holds(target, size, crc)) and not _compress(live, target, size, crc):
            done.append(f"kept {live.name} plain: its bytes are not the sealed ones")
            continue
        faults.point("log.archive.before-unlink")
        os.unlink(live)
        fsync_dir(log_dir)
        done.append(f"archived {live.name}")
    return done


def _compress(live: Path, target: Path, size: int, crc: int) -> bool:
    """Write ``target`` from ``live``; False (nothing written) when ``live`` does not
    hold the sealed bytes."""
    import zstandard

    data = read_from(live, 0)
    if len(data) != size or crc32c(data) != crc:
        return False
    make_dir(target.parent)
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compress(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    faults.point("log.archive.after-compress")
    if not _holds(target, size, crc):
        os.unlink(target)
        raise OSError(5, "an archived segment does not read back as sealed", str(target))
    return True


def _holds(path: Path, size: int, crc: int) -> bool:
    try:
        data = read_from(path, 0)
    except (OSError, FormatError):
        return False
    return len(data) == size and crc32c(data) == crc


def unarchive(log_dir: Path) -> list[str]:
    """Plain files again for archived segments (a repair edits plain files); an archive
    that cannot be read is left for the repair to find."""
    done = []
    for number, path in list_segments(log_dir):
        if not str(path).endswith(ARCHIVE_SUFFIX):
            continue
        try:
            data = read_from(path, 0)
        except (OSError, FormatError):
            continue
        write_atomic(log_dir / segment_name(number), data)
        done.append(f"restored {segment_name(number)} from its archive")
    return done


# --- retention -----------------------------------------------------------------------------------

def horizon_due(log_dir: Path, sealed: Sealed, checkpoint_lsn: int, last_lsn: int, policy: Retention,
                now_ns: int | None = None) -> tuple[int, int] | None:
    """(first segment kept, its first LSN) when segments are due to be dropped: a
    prefix of archived segments, each wholly covered by the checkpoint and older than
    ``policy``; None when nothing is."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    present = dict(list_segments(log_dir))
    drop = None
    for number, (first, last, _size, _crc, last_time) in sorted(sealed.items()):
        archived = present.get(number) and str(present[number]).endswith(ARCHIVE_SUFFIX)
        old = (policy.seconds and last_time < now_ns - policy.seconds * 1_000_000_000) or \
            (policy.events and last_lsn - last >= policy.events)
        if not (archived and old and last <= checkpoint_lsn and number + 1 in present):
            break
        drop = number
    if drop is None:
        return None
    return drop + 1, sealed[drop][1] + 1


def write_horizon(log_dir: Path, first_segment: int, first_lsn: int) -> None:
    """The log now starts at ``first_segment``: what every open's chain check reads."""
    write_atomic(log_dir / HORIZON_FILE, horizon_bytes(first_segment, first_lsn))
    faults.point("log.retention.after-horizon-file")


def drop_before(log_dir: Path, first_segment: int) -> list[str]:
    """Delete the archived segments before the horizon (the horizon file is written)."""
    done = []
    for number, path in list_segments(log_dir):
        if number >= first_segment:
            break
        faults.point("log.retention.before-drop")
        os.unlink(path)
        done.append(f"dropped {path.name} (behind the history horizon)")
    if done:
        fsync_dir(log_dir / ARCHIVE_DIR)
    return done
