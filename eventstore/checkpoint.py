"""Checkpoints: the fold's state at an LSN, written atomically, so that rebuilding the
read models or answering "what was the state at LSN n" replays only what follows.

File ``<root>/checkpoints/<lsn>.ckpt`` (format version 2):

    header  magic ``LAYRCKPT``, version (u32), store uuid (16 bytes), LSN (u64), the log
            position after it (segment, offset, next LSN: 3 x u64), the fingerprint of
            the last record it covers (segment, offset, LSN: 3 x u64, CRC u32), then a
            CRC32C of the header
    body    msgpack: the layer records
    CRC32C of everything before it

The header is checked on its own, so that every open can learn cheaply what the newest
checkpoint has seen (evidence against a log that lost records) and where it stands (the
start of the records an open checks); the body is read only to rebuild or time travel.
Written to a temp file, fsync'd, renamed, directory fsync'd. A checkpoint that fails any
check is skipped, never trusted: bad magic, checksum, version or store uuid, a name that
is not its LSN, a fingerprint the log does not have (another history). The newest
``KEEP`` are kept.
"""

from __future__ import annotations

import os
import struct
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from eventstore import faults
from eventstore.fsutil import fsync_dir, write_atomic
from eventstore.log.format import crc32c

if TYPE_CHECKING:
    from eventstore.log import EventLog, Fingerprint, Position
    from eventstore.state import LayerRecord, State

MAGIC = b"LAYRCKPT"
VERSION = 2
KEEP = 2
HEADER = struct.Struct("<8sI16sQQQQQQQI")  # magic, version, uuid, lsn, position, fingerprint (segment, offset, lsn, crc)
HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = HEADER.size + HEADER_CRC.size


class UntrustedCheckpoint(Exception):
    """A checkpoint that fails a check; the message says which. It is skipped, never used."""


class CheckpointHeader(NamedTuple):
    """What a checkpoint says of itself: whose, at which LSN, where in the log."""

    path: Path
    store_uuid: uuidlib.UUID
    lsn: int
    position: tuple[int, int, int]      # segment, offset, next LSN
    fingerprint: tuple[int, int, int, int]  # segment, offset, LSN, CRC of the last record covered (zeros: none)


class Checkpoint(NamedTuple):
    path: str
    lsn: int
    position: "Position"
    state: "State"


def checkpoint_dir(root: Path) -> Path:
    return Path(root) / "checkpoints"


def write(root: Path, store_uuid: uuidlib.UUID, position: "Position", fingerprint: "Fingerprint | None",
          layers: "list[LayerRecord]") -> Path:
    """Write the state at ``position`` (the LSN before ``position.lsn``) atomically;
    ``fingerprint`` names the last record it covers (None for an empty log)."""
    import msgspec

    directory = checkpoint_dir(root)
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)
    lsn = position.lsn - 1
    head = HEADER.pack(MAGIC, VERSION, store_uuid.bytes, lsn, *position, *(fingerprint or (0, 0, 0, 0)))
    data = head + HEADER_CRC.pack(crc32c(head)) + msgspec.msgpack.encode(layers)
    data += struct.pack("<I", crc32c(data))
    path = directory / f"{lsn:016d}.ckpt"
    _remove_temp_files(directory)
    faults.point("checkpoint.before-write")
    write_atomic(path, data)
    faults.point("checkpoint.after-write")
    _prune(directory)
    return path


def _remove_temp_files(directory: Path) -> None:
    # a writer killed between its fsync and its rename left one; checkpoints are
    # written under the log's writer lock, so no other writer is using it
    for stale in directory.glob(".*.tmp-*"):
        os.unlink(stale)


def _prune(directory: Path) -> None:
    paths = sorted(directory.glob("*.ckpt"))
    for old in paths[:-KEEP]:
        old.unlink()
    if len(paths) > KEEP:
        fsync_dir(directory)


