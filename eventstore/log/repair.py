"""The operator's repair of a corrupt log (``layerstore log repair [--dry-run]``).

Repair loses the least possible (docs/integrity.md, "Repair loses the least possible"):

- every valid record is kept, byte for byte and, wherever it can be, at the same offset;
- each damaged range — a bad record and everything up to the next valid one, a segment
  whose header cannot be read back, a missing segment, a tail the read models or a
  checkpoint prove existed — is replaced by a records-lost marker that occupies exactly
  the lost LSNs, so the log is gap-free again and says what it lost;
- the damaged bytes are copied aside first (``<segment>.broken-<offset>``, or the whole
  file) — nothing is deleted.

It reads the log itself (``reader``, ``segment``, ``format``) and never the reverse: the
log does not know repair exists. Every step is idempotent: a repair killed half-way is
finished by running it again.
"""

from __future__ import annotations

import os
import re
import time
import uuid as uuidlib
from pathlib import Path
from typing import NamedTuple

from eventstore.errors import CorruptLog
from eventstore.events import RecordsLost, SCHEMA_VERSION, current_actor, decode_batch, encode_lost
from eventstore.fsutil import fsync_dir
from eventstore.log.format import (FORMAT_VERSION, HEADER_SIZE, RECORD_HEADER_SIZE, TYPE_EVENTS, FormatError,
                                   SegmentHeader, check_record, encode_header, encode_lost_record, segment_name)
from eventstore.log.reader import first_valid_record_after, list_segments, read_from, read_header
from eventstore.log.segment import aside_path

LAYER_ID = re.compile(rb"[0-9a-f]{64}")


class Loss(NamedTuple):
    """LSNs ``first_lsn`` … ``first_lsn + count - 1`` are lost; the marker goes at
    ``offset`` of ``segment`` and replaces the bytes up to ``end`` (None: to the end of
    the file)."""

    segment: int
    offset: int
    end: int | None
    first_lsn: int
    count: int
    reason: str
    layers: tuple[str, ...] = ()


class SegmentFix(NamedTuple):
    """A segment whose header must be written again (``header``), or recreated whole."""

    number: int
    header: SegmentHeader
    how: str  # "header": its records are sound, only the header was damaged; "new": recreated


class Plan(NamedTuple):
    losses: list[Loss]
    fixes: list[SegmentFix]
    torn: tuple[int, int] | None  # a torn tail nobody acknowledged: (segment, offset) to cut
    last_lsn: int                 # the log's last LSN after the repair


# --- finding out what is wrong ----------------------------------------------------------------

def _store_uuid(segments: list[tuple[int, Path]]) -> uuidlib.UUID:
    """The store the log belongs to: the one most segment headers name."""
    votes: dict[uuidlib.UUID, int] = {}
    for _, path in segments:
        try:
            store = read_header(path).store_uuid
        except (FormatError, OSError):
            continue
        votes[store] = votes.get(store, 0) + 1
    if not votes:
        raise CorruptLog("log: no segment header can be read: nothing to repair from")
    return max(votes, key=votes.__getitem__)


def _readable_header(path: Path, number: int, store: uuidlib.UUID, first_lsn: int) -> tuple[SegmentHeader, str]:
    """The segment's header, or one rebuilt from what it must have said when its own
    is damaged: ``how`` is "" (sound), "header" (rebuilt: its first record validates
    under it), or "lost" (its records cannot be checked: the segment is lost)."""
    try:
        header = read_header(path)
        if header.store_uuid == store and header.number == number:
            return header, ""
    except (FormatError, OSError):
        pass
    data = read_from(path, HEADER_SIZE) if path.exists() else b""
    lsns = {first_lsn}
    if len(data) >= RECORD_HEADER_SIZE:
        lsns.add(int.from_bytes(data[16:24], "little"))  # what its first record says
    for schema in range(SCHEMA_VERSION, 0, -1):
        for lsn in sorted(lsns):
            candidate = SegmentHeader(FORMAT_VERSION, schema, store, number, lsn)
            try:
                check_record(data, 0, len(data), candidate.salt, lsn)
            except FormatError:
                continue
            return candidate, "header"
    return SegmentHeader(FORMAT_VERSION, SCHEMA_VERSION, store, number, first_lsn), "lost"


def _salvaged_layers(data: bytes) -> tuple[str, ...]:
    """Layer ids written in damaged bytes (evidence of what the lost records touched)."""
    return tuple(dict.fromkeys(m.decode() for m in LAYER_ID.findall(data)))


