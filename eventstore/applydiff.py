"""applydiff: apply a tar diff to an existing writable layer, crash-safe like create.

    diff-apply-started      the intent: the layer is busy, owned by this process
    copy the layer's data to a staged copy; extract the tar into it; sync it
    write <root>/applying/<id>.json    the result, and the staged tree's inode
    swap the staged tree and the layer's data (renameat2 RENAME_EXCHANGE: atomic)
    tar-split in place; the old data (now in the staged place) removed
    diff-applied            the digests; the layer is usable again

The swap is the one moment the layer's data changes, and it is atomic, so a crash
anywhere leaves either the old data or the new, never a mix. Recovery (a dead owner)
tells which by the staged tree's inode recorded before the swap: the layer's data dir
has it → the swap happened, roll forward (``diff-applied`` from the recorded result);
else → roll back (staged copy removed, ``diff-apply-abandoned``). A refused tar rolls
back the same way, at once. Nothing the layer held is ever lost: before the swap it is
untouched, after it the new data is whole and synced.

Where the staging lives: ``driver.staging_path(id)``, on the filesystem of the layer's
data (overlay: inside the layer's directory; vfs: ``<home>/staging/<id>``, a ``cp -a``
copy; btrfs: a writable snapshot there, so the data stays a subvolume), made by
``driver.stage`` and removed by ``driver.unstage``. The tar-split
and the record of the result: ``<root>/applying/<id>.tar-split`` and ``.json``.

What the layer's record says afterwards: a layer that had no content of its own (a
fresh ``create --writable``) is now exactly the tar, so it takes the tar's digests and
tar-split, and ``diff`` gives the tar back byte for byte (as containers-storage does).
A layer that had content keeps no digest: its diff is what changed, measured
(``changes``, ``diffsize``).
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from eventstore import errors, faults
from eventstore import events as ev
from eventstore.fsutil import fsync_dir, sync_tree, write_atomic
from eventstore.idmap import Owners

APPLYING_DIR = "applying"
RENAME_EXCHANGE = 2
AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)


def applying_files(root: Path, layer_id: str) -> tuple[Path, Path]:
    """The staged tar-split and the result record of an apply to ``layer_id``."""
    base = Path(root) / APPLYING_DIR
    return base / f"{layer_id}.tar-split", base / f"{layer_id}.json"


def apply(store, ref: str, content: BinaryIO, *, max_size: int | None = None,
          progress: Callable[[int], None] | None = None) -> str:
    """Apply the tar ``content`` to the writable layer ``ref``; its id."""
    with store.writing() as w:
        rec = store.usable(ref)
        w.append(ev.DiffApplyStarted(layer=rec.id, owner=store.process))
    faults.point("applydiff.after-intent")
    try:
        discard(store, rec.id)  # what a crash after an earlier apply's record left
        result, fresh = _stage(store, rec, content, max_size, progress)
        _swap(store, rec.id, result, fresh)
    except BaseException as exc:
        _give_up(store, rec.id, exc)
        raise
    faults.point("applydiff.after-swap")
    _finish(store, rec.id, fresh)
    with store.writing() as w:
        w.append(ev.DiffApplied(layer=rec.id, has_tarsplit=fresh, **result))
    _forget(store.root, rec.id)
    return rec.id


def _stage(store, rec, content: BinaryIO, max_size: int | None, progress) -> tuple[dict, bool]:
    """The staged copy with the diff applied and synced; (the import result, whether
    the layer had no content of its own before)."""
    from eventstore.archive import DEFAULT_MAX_SIZE, import_layer

    driver = store.driver
    fresh = not own_content(store, rec)
    staging = driver.stage(rec.id)
    split_path, _ = applying_files(store.root, rec.id)
    split_path.parent.mkdir(parents=True, exist_ok=True)
    imported = import_layer(content, staging, split_path, whiteout_format=driver.whiteout_format,
                            max_size=max_size or DEFAULT_MAX_SIZE, progress=progress,
                            owners=Owners(rec.uid_map, rec.gid_map) or None, onto_content=not fresh)
    if driver.stacks_layers and not fresh:
        _drop_idle_whiteouts(store, rec, staging)
    sync_tree(staging)
    faults.point("applydiff.after-stage")
    result = dict(compressed_digest=imported.compressed_digest, compressed_size=imported.compressed_size,
                  diff_digest=imported.diff_digest, diff_size=imported.diff_size,
                  compression=imported.compression)
    return result, fresh


def _drop_idle_whiteouts(store, rec, staging: Path) -> None:
    """Whiteouts the tar wrote over the layer's own files that hide nothing below:
    removed. Overlay hides a whiteout only in a directory the lower layers have; in one
    of the layer's own it would show as a name that cannot be opened."""
    import stat

    from eventstore.views import layer_view

    whiteouts = []
    for dirpath, _, filenames in os.walk(staging):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                whiteouts.append(os.path.relpath(os.path.join(dirpath, name), staging))
    if not whiteouts:
        return
    if rec.parent is None:
        hidden = set()
    else:
        with layer_view(store.driver, rec.parent) as below:
            hidden = {w for w in whiteouts if os.path.lexists(os.path.join(below, w))}
    for relative in whiteouts:
        if relative not in hidden:
            os.unlink(staging / relative)


