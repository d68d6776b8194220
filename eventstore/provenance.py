"""Whether derived data follows this very log (DESIGN §2, §3; docs/integrity.md).

Before the log is opened, the store gathers what its derived data claims: the read
models' marks (store, position, last record, span checksum) and the checkpoints'
headers (store, LSN, position, last record). From them:

- ``seen_lsn``: the highest LSN derived data of this store has seen — a log that ends
  before it has lost acknowledged records;
- ``start``: the position of the newest checkpoint whose last record the log still has
  — where an open starts checking records one by one;
- ``span``: the read models' span checksum, when their last record is in the log —
  with it an open checks every record since the checkpoint with one CRC.

Nothing here imports msgspec: the CLI's fast read path uses it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from eventstore import checkpoint
from eventstore.log.format import FormatError, segment_name
from eventstore.log.reader import ChainError, list_segments, read_chain, read_header, record_header_at, span_crc
from eventstore.query import Marks

Triple = tuple[int, int, int]


class Expectation(NamedTuple):
    log_uuid: str | None          # the store the log's first segment names
    index_is_ours: bool           # the read models name that store
    seen_lsn: int
    start: Triple | None
    span: tuple[Triple, Triple, int] | None  # start, end (the read models' position), CRC
    checkpoint_seen: int = 0      # the part of seen_lsn the checkpoints vouch for

    def without_index(self) -> "Expectation":
        """The expectation when the read models turned out to be another history's."""
        return self._replace(index_is_ours=False, seen_lsn=self.checkpoint_seen, span=None)


def holds(log_dir: Path, fingerprint: tuple[int, int, int, int] | None) -> bool:
    """True when the record ``fingerprint`` names (segment, offset, LSN, CRC) is in the log."""
    if not fingerprint:
        return False
    segment, offset, lsn, crc = fingerprint
    header = record_header_at(log_dir / segment_name(segment), offset)
    return header is not None and (header.lsn, header.crc) == (lsn, crc)


def log_uuid(log_dir: Path) -> str | None:
    """The store the log's segments name (the first one whose header reads: segment 1
    may be the one that is lost)."""
    for _, path in list_segments(log_dir):
        try:
            return str(read_header(path, quick=True).store_uuid)
        except (FormatError, OSError):
            continue
    return None


def expect(root: str | os.PathLike, marks: Marks) -> Expectation:
    """What derived data of the store at ``root`` says about its log."""
    log_dir = Path(root) / "log"
    uuid = log_uuid(log_dir)
    ours = uuid is not None and marks.store_uuid == uuid
    index_seen = marks.position[2] - 1 if ours and marks.position else 0
    checkpoint_seen = 0
    start = None
    for header in checkpoint.headers(Path(root)):
        if str(header.store_uuid) != uuid:
            continue
        checkpoint_seen = max(checkpoint_seen, header.lsn)
        if start is None and (header.lsn == 0 or holds(log_dir, header.fingerprint)):
            start = header.position
    span = None
    if ours and marks.position and marks.span_start and marks.span_crc is not None \
            and holds(log_dir, marks.last_record):
        span = (marks.span_start, marks.position, marks.span_crc)
    return Expectation(uuid, ours, max(index_seen, checkpoint_seen), start, span, checkpoint_seen)


def current(root: str | os.PathLike, marks: Marks) -> bool:
    """True when the read models may answer a read on their own: they are this store's,
    they have projected the whole log (the last segment ends at their position), no
    checkpoint has seen further, the segment chain is whole, and every record since the
    newest checkpoint still has the bytes they projected (one CRC)."""
    expectation = expect(root, marks)
    if expectation.span is None or expectation.seen_lsn > marks.position[2] - 1:
        return False
    log_dir = Path(root) / "log"
    try:
        headers = read_chain(log_dir, quick=True)
    except (ChainError, OSError):
        return False
    segment, offset, _ = marks.position
    if max(headers, default=0) != segment:
        return False
    try:
        if os.stat(log_dir / segment_name(segment)).st_size != offset:
            return False
    except OSError:
        return False
    start, end, crc = expectation.span
    return span_crc(log_dir, start[:2], end[:2]) == crc