def read_header(path: Path, store_uuid: uuidlib.UUID | None = None) -> CheckpointHeader:
    """The header of the checkpoint in ``path`` (its body is not read);
    UntrustedCheckpoint saying why it cannot be trusted."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_SIZE)
    except OSError as exc:
        raise UntrustedCheckpoint(f"unreadable: {exc.strerror}") from None
    if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
        raise UntrustedCheckpoint("not a checkpoint (or from an older version)")
    (stored,) = HEADER_CRC.unpack_from(data, HEADER.size)
    if crc32c(data[:HEADER.size]) != stored:
        raise UntrustedCheckpoint("header checksum mismatch")
    _, version, raw_uuid, lsn, *rest = HEADER.unpack_from(data)
    if version != VERSION:
        raise UntrustedCheckpoint(f"unknown version {version}")
    header = CheckpointHeader(path, uuidlib.UUID(bytes=raw_uuid), lsn, tuple(rest[:3]), tuple(rest[3:]))
    if store_uuid is not None and header.store_uuid != store_uuid:
        raise UntrustedCheckpoint("from another store")
    if path.stem.isdigit() and int(path.stem) != lsn:
        raise UntrustedCheckpoint(f"holds the state at LSN {lsn}, not the LSN its name says")
    if header.position[2] != lsn + 1:
        raise UntrustedCheckpoint(f"position {header.position} does not follow LSN {lsn}")
    return header


def headers(root: Path, store_uuid: uuidlib.UUID | None = None,
            skipped: list[str] | None = None) -> list[CheckpointHeader]:
    """The valid checkpoint headers, newest first (damaged ones named in ``skipped``)."""
    directory = checkpoint_dir(root)
    try:
        names = sorted((n for n in os.listdir(directory) if n.endswith(".ckpt")), reverse=True)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            found.append(read_header(directory / name, store_uuid))
        except UntrustedCheckpoint as exc:
            if skipped is not None:
                skipped.append(f"{name}: {exc}")
    return found


def read(path: Path, store_uuid: uuidlib.UUID) -> Checkpoint:
    """The checkpoint in ``path``, body included; UntrustedCheckpoint saying why not."""
    import msgspec

    from eventstore.log import Position
    from eventstore.state import LayerRecord, State

    header = read_header(path, store_uuid)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UntrustedCheckpoint(f"unreadable: {exc.strerror}") from None
    (stored,) = struct.unpack_from("<I", data, len(data) - 4)
    if len(data) < HEADER_SIZE + 4 or crc32c(data[:-4]) != stored:
        raise UntrustedCheckpoint("checksum mismatch")
    try:
        layers = msgspec.msgpack.decode(data[HEADER_SIZE:-4], type=list[LayerRecord])
    except msgspec.DecodeError as exc:
        raise UntrustedCheckpoint(f"undecodable: {exc}") from None
    state = State()
    for rec in layers:
        state.put(rec)
    state.lsn = header.lsn
    return Checkpoint(str(path), header.lsn, Position(*header.position), state)


def follows(header: CheckpointHeader, log: "EventLog") -> bool:
    """True when ``header`` was taken from this very log: the record it names as its
    last is there, with its LSN and CRC (an empty log's checkpoint names none)."""
    from eventstore.log import Fingerprint

    if header.lsn == 0:
        return True
    return header.lsn <= log.last_lsn and log.matches(Fingerprint(*header.fingerprint))


def newest(root: Path, log: "EventLog", at_most_lsn: int | None = None,
           skipped: list[str] | None = None) -> Checkpoint | None:
    """The newest valid checkpoint of ``log`` (at or before ``at_most_lsn``); damaged
    ones, ones from another history and ones past the log's end are skipped (and named
    in ``skipped``)."""
    for header in headers(root, log.store_uuid, skipped):
        if at_most_lsn is not None and header.lsn > at_most_lsn:
            continue
        try:
            if not follows(header, log):
                raise UntrustedCheckpoint("taken from another history of this store (or past the log's end)")
            return read(header.path, log.store_uuid)
        except UntrustedCheckpoint as exc:
            if skipped is not None:
                skipped.append(f"{header.path.name}: {exc}")
    return None


def load_state(root: Path, log: "EventLog", skipped: list[str] | None = None,
               at_most_lsn: int | None = None) -> "State":
    """The fold's state at the log's tail (or at ``at_most_lsn``): the newest valid
    checkpoint, then only the events after it."""
    from eventstore.state import State, apply

    ckpt = newest(root, log, at_most_lsn, skipped)
    state = ckpt.state if ckpt else State()
    start = ckpt.position if ckpt else None
    for record in log.records(start):
        for i, event in enumerate(record.events):
            lsn = record.lsn + i
            if at_most_lsn is not None and lsn > at_most_lsn:
                return state
            apply(state, lsn, event)
            state.lsn = lsn
    return state