def _scan_segment(path: Path, number: int, header: SegmentHeader, follower: int | None, is_last: bool,
                  seen_lsn: int, losses: list[Loss]) -> tuple[int, tuple[int, int] | None]:
    """Walk one segment's records, adding a Loss for every damaged range; the next
    expected LSN, and a torn tail to cut (the last segment only). ``follower``: the
    first LSN of the next segment when it can be read (None: it is lost too, or this
    is the last)."""
    buf = read_from(path, HEADER_SIZE)
    pos, end, salt, expected = 0, len(buf), header.salt, header.first_lsn
    while pos < end:
        try:
            rec = check_record(buf, pos, end, salt, expected)
            if rec.type == TYPE_EVENTS:
                decode_batch(buf[pos + RECORD_HEADER_SIZE:pos + RECORD_HEADER_SIZE + rec.length])
            pos += rec.size
            expected = rec.lsn + rec.count
            continue
        except FormatError as exc:
            reason = str(exc)
        except Exception as exc:  # a sound frame around an undecodable payload
            reason = f"undecodable record: {exc}"
        after = _next_record(buf, pos, salt, expected)
        if after is not None:
            lsn = int.from_bytes(buf[after + 16:after + 24], "little")
            losses.append(Loss(number, HEADER_SIZE + pos, HEADER_SIZE + after, expected, lsn - expected, reason,
                               _salvaged_layers(buf[pos:after])))
            pos, expected = after, lsn
            continue
        # damage to the end of the segment
        if is_last and seen_lsn < expected:  # nothing acknowledged was there: an ordinary torn tail
            return expected, (number, HEADER_SIZE + pos)
        upto = seen_lsn if is_last else (follower - 1 if follower is not None else expected)
        losses.append(Loss(number, HEADER_SIZE + pos, None, expected, max(upto - expected + 1, 0), reason,
                           _salvaged_layers(buf[pos:])))
        return max(upto + 1, expected), None
    upto = seen_lsn if is_last else (follower - 1 if follower is not None else expected - 1)
    if upto >= expected:  # the segment (or the log) ends before LSNs that existed
        losses.append(Loss(number, HEADER_SIZE + end, None, expected, upto - expected + 1,
                           "the log ends before what the read models or a checkpoint have seen" if is_last
                           else "the segment ends before the next one begins"))
        expected = upto + 1
    return expected, None


def _next_record(buf: bytes, pos: int, salt: int, expected: int) -> int | None:
    """The first valid record after ``pos`` whose LSN is not before ``expected``."""
    while True:
        after = first_valid_record_after(buf, pos, salt)
        if after is None or int.from_bytes(buf[after + 16:after + 24], "little") >= expected:
            return after
        pos = after


def plan(root: str | os.PathLike, seen_lsn: int = 0, evidence: dict[int, str] | None = None) -> Plan:
    """What repair would do to the log at ``root``. ``seen_lsn``: the highest LSN the
    read models or a checkpoint have seen; ``evidence``: layer ids by LSN from the old
    read models, to name the layers lost records touched."""
    log_dir = Path(root) / "log"
    segments = list_segments(log_dir)
    if not segments:
        raise CorruptLog(f"log: {log_dir} has no segments: nothing to repair from")
    store = _store_uuid(segments)
    files = dict(segments)
    losses: list[Loss] = []
    fixes: list[SegmentFix] = []
    expected, torn = 1, None
    status = {n: _readable_header(files[n], n, store, 0) if n in files else (None, "lost")
              for n in range(1, max(files) + 1)}
    for number, (header, how) in status.items():
        later = [h.first_lsn for n, (h, w) in status.items() if n > number and w != "lost"]
        bound = later[0] if later else None  # the first LSN of the next segment we can read
        if how == "lost":
            upto = bound - 1 if bound is not None else max(seen_lsn, expected)
            missing_after = 0  # lost segments right after this one: each needs an LSN of its own
            while status.get(number + missing_after + 1, (None, ""))[1] == "lost":
                missing_after += 1
            count = max(upto - expected + 1 - missing_after, 1)
            if bound is not None and expected + count > bound:
                raise CorruptLog(f"log: segment {segment_name(number)} is lost and more segments are missing "
                                 f"than LSNs to mark; repair by hand")
            fixes.append(SegmentFix(number, SegmentHeader(FORMAT_VERSION, SCHEMA_VERSION, store, number, expected),
                                    "new"))
            losses.append(Loss(number, HEADER_SIZE, None, expected, count,
                               "segment missing" if number not in files else "segment header cannot be read back"))
            expected += count
            continue
        if header.first_lsn != expected and number > 1 and header.first_lsn < expected:
            raise CorruptLog(f"log: segment {segment_name(number)} starts at LSN {header.first_lsn}, "
                             f"before LSN {expected} (a stale copy?); repair by hand")
        if how == "header":
            fixes.append(SegmentFix(number, header, "header"))
        is_last = number == max(files)
        next_sound = not is_last and status[number + 1][1] != "lost"
        expected, torn = _scan_segment(files[number], number, header, bound if next_sound else None, is_last,
                                       seen_lsn, losses)
    if evidence:
        losses = [loss._replace(layers=tuple(dict.fromkeys(
            [*loss.layers, *(evidence[lsn] for lsn in range(loss.first_lsn, loss.first_lsn + loss.count)
                             if lsn in evidence)]))) for loss in losses]
    return Plan(losses, fixes, torn, expected - 1)


