"""Layer data: small named blobs kept with a layer (containers-storage's "big data" of
layers: `set-layer-data`, `get-layer-data`, `list-layer-data`).

Where the bytes live: content-addressed files, ``<root>/layer-data/<layer id>/<sha256>``,
each named by a ``layer-data-set`` event (key, digest, size). Why not in the log: an
item can be megabytes, and every byte in the log is replayed on every rebuild and kept
forever; the log keeps what it must — which item is which blob — and the blob is
checked against its digest on every read.

Crash safety: a blob is written, fsync'd and renamed into place (then its directory
fsync'd) before the event that names it is appended, both under the writer lock, so a
recorded item always has its bytes. A blob no event names (a crash between the two, or
an old value whose removal was interrupted) is moved to lost+found by the sweep, never
deleted. An item's blob is removed only after an event dropped it (overwritten,
removed, or the layer deleted: the whole directory goes with the layer's data).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from eventstore import errors, faults
from eventstore import events as ev
from eventstore.fsutil import fsync_dir, write_atomic

DIRECTORY = "layer-data"
#: an item is small metadata (manifests, signatures, composefs blobs), not a layer
MAX_ITEM_SIZE = 64 << 20
MAX_KEY = 255


def layer_dir(root: Path, layer_id: str) -> Path:
    return Path(root) / DIRECTORY / layer_id


def check_key(key: str) -> str:
    """An item's key: 1 to 255 printable characters (it is never a path)."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY or not key.isprintable():
        raise errors.InvalidArgument(f"invalid layer data key {key!r}: want 1 to {MAX_KEY} printable characters")
    return key


def set_item(store, ref: str, key: str, data: bytes) -> str:
    """Store ``data`` as the layer's item ``key`` (replacing any); its digest."""
    check_key(key)
    if len(data) > MAX_ITEM_SIZE:
        raise errors.InvalidArgument(f"layer data item {key!r}: {len(data)} bytes; at most {MAX_ITEM_SIZE}")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.writing() as w:
        rec = store.usable(ref)
        directory = layer_dir(store.root, rec.id)
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(directory.parent)
        blob = directory / digest[7:]
        if not blob.exists():
            write_atomic(blob, data)
        faults.point("layerdata.after-blob")
        w.append(ev.LayerDataSet(layer=rec.id, key=key, digest=digest, size=len(data)))
        _drop_unreferenced(directory, w.layer(rec.id))
    return digest


def get_item(store, ref: str, key: str) -> bytes:
    """The bytes of the layer's item ``key``, checked against their digest."""
    rec = store.lookup(ref)
    item = rec.data.get(key)
    if item is None:
        raise errors.LayerNotFound(f"layer {rec.id}: no data item {key!r}")
    blob = layer_dir(store.root, rec.id) / item.digest[7:]
    try:
        data = blob.read_bytes()
    except FileNotFoundError:
        raise errors.StorageError(f"layer {rec.id}: data item {key!r} is missing its blob {blob}") from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != item.digest:
        raise errors.StorageError(f"layer {rec.id}: data item {key!r} is damaged (its blob {blob} "
                                  f"no longer has digest {item.digest})")
    return data


def list_items(store, ref: str) -> dict[str, dict]:
    """The layer's items by key, sorted: digest and size of each."""
    rec = store.lookup(ref)
    return {key: {"digest": item.digest, "size": item.size} for key, item in sorted(rec.data.items())}


def remove_item(store, ref: str, key: str) -> None:
    """Remove the layer's item ``key`` (LayerNotFound when it has none)."""
    with store.writing() as w:
        rec = store.usable(ref)
        if key not in rec.data:
            raise errors.LayerNotFound(f"layer {rec.id}: no data item {key!r}")
        w.append(ev.LayerDataRemoved(layer=rec.id, key=key))
        _drop_unreferenced(layer_dir(store.root, rec.id), w.layer(rec.id))


def _drop_unreferenced(directory: Path, rec) -> None:
    """Blobs of the layer that no item names any more (the event just appended says
    so): removed."""
    wanted = {item.digest[7:] for item in rec.data.values()}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name not in wanted and not name.startswith("."):
            (directory / name).unlink(missing_ok=True)


def remove_all(root: Path, layer_id: str) -> None:
    """Every item of a layer being deleted (its delete is recorded first)."""
    try:
        shutil.rmtree(layer_dir(root, layer_id))
    except FileNotFoundError:
        pass


def strays(root: Path, layer) -> list[Path]:
    """What no event accounts for under ``layer-data/``: directories of layers the log
    does not have, and blobs no item names. ``layer(id)``: the layer's record or None.
    (Only the directories present are looked up: most layers have no data.)"""
    base = Path(root) / DIRECTORY
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        rec = layer(entry.name) if entry.is_dir() and not entry.is_symlink() else None
        if rec is None:
            found.append(entry)
            continue
        wanted = {item.digest[7:] for item in rec.data.values()}
        found.extend(blob for blob in sorted(entry.iterdir()) if blob.name not in wanted)
    return found
