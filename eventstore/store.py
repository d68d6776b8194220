"""The layer store: every operation of DESIGN §1, on the log.

Each operation decides under the log's writer lock (so the state its rules see is the
state its events follow), appends its events (durable before it returns), then projects
them into the read models. Driver work that can take long (creating, filling, removing
a layer) happens *between* an intent event and a completion event, outside the lock:
a crash anywhere leaves an incomplete layer with a dead owner, which recovery
(``eventstore.recovery``) finishes or undoes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import BinaryIO

from eventstore import errors, faults, process
from eventstore import events as ev
from eventstore.drivers import Driver, default_driver, open_driver
from eventstore.events import Holder, stamp
from eventstore.fsutil import fsync_dir, write_atomic
from eventstore.index import Index
from eventstore.log import DEFAULT_SEGMENT_SIZE, EventLog, LogRecord, Position
from eventstore.log.format import HEADER_SIZE, decode_header
from eventstore.log.reader import read_header
from eventstore.log.segment import list_segments
from eventstore.names import check_digest, check_id, check_name
from eventstore.state import LayerRecord, apply, check

for _name, _doc in [
    ("store.create.after-intent", "the intent event is durable, no driver work yet"),
    ("store.create.after-driver", "the driver created the layer, no content yet"),
    ("store.create.after-import", "the tar is extracted and its tar-split synced, the layer data not yet"),
    ("store.create.after-content", "content is extracted and synced, not yet completed"),
    ("store.delete.after-mark", "the delete is recorded as begun, data still there"),
    ("store.delete.after-remove", "the driver removed the data, delete not yet recorded"),
    ("store.mount.after-driver", "the kernel has the mount, the count is not yet recorded"),
    ("store.umount.after-driver", "the kernel dropped the mount, the count is not yet recorded"),
]:
    faults.declare(_name, _doc)


CHECKPOINT_INTERVAL = 10_000  # events between automatic checkpoints


def _newest_checkpoint_lsn(root: Path) -> int:
    # eventstore.checkpoint.last_lsn, without importing that module on every CLI call
    try:
        names = os.listdir(root / "checkpoints")
    except FileNotFoundError:
        return 0
    return max((int(n[:-5]) for n in names if n.endswith(".ckpt") and n[:-5].isdigit()), default=0)


def _open_index(path: Path) -> Index:
    """The read models at ``path``; a file SQLite cannot read (damaged, or not a
    database at all) is derived data: dropped, to be rebuilt from the log."""
    try:
        return Index(path)
    except sqlite3.OperationalError:
        raise  # busy, locked, out of space: nothing wrong with the file
    except sqlite3.DatabaseError:
        Index.remove(path)
        return Index(path)


def _resume_point(root: Path, index: Index) -> Position | None:
    """Where the log may start checking: the index's position, but only when the index
    was projected from this very log. Another store's index.db (copied over ours) names
    an offset that can fall inside one of our records, which the log would take for
    damage: refused as corruption, or cut off as a torn tail, acknowledged events and all."""
    position = index.position()
    if position is None:
        return None
    segments = list_segments(root / "log")
    if not segments:
        return None
    header = decode_header(read_header(segments[0][1]))
    if isinstance(header, str) or str(header.store_uuid) != index.store_uuid:
        return None
    return position


class LayerStore:
    """An open store root. ``LayerStore.open(root)`` is the seed's ``layer_store_init``;
    ``close`` is ``layer_store_exit``."""

    def __init__(self, root: Path, log: EventLog, index: Index, driver_name: str, owner: Holder,
                 check_driver: bool = True):
        self.root = root
        self.log = log
        self.index = index
        self.driver_name = driver_name
        self._driver: Driver | None = None
        self._check_driver = check_driver
        self.owner = owner  # who holds taken through this handle belong to
        self.process = process.this_process()  # who finishes this handle's creates and deletes
        self._foreign: list[LogRecord] = []
        self._index_behind = False  # a projection failed: catch up from the log before deciding
        self.checkpoint_interval = CHECKPOINT_INTERVAL
        self._checkpoint_lsn: int | None = None  # read on the first append

    @property
    def driver(self) -> Driver:
        """The storage driver, opened on first use (most reads never need it)."""
        if self._driver is None:
            self._driver = open_driver(self.driver_name, self.root, check=self._check_driver)
        return self._driver

    # --- opening and closing -----------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike, driver: str | None = None, *, readonly: bool = False,
             recover: bool = True, owner: Holder | None = None,
             segment_size: int = DEFAULT_SEGMENT_SIZE) -> "LayerStore":
        """Open (creating if needed) the store at ``root``: take the log, bring the read
        models up to date, and (unless ``readonly`` or ``recover=False``) recover."""
        root = Path(root)
        if not readonly:
            root.mkdir(parents=True, exist_ok=True)
        elif not (root / "log").is_dir():
            raise errors.StorageError(f"no layer store at {root}")
        driver_name, new_store = cls._driver_name(root, driver, readonly)
        index = _open_index(root / "index.db")
        store = None
        try:
            log = EventLog.open(root, writer=not readonly, create=not readonly, segment_size=segment_size,
                                resume=_resume_point(root, index))
            store = cls(root, log, index, driver_name, owner or process.this_process(), check_driver=new_store)
            if new_store and not readonly:
                store.driver  # a new store fails now, not at its first mount, if the driver cannot run
                write_atomic(root / "driver", driver_name.encode() + b"\n")
            log.listener = store._foreign.append
            store._sync_index()
        except BaseException:
            index.close()
            if store is not None:
                store.log.close()
            raise
        if recover and not readonly:
            from eventstore.recovery import recover_store

            recover_store(store)
        return store

    @staticmethod
    def _driver_name(root: Path, requested: str | None, readonly: bool) -> tuple[str, bool]:
        # A store keeps the driver it was created with; asking for another is an error
        # rather than a silent second copy of every layer.
        marker = root / "driver"
        try:
            recorded = marker.read_text().strip()
        except FileNotFoundError:
            recorded = None
        if recorded and requested and requested != recorded:
            raise errors.InvalidArgument(f"store {root} uses driver {recorded}, not {requested}")
        if recorded:
            return recorded, False
        return requested or default_driver(root), True

    def _sync_index(self) -> None:
        """Bring the read models up to the log's tail (rebuilding them if they are
        ahead of it or from another store)."""
        position = self.index.position()
        uuid = self.index.store_uuid
        # Others may have appended (and projected) since we read the log: read it to its
        # end *after* taking the position, so that an index ahead of the log really is.
        # (Rebuilding unlinks index.db under every other process using it.)
        self.log.catch_up()
        if (uuid and uuid != str(self.log.store_uuid)) or (position and position.lsn - 1 > self.log.last_lsn):
            self.rebuild_index()
        else:
            self.index.catch_up(self.log)
        self._foreign.clear()  # projected just now

    def rebuild_index(self) -> None:
        """Drop the read models and project the whole log again.

        In place, in one transaction, rather than by deleting index.db: another process
        with the file open would go on reading and writing an unlinked copy."""
        conn = self.index.conn

        def reset() -> None:
            for table in ("layers", "names", "history"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM meta WHERE key IN ('position', 'store_uuid', 'swept_boot')")

        # under the writer lock: no other process decides against half-rebuilt tables
        with self.log.locked() if self.log.writer else nullcontext():
            self.index._transaction(reset)
            self.index.catch_up(self.log)

    def close(self) -> None:
        """Release the log and the database. Nothing is half-done: every operation
        completed its events before it returned."""
        self.log.close()
        self.index.close()

    def __enter__(self) -> "LayerStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the write path ------------------------------------------------------------------

    @contextmanager
    def _deciding(self) -> Iterator[None]:
        """Hold the writer lock with the read models caught up with the log."""
        with self.log.locked():
            self._apply_foreign()
            yield

    def _apply_foreign(self) -> None:
        if self._index_behind:
            # a projection failed after its events were durable: catch up from the log
            # itself. Projecting the next record instead would move the read models'
            # position past the failed one, and they would never see its events.
            self._foreign.clear()
            self.index.catch_up(self.log)
            self._index_behind = False
        if self._foreign:
            records, self._foreign[:] = list(self._foreign), []
            self._project(records)

    def _project(self, records: list[LogRecord]) -> None:
        try:
            self.index.apply(records, str(self.log.store_uuid))
        except BaseException:
            self._index_behind = True
            raise

    def _append(self, *events: ev.Event) -> int:
        """Check, append durably, project. Must be called while deciding."""
        state = self.index.state()
        for event in events:  # each checked on the state the ones before it leave
            check(state, event)
            apply(state, 0, event)
        stamped = [stamp(e) for e in events]
        lsns = self.log.append_many(stamped)
        self._project([LogRecord(lsns[0], stamped, self.log.tail)])
        if self._checkpoint_lsn is None:
            self._checkpoint_lsn = _newest_checkpoint_lsn(self.root)
        if lsns[-1] - self._checkpoint_lsn >= self.checkpoint_interval:
            self._write_checkpoint()
        return lsns[-1]

    def _write_checkpoint(self) -> Path:
        from eventstore import checkpoint

        # an empty store has no projected position yet: its checkpoint is the empty state at LSN 0
        position = self.index.position() or self.log.tail
        path = checkpoint.write(self.root, self.log.store_uuid, position, self.index.layers())
        self._checkpoint_lsn = position.lsn - 1
        return path

    def checkpoint(self) -> Path:
        """Write a checkpoint of the state now (also taken every ``checkpoint_interval`` events)."""
        with self._deciding():
            return self._write_checkpoint()

    # --- lookups ---------------------------------------------------------------------------

    def lookup(self, ref: str) -> LayerRecord:
        """The layer with id ``ref``, else named ``ref``, else whose id starts with ``ref``."""
        return self.index.lookup(ref)

    def exists(self, ref: str) -> bool:
        return self.index.exists(ref)

    def listing(self) -> list[dict]:
        """id, parent, names, incomplete of every layer (cheap; for listings)."""
        return self.index.listing()

    def layers(self) -> list[LayerRecord]:
        """Every layer, in creation order (incomplete ones included, flagged)."""
        return self.index.layers()

    def by_digest(self, digest: str, compressed: bool = False) -> list[str]:
        return self.index.by_digest(digest, compressed)

    def by_compressed_digest(self, digest: str) -> list[str]:
        return self.index.by_digest(digest, compressed=True)

    def by_diff_digest(self, digest: str) -> list[str]:
        return self.index.by_digest(digest, compressed=False)

    def hold_refs(self, ref: str) -> int:
        return self.lookup(ref).hold_refs

    def _complete(self, ref: str) -> LayerRecord:
        rec = self.lookup(ref)
        if rec.quarantined:
            raise errors.LayerQuarantined(f"layer {rec.id}: quarantined ({rec.quarantined})")
        if rec.incomplete:
            raise errors.LayerIncomplete(f"layer {rec.id}: incomplete (being created or deleted)")
        return rec

    def fs_info(self, ref: str):
        return self.driver.fs_info(self._complete(ref).id)

    def metadata(self, ref: str) -> dict[str, str]:
        return self.driver.metadata(self._complete(ref).id)

    # --- create ------------------------------------------------------------------------------

    def create(self, layer_id: str | None = None, *, parent: str | None = None, names: list[str] = (),
               writable: bool = False, content: BinaryIO | None = None,
               compressed_digest: str | None = None, diff_digest: str | None = None,
               mount_label: str = "", max_size: int | None = None,
               progress: Callable[[int], None] | None = None, hold: Holder | None = None,
               snapshot: ev.Snapshot | None = None) -> str:
        """Create a layer (optionally filled from a tar stream); its id.

        An id that exists already with the same parent gets a hold and is returned (the
        seed's rule); with another parent it is ``LayerExists``. The hold is the
        handle owner's, or ``hold``'s; with ``hold``, a new layer is held too, in the
        same event batch that completes it (no delete can come between). ``snapshot``
        records what containerd knows of a layer it makes (``eventstore.containerd``).
        """
        if layer_id is not None:
            check_id(layer_id)
        names = [check_name(n) for n in names]
        if compressed_digest:
            check_digest(compressed_digest)
        if diff_digest:
            check_digest(diff_digest)
        with self._deciding():
            parent_id = self._complete(parent).id if parent else None
            if layer_id is not None:
                existing = self.index.layer(layer_id)
                if existing is not None:
                    return self._create_existing(existing, parent_id, hold or self.owner)
            else:
                layer_id = self._new_id()
            self._append(ev.LayerCreated(layer=layer_id, parent=parent_id, names=names, writable=writable,
                                         driver=self.driver_name, owner=self.process, mount_label=mount_label,
                                         snapshot=snapshot))
        faults.point("store.create.after-intent")
        try:
            result = self._fill(layer_id, parent_id, writable, content, compressed_digest, diff_digest,
                                max_size, progress)
        except BaseException as exc:
            self._undo_create(layer_id, exc)
            raise
        with self._deciding():
            held = [ev.HoldAdded(layer=layer_id, holder=hold)] if hold is not None else []
            self._append(ev.LayerCompleted(layer=layer_id, **result), *held)
        return layer_id

    def _create_existing(self, existing: LayerRecord, parent_id: str | None, holder: Holder) -> str:
        if existing.parent != parent_id:
            raise errors.LayerExists(f"layer {existing.id}: exists with parent {existing.parent or 'none'}, "
                                     f"not {parent_id or 'none'}")
        self._append(ev.HoldAdded(layer=existing.id, holder=holder))
        return existing.id

    def _new_id(self) -> str:
        while True:
            layer_id = os.urandom(32).hex()
            if self.index.layer(layer_id) is None:
                return layer_id

    def tarsplit_path(self, layer_id: str) -> Path:
        return self.root / "tarsplit" / f"{layer_id}.tar-split"

    def _fill(self, layer_id: str, parent_id: str | None, writable: bool, content: BinaryIO | None,
              compressed_digest: str | None, diff_digest: str | None, max_size: int | None,
              progress: Callable[[int], None] | None) -> dict:
        self.driver.create(layer_id, parent_id, writable)
        faults.point("store.create.after-driver")
        result: dict = {}
        if content is not None:
            from eventstore.archive import DEFAULT_MAX_SIZE, import_layer

            tarsplit = self.tarsplit_path(layer_id)
            if not tarsplit.parent.is_dir():
                tarsplit.parent.mkdir(parents=True, exist_ok=True)
                fsync_dir(self.root)
            imported = import_layer(content, self.driver.diff_path(layer_id), tarsplit,
                                    whiteout_format=self.driver.whiteout_format,
                                    max_size=max_size or DEFAULT_MAX_SIZE, progress=progress)
            faults.point("store.create.after-import")
            for given, got, what in [(diff_digest, imported.diff_digest, "diff"),
                                     (compressed_digest, imported.compressed_digest, "compressed")]:
                if given and given != got:
                    raise errors.DigestMismatch(f"layer {layer_id}: {what} digest mismatch: "
                                                f"expected {given}, content has {got}")
            fsync_dir(tarsplit.parent)
            result = dict(compressed_digest=imported.compressed_digest, compressed_size=imported.compressed_size,
                          diff_digest=imported.diff_digest, diff_size=imported.diff_size,
                          compression=imported.compression, has_tarsplit=True)
        self.driver.sync(layer_id)
        faults.point("store.create.after-content")
        return result

    def _undo_create(self, layer_id: str, exc: BaseException) -> None:
        """Remove a half-made layer; if that fails too, recovery finishes it later."""
        try:
            self._remove_data(layer_id)
            with self._deciding():
                if isinstance(exc, (errors.ContentRejected, errors.DigestMismatch)):
                    self._append(ev.ContentRejected(layer=layer_id, reason=str(exc)))
                self._append(ev.LayerDeleted(layer=layer_id))
        except Exception:
            pass  # the layer stays incomplete, owned by us; recovery removes it after we exit

    def _remove_data(self, layer_id: str) -> None:
        self.driver.remove(layer_id)
        try:
            os.unlink(self.tarsplit_path(layer_id))
        except FileNotFoundError:
            pass

    # --- names --------------------------------------------------------------------------------

    def set_names(self, ref: str, names: list[str]) -> None:
        names = [check_name(n) for n in names]
        with self._deciding():
            self._append(ev.NamesChanged(layer=self.lookup(ref).id, names=names))

    # --- holds ----------------------------------------------------------------------------------

    def _holder(self, lease: str | None, holder: Holder | None) -> Holder:
        if lease is not None:  # an empty lease is invalid, not "no lease"
            return Holder(lease=check_name(lease, "lease"))
        return holder or self.owner

    def hold(self, ref: str, *, lease: str | None = None, holder: Holder | None = None) -> int:
        """Take a hold (``layer_inc_hold_refs``); the new hold count."""
        chosen = self._holder(lease, holder)  # a hostile lease is a usage error, found or not
        with self._deciding():
            rec = self.lookup(ref)
            self._append(ev.HoldAdded(layer=rec.id, holder=chosen))
            return self.index.layer(rec.id).hold_refs  # type: ignore[union-attr]

    def release(self, ref: str, *, lease: str | None = None, holder: Holder | None = None) -> int:
        """Release a hold (``layer_dec_hold_refs``); the new count. Without a lease or
        holder: this process's own hold, else the most recent process hold."""
        named = self._holder(lease, holder) if lease is not None or holder else None
        with self._deciding():
            rec = self.lookup(ref)
            if named is not None:
                chosen = named
            else:
                chosen = self.owner if self.owner in rec.holds else next(
                    (h for h in reversed(rec.holds) if not h.lease), None)
                if chosen is None:
                    what = "held only by leases (name one)" if rec.holds else "not held"
                    raise errors.NotHeld(f"layer {rec.id}: {what}; hold refs {rec.hold_refs}")
            self._append(ev.HoldReleased(layer=rec.id, holder=chosen))
            return self.index.layer(rec.id).hold_refs  # type: ignore[union-attr]

    # --- delete ---------------------------------------------------------------------------------

    def delete(self, ref: str, *, force: bool = False, lease: str | None = None) -> None:
        """Delete a layer (``layer_store_delete``): refused while held, mounted (unless
        forced: then it is unmounted first) or the parent of another layer. ``lease``:
        release that lease's hold in the record that begins the delete (both or neither)."""
        with self._deciding():
            rec = self.lookup(ref)
            if rec.incomplete and not rec.deleting and rec.owner and process.is_alive(rec.owner) \
                    and rec.owner != self.process:
                raise errors.LayerIncomplete(f"layer {rec.id}: still being created by pid {rec.owner.pid}")
            if rec.mount_count and force:
                if not rec.deleting:
                    # the other rules (held, parent) first, on the state the unmount would
                    # leave: a refused delete must not have unmounted anything
                    after_unmount = self.index.state()
                    apply(after_unmount, 0, ev.LayerUnmounted(layer=rec.id, force=True))
                    check(after_unmount, ev.LayerMarkedIncomplete(layer=rec.id))
                self.driver.unmount(rec.id)
                self._append(ev.LayerUnmounted(layer=rec.id, force=True))
            if not rec.deleting:
                leased = Holder(lease=lease) if lease is not None else None
                released = [ev.HoldReleased(layer=rec.id, holder=leased)] if leased in rec.holds else []
                self._append(*released, ev.LayerMarkedIncomplete(layer=rec.id, reason="delete", owner=self.process))
        faults.point("store.delete.after-mark")
        self._remove_data(rec.id)
        faults.point("store.delete.after-remove")
        with self._deciding():
            if self.index.layer(rec.id) is not None:
                self._append(ev.LayerDeleted(layer=rec.id))

    # --- containerd snapshots (eventstore/containerd) --------------------------------------------

    def commit_snapshot(self, ref: str, *, key: str, names: list[str], labels: dict[str, str],
                        size: int = -1, inodes: int = -1) -> None:
        """Freeze an active snapshot's layer read-only under ``key`` and ``names``, its
        labels replaced; its data is synced first, so a committed layer survives a power loss."""
        names = [check_name(n) for n in names]
        layer_id = self._complete(ref).id
        self.driver.sync(layer_id)
        with self._deciding():
            self._append(ev.SnapshotCommitted(layer=layer_id, key=key, names=names, labels=labels,
                                              size=size, inodes=inodes))

    def set_snapshot_labels(self, ref: str, labels: dict[str, str]) -> None:
        """Replace a snapshot layer's labels."""
        with self._deciding():
            self._append(ev.SnapshotLabelsChanged(layer=self.lookup(ref).id, labels=labels))

    # --- mounts -----------------------------------------------------------------------------------

    def mount(self, ref: str) -> str:
        """Mount (``layer_store_mount``): the first mount mounts for real, later ones
        count; the path either way."""
        with self._deciding():
            rec = self._complete(ref)
            boot = process.boot_id()
            if rec.mount_count and (rec.mount_boot != boot or not self.driver.is_mounted(rec.id)):
                reason = "mounted in an earlier boot" if rec.mount_boot != boot else "not in the kernel's mount table"
                self._append(ev.MountsReconciled(layer=rec.id, count=0, reason=reason))
                rec = self.index.layer(rec.id)  # type: ignore[assignment]
            if rec.mount_count == 0:
                path = str(self.driver.mount(rec.id, rec.mount_label))
                faults.point("store.mount.after-driver")
            else:
                path = rec.mount_point
            self._append(ev.LayerMounted(layer=rec.id, mount_point=path, boot=boot))
            return path

    def umount(self, ref: str, *, force: bool = False) -> int:
        """Unmount (``layer_store_umount``): counts down, unmounting for real at zero
        (or at once with ``force``); the remaining count."""
        with self._deciding():
            rec = self.lookup(ref)
            if rec.mount_count == 0:
                raise errors.NotMounted(f"layer {rec.id}: not mounted")
            if force or rec.mount_count == 1:
                self.driver.unmount(rec.id)
                faults.point("store.umount.after-driver")
            self._append(ev.LayerUnmounted(layer=rec.id, force=force))
            return self.index.layer(rec.id).mount_count  # type: ignore[union-attr]

    # --- content out ----------------------------------------------------------------------------

    def diff(self, ref: str) -> Iterator[bytes]:
        """The layer's changes as an uncompressed tar: byte for byte the tar it was
        created from, or (made otherwise) a tar of its changes against its parent."""
        from eventstore.archive import diff_changes, export_layer

        rec = self._complete(ref)
        if rec.has_tarsplit:
            return export_layer(self.driver.diff_path(rec.id), self.tarsplit_path(rec.id))
        parents = []
        parent = rec.parent
        while parent:
            parents.append(self.driver.diff_path(parent))
            parent_rec = self.index.layer(parent)
            parent = parent_rec.parent if parent_rec else None
        return diff_changes(self.driver.diff_path(rec.id), parents, self.driver.whiteout_format)