# --- doing it -----------------------------------------------------------------------------------

def describe(plan_: Plan) -> list[str]:
    """What ``plan_`` does, one line each."""
    lines = []
    for fix in plan_.fixes:
        if fix.how == "header":
            lines.append(f"segment {segment_name(fix.number)}: header damaged; rebuilt (its records validate under it)")
    for loss in plan_.losses:
        span = f"LSN {loss.first_lsn}" if loss.count == 1 else f"LSNs {loss.first_lsn}-{loss.first_lsn + loss.count - 1}"
        where = f"bytes {loss.offset}-{loss.end}" if loss.end is not None else f"from byte {loss.offset}"
        layers = f"; layers affected: {', '.join(i[:12] for i in loss.layers)}" if loss.layers else ""
        lines.append(f"segment {segment_name(loss.segment)} {where}: {loss.reason}: {span} lost{layers}")
    if plan_.torn:
        lines.append(f"segment {segment_name(plan_.torn[0])}: torn tail at byte {plan_.torn[1]} "
                     f"(never acknowledged) cut")
    return lines


def apply(root: str | os.PathLike, plan_: Plan) -> list[str]:
    """Carry ``plan_`` out; what was done, one line each."""
    log_dir = Path(root) / "log"
    done: list[str] = []
    headers = {}
    for fix in plan_.fixes:
        path = log_dir / segment_name(fix.number)
        headers[fix.number] = fix.header
        if fix.how == "new":
            if path.exists():
                aside = aside_path(path, 0)
                os.rename(path, aside)
                done.append(f"moved {path.name} aside to {aside.name}")
            _write_new_segment(path, fix.header)
        else:
            done.append(_keep_aside(path, 0, HEADER_SIZE))
            _write_at(path, 0, encode_header(fix.header))
    for loss in sorted(plan_.losses, key=lambda x: (x.segment, -x.offset)):  # back to front: offsets hold
        path = log_dir / segment_name(loss.segment)
        header = headers.get(loss.segment) or read_header(path)
        done += _mark_lost(path, header, loss)
    if plan_.torn:
        from eventstore.log.segment import cut_torn_tail

        number, offset = plan_.torn
        aside = cut_torn_tail(log_dir / segment_name(number), offset)
        done.append(f"cut the torn tail of {segment_name(number)} at byte {offset}; kept in {aside.name}")
    fsync_dir(log_dir)
    return done


def _mark_lost(path: Path, header: SegmentHeader, loss: Loss) -> list[str]:
    info = encode_lost(RecordsLost(first_lsn=loss.first_lsn, count=loss.count, reason=loss.reason,
                                   layers=list(loss.layers), time=time.time_ns(), actor=current_actor()))
    size = os.path.getsize(path)
    done = []
    if loss.offset < size:
        done.append(_keep_aside(path, loss.offset, loss.end))
    if loss.count == 0:  # bytes that held no LSN: kept aside, and taken out
        _rewrite_from(path, loss.offset, read_from(path, loss.end) if loss.end is not None else b"")
        return done + [f"took bytes {loss.offset}-{loss.end if loss.end is not None else size} out of {path.name} "
                       f"(they held no LSN)"]
    if loss.end is not None:
        span = loss.end - loss.offset
        if span >= RECORD_HEADER_SIZE and span % 8 == 0:  # in place: every offset stays as it was
            _write_at(path, loss.offset, encode_lost_record(info, loss.first_lsn, loss.count, header.salt, span))
        else:  # too small for a marker: the records after it move
            rest = read_from(path, loss.end)
            _rewrite_from(path, loss.offset, encode_lost_record(info, loss.first_lsn, loss.count, header.salt) + rest)
    else:
        _rewrite_from(path, loss.offset, encode_lost_record(info, loss.first_lsn, loss.count, header.salt))
    done.append(f"marked LSNs {loss.first_lsn}-{loss.first_lsn + loss.count - 1} lost in {path.name} "
                f"at byte {loss.offset} ({loss.reason})")
    return done


def _keep_aside(path: Path, offset: int, end: int | None) -> str:
    aside = aside_path(path, offset)
    data = read_from(path, offset, None if end is None else end - offset)
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return f"kept the damaged bytes of {path.name} from byte {offset} in {aside.name}"


def _write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _rewrite_from(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, offset)
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_segment(path: Path, header: SegmentHeader) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, encode_header(header))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)
