"""Checkpoints: the fold's state at an LSN, written atomically, so that rebuilding the
read models or answering "what was the state at LSN n" replays only what follows.

File ``<root>/checkpoints/<lsn>.ckpt``: magic ``LAYRCKPT``, format version (u32), store
uuid (16 bytes), then a msgpack body (LSN, log position, layer records), then a CRC32C
of everything before it. Written to a temp file, fsync'd, renamed, directory fsync'd.
A checkpoint that fails any check is skipped, never trusted: bad magic, checksum,
version or store uuid, a body whose LSN is not the one its name claims, or an LSN past
the end of the log (a log restored from a backup). The newest ``KEEP`` are kept.
"""

from __future__ import annotations

import os
import struct
import uuid as uuidlib
from pathlib import Path
from typing import NamedTuple

import msgspec

from eventstore import faults
from eventstore.fsutil import fsync_dir, write_atomic
from eventstore.private import make_dir
from eventstore.log import Position
from eventstore.log.format import crc32c
from eventstore.state import LayerRecord, State

MAGIC = b"LAYRCKPT"
VERSION = 1
KEEP = 2

faults.declare("checkpoint.before-write", "a checkpoint is about to be written")
faults.declare("checkpoint.after-write", "a checkpoint is in place, older ones not yet pruned")


class CheckpointBody(msgspec.Struct):
    lsn: int
    position: tuple[int, int, int]
    layers: list[LayerRecord]


class Checkpoint(NamedTuple):
    path: str
    lsn: int
    position: Position
    state: State


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CheckpointBody)


def checkpoint_dir(root: Path) -> Path:
    return Path(root) / "checkpoints"


def write(root: Path, store_uuid: uuidlib.UUID, position: Position, layers: list[LayerRecord]) -> Path:
    """Write the state at ``position`` (the LSN before ``position.lsn``) atomically."""
    directory = checkpoint_dir(root)
    if not directory.is_dir():
        make_dir(directory, parents=True)
        fsync_dir(directory.parent)
    lsn = position.lsn - 1
    body = _encoder.encode(CheckpointBody(lsn, tuple(position), layers))
    data = MAGIC + struct.pack("<I", VERSION) + store_uuid.bytes + body
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


def read(path: Path, store_uuid: uuidlib.UUID) -> Checkpoint | str:
    """The checkpoint in ``path``, or a string saying why it cannot be trusted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if len(data) < 32 or not data.startswith(MAGIC):
        return "not a checkpoint"
    (stored,) = struct.unpack_from("<I", data, len(data) - 4)
    if crc32c(data[:-4]) != stored:
        return "checksum mismatch"
    (version,) = struct.unpack_from("<I", data, 8)
    if version != VERSION:
        return f"unknown version {version}"
    if uuidlib.UUID(bytes=data[12:28]) != store_uuid:
        return "from another store"
    try:
        body = _decoder.decode(data[28:-4])
    except msgspec.DecodeError as exc:
        return f"undecodable: {exc}"
    if path.stem.isdigit() and int(path.stem) != body.lsn:
        return f"holds the state at LSN {body.lsn}, not the LSN its name says"
    if body.position[2] != body.lsn + 1:
        return f"position {body.position} does not follow LSN {body.lsn}"
    state = State()
    for rec in body.layers:
        state.put(rec)
    state.lsn = body.lsn
    return Checkpoint(str(path), body.lsn, Position(*body.position), state)


def newest(root: Path, store_uuid: uuidlib.UUID, at_most_lsn: int | None = None,
           skipped: list[str] | None = None, log_end: int | None = None) -> Checkpoint | None:
    """The newest valid checkpoint (at or before ``at_most_lsn``); damaged ones, and
    ones past ``log_end`` (the log's last LSN), are skipped (and named in ``skipped``)."""
    directory = checkpoint_dir(root)
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob("*.ckpt"), reverse=True):
        try:
            lsn = int(path.stem)
        except ValueError:
            continue
        if at_most_lsn is not None and lsn > at_most_lsn:
            continue
        result = read(path, store_uuid)
        if log_end is not None and not isinstance(result, str) and result.lsn > log_end:
            result = f"beyond the end of the log (LSN {log_end})"
        if isinstance(result, str):
            if skipped is not None:
                skipped.append(f"{path.name}: {result}")
            continue
        return result
    return None


def load_state(root: Path, log, skipped: list[str] | None = None, at_most_lsn: int | None = None) -> State:
    """The fold's state at the log's tail (or at ``at_most_lsn``): the newest valid
    checkpoint, then only the events after it."""
    from eventstore.state import apply

    ckpt = newest(root, log.store_uuid, at_most_lsn, skipped, log_end=log.last_lsn)
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