def own_content(store, rec) -> bool:
    """True when the layer has content of its own: an overlay layer's dir holds
    anything; a copying driver's layer differs from its parent's."""
    driver = store.driver
    data = driver.diff_path(rec.id)
    if driver.stacks_layers:
        with os.scandir(data) as entries:
            return next(entries, None) is not None
    from eventstore.changeset import tree_changes

    parent = driver.diff_path(rec.parent) if rec.parent else None
    return bool(tree_changes(data, parent))


def _swap(store, layer_id: str, result: dict, fresh: bool) -> None:
    """Record the result and the staged tree's inode, then exchange the trees."""
    driver = store.driver
    staging, data = driver.staging_path(layer_id), driver.diff_path(layer_id)
    st = os.stat(staging)
    _, record = applying_files(store.root, layer_id)
    write_atomic(record, json.dumps({"inode": [st.st_dev, st.st_ino], "fresh": fresh, "result": result}).encode())
    faults.point("applydiff.before-swap")
    if _libc.renameat2(AT_FDCWD, os.fsencode(staging), AT_FDCWD, os.fsencode(data), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise errors.StorageError(f"layer {layer_id}: cannot swap in the applied diff "
                                  f"(renameat2 RENAME_EXCHANGE: {os.strerror(code)})")
    fsync_dir(data.parent)
    if staging.parent != data.parent:
        fsync_dir(staging.parent)


def _finish(store, layer_id: str, fresh: bool) -> None:
    """After the swap (idempotent): the tar-split in place (or none), the old data gone."""
    split_path, _ = applying_files(store.root, layer_id)
    target = store.tarsplit_path(layer_id)
    if fresh and split_path.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(split_path, target)
        fsync_dir(target.parent)
    elif not fresh:
        for path in (target, split_path):
            path.unlink(missing_ok=True)
    store.driver.unstage(layer_id)


def _give_up(store, layer_id: str, exc: BaseException) -> None:
    """The apply failed before the swap: remove the staged copy, record it. Should that
    fail too, the layer stays busy with this process as owner, and recovery rolls it
    back once this process is gone."""
    try:
        discard(store, layer_id)
        with store.writing() as w:
            w.append(ev.DiffApplyAbandoned(layer=layer_id, reason=str(exc) or type(exc).__name__))
    except Exception:
        pass


def discard(store, layer_id: str) -> None:
    """Remove an apply's staged copy, tar-split and record; missing is fine."""
    store.driver.unstage(layer_id)
    for path in applying_files(store.root, layer_id):
        path.unlink(missing_ok=True)


def _forget(root: Path, layer_id: str) -> None:
    _, record = applying_files(root, layer_id)
    record.unlink(missing_ok=True)


# --- recovery -------------------------------------------------------------------------

def swapped(store, layer_id: str) -> dict | None:
    """The recorded result when the interrupted apply's swap happened, else None."""
    _, record = applying_files(store.root, layer_id)
    try:
        recorded = json.loads(record.read_bytes())
        inode = [int(n) for n in recorded["inode"]]
        result, fresh = dict(recorded["result"]), bool(recorded["fresh"])
    except FileNotFoundError:
        return None  # it is made durable before the swap: no record, no swap
    except (ValueError, KeyError, TypeError) as exc:
        # written atomically, so damaged by something else: which data is the layer's
        # cannot be told, and neither copy may go; recovery quarantines the layer
        raise errors.StorageError(f"layer {layer_id}: the record of its interrupted diff apply {record} is "
                                  f"damaged ({exc}); both the layer's data and the staged copy are kept") from None
    st = os.stat(store.driver.diff_path(layer_id))
    return {"result": result, "fresh": fresh} if [st.st_dev, st.st_ino] == inode else None


def recover(store, rec) -> tuple[str, ev.Event]:
    """Finish an apply whose process died: roll forward after the swap, back before.
    The action taken and the event to record (the caller appends it, then calls
    ``forget``)."""
    recorded = swapped(store, rec.id)
    if recorded is not None:
        _finish(store, rec.id, recorded["fresh"])
        return (f"finished the diff applied to {rec.id} (its process died after the swap)",
                ev.DiffApplied(layer=rec.id, has_tarsplit=recorded["fresh"], **recorded["result"]))
    discard(store, rec.id)
    return (f"rolled back the diff being applied to {rec.id} (its process died before the swap)",
            ev.DiffApplyAbandoned(layer=rec.id, reason=f"pid {rec.applying.pid} died before the swap"))


def forget(store, layer_id: str) -> None:
    """Remove what is left of a finished apply once its outcome is recorded."""
    _forget(store.root, layer_id)


def sweep(store, applying_ids: set[str]) -> list[str]:
    """Records of applies that are over (their outcome is in the log): removed."""
    done = []
    try:
        names = os.listdir(Path(store.root) / APPLYING_DIR)
    except FileNotFoundError:
        return done
    for name in sorted(names):
        layer_id = name.lstrip(".").split(".", 1)[0]  # also an atomic write's temp file
        if layer_id in applying_ids:
            continue
        (Path(store.root) / APPLYING_DIR / name).unlink(missing_ok=True)
        done.append(f"removed {APPLYING_DIR}/{name} (its apply is over)")
    return done
