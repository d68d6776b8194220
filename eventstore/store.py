"""The layer store: every operation of DESIGN §1, on the log.

Each operation decides under the log's writer lock (so the state its rules see is the
state its events follow), appends its events (durable before it returns), then projects
them into the read models. Driver work that can take long (creating, filling, removing
a layer) happens *between* an intent event and a completion event, outside the lock:
a crash anywhere leaves an incomplete layer with a dead owner, which recovery
(``eventstore.recovery``, run by ``eventstore.opener``) finishes or undoes.

Everything that changes the store goes through one door, ``LayerStore.writing()``: a
``WriteSession`` holds the writer lock with the read models caught up, checks each event
against the rules, appends it durably and projects it. The store's own operations and
recovery both use it; nothing else appends.
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
from eventstore.access import check_access
from eventstore.drivers import Driver, default_driver, driver_class, open_driver
from eventstore.events import Holder, stamp
from eventstore.fsutil import fsync_dir, write_atomic
from eventstore.index import Index, IndexState
from eventstore.inputs import check_create
from eventstore.log import DEFAULT_SEGMENT_SIZE, EventLog, Fingerprint, LogRecord, Position, Span
from eventstore.log.reader import span_crc
from eventstore.names import check_name, check_names
from eventstore.notices import notice
from eventstore.private import make_dir, make_root, secure_store
from eventstore.provenance import Expectation, expect
from eventstore.query import sqlite_problem
from eventstore.operations import LayerOperations
from eventstore.state import LayerRecord, apply, check, require_not_applying, require_usable


CHECKPOINT_INTERVAL = 10_000  # events between automatic checkpoints


def _newest_checkpoint_lsn(root: Path) -> int:
    # eventstore.checkpoint.last_lsn, without importing that module on every CLI call
    try:
        names = os.listdir(root / "checkpoints")
    except FileNotFoundError:
        return 0
    return max((int(n[:-5]) for n in names if n.endswith(".ckpt") and n[:-5].isdigit()), default=0)


def _open_index(path: Path, readonly: bool) -> Index:
    """The read models at ``path``. A writer sets a file SQLite calls damaged aside and
    starts a new one; a reader that cannot open the file (damaged, a read-only medium,
    no permission) gets empty read models in memory, built from the log."""
    try:
        return Index(path, readonly=readonly)
    except sqlite3.DatabaseError as exc:
        problem = sqlite_problem(exc)
        if readonly:
            return Index.in_memory()
        if problem == "damaged":
            Index.set_aside(path, "damaged")
            return Index(path)
        raise errors.StorageError(f"cannot open the read models {path}: {exc}") from None


def _check_writable(root: Path) -> None:
    """One clear line, before anything is tried, when the store cannot be written."""
    if os.statvfs(root).f_flag & os.ST_RDONLY:
        raise errors.StorageError(f"store {root} is on a read-only file system: only reads work")
    for path in (root, root / "log", root / "index.db"):
        if path.exists() and not os.access(path, os.W_OK):
            raise errors.StorageError(f"permission denied: cannot write {path} (only reads work for this user)")


def _open_log(root: Path, readonly: bool, segment_size: int, expectation: Expectation) -> EventLog:
    span = expectation.span
    return EventLog.open(root, writer=not readonly, create=not readonly, segment_size=segment_size,
                         start=Position(*expectation.start) if expectation.start else None,
                         span=Span(Position(*span[0]), Position(*span[1]), span[2]) if span else None,
                         seen_lsn=expectation.seen_lsn)


def _other_history(root: Path, index: Index, expectation: Expectation) -> bool:
    """True when read models that are ahead of the log disagree with its last event:
    they were projected from another history (a clone's), not from this log's lost tail."""
    with EventLog.open(root, writer=False, create=False, seen_lsn=expectation.checkpoint_seen) as log:
        last = log.last_lsn
        if last < 1:
            return False  # nothing to compare with: the log lost records
        event = next(e for lsn, e in log.events(last) if lsn == last)
    try:
        row = index.conn.execute("SELECT time, type, layer FROM history WHERE lsn = ?", (last,)).fetchone()
    except sqlite3.DatabaseError:
        return True
    return row != (event.time, event.type_name, getattr(event, "layer", None))


class LayerStore(LayerOperations):
    """An open store root. ``eventstore.open_store(root)`` (open, then recover) is the
    seed's ``layer_store_init``; ``close`` is ``layer_store_exit``. The operations
    containers-storage has beyond the seed's (names, changes, applydiff, layer data,
    status) come from ``LayerOperations``."""

    def __init__(self, root: Path, log: EventLog, index: Index, driver_name: str, owner: Holder,
                 check_driver: bool = True, driver_options: dict | None = None):
        self.root = root
        self.log = log
        self.index = index
        self.driver_name = driver_name
        self.driver_options = dict(driver_options or {})  # keyword arguments of the driver
        self._driver: Driver | None = None
        self._check_driver = check_driver
        self.owner = owner  # who holds taken through this handle belong to
        self.process = process.this_process()  # who finishes this handle's creates and deletes
        self._foreign: list[LogRecord] = []
        self.appended = 0  # events this handle appended (a failed command that appended none may be run again)
        self._index_behind = False  # a projection failed: catch up from the log before deciding
        self._warned = False  # that a projection failed (said once per handle)
        self.checkpoint_interval = CHECKPOINT_INTERVAL
        self.archive_segments = True  # compress sealed segments (docs/lifecycle.md)
        self.history_retention = None  # lifecycle.Retention: drop archived history older than it
        self._checkpoint_lsn: int | None = None  # read on the first append

    @property
    def driver(self) -> Driver:
        """The storage driver, opened on first use (most reads never need it)."""
        if self._driver is None:
            self._driver = open_driver(self.driver_name, self.root, check=self._check_driver,
                                       options=self.driver_options)
        return self._driver

    # --- opening and closing -----------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike, driver: str | None = None, *, readonly: bool = False,
             owner: Holder | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE,
             driver_options: dict | None = None) -> "LayerStore":
        """Open (creating if needed) the store at ``root``: take the log and bring the
        read models up to date. It does not recover: ``eventstore.open_store`` (the
        seed's ``layer_store_init``) opens and recovers. ``driver_options``: keyword
        arguments of the driver (overlay: ``mountopt``, ``unmount_timeout``)."""
        faults.check_environment()
        if not os.fspath(root):
            raise errors.InvalidArgument("the store root is empty: name a directory")
        root = Path(root)
        check_access(root, write=not readonly)
        if readonly and not (root / "log").is_dir():
            raise errors.NoStore(f"no layer store at {root}")
        driver_name = cls._driver_name(root, driver, readonly)
        if not readonly:
            make_root(root)
            _check_writable(root)
            secure_store(root, driver_name)  # 0700/0600, older stores included (docs/security.md)
        index = _open_index(root / "index.db", readonly)
        store = None
        try:
            expectation = cls._expectation(root, index)
            try:
                log = _open_log(root, readonly, segment_size, expectation)
            except errors.LostRecords:
                # Ahead of the log: the log lost records — unless the read models are
                # another history's (a clone's), which their rows at the log's end tell
                if expectation.seen_lsn <= expectation.checkpoint_seen or not _other_history(root, index,
                                                                                                expectation):
                    raise
                expectation = expectation.without_index()
                log = _open_log(root, readonly, segment_size, expectation)
            store = cls(root, log, index, driver_name, owner or process.this_process(), check_driver=False,
                        driver_options=driver_options)
            log.listener = store._foreign.append
            store._adopt_index(expectation)
            store._settle_driver(requested=driver)
        except BaseException:
            (store.index if store is not None else index).close()
            if store is not None:
                store.log.close()
            raise
        return store

    @staticmethod
    def _expectation(root: Path, index: Index) -> Expectation:
        """What the read models and checkpoints say of the log; a writer whose read
        models turn out damaged sets them aside and goes on with new ones."""
        try:
            return expect(root, index.marks())
        except sqlite3.DatabaseError as exc:
            if sqlite_problem(exc) != "damaged":
                raise
            return expect(root, Index.in_memory().marks())

    @staticmethod
    def _driver_name(root: Path, requested: str | None, readonly: bool) -> str:
        """The driver the store uses (recorded in its ``driver`` file). A new store's
        driver is checked before anything is made: an unknown or unusable driver leaves
        no trace."""
        try:
            recorded = (root / "driver").read_text().strip() or None
        except FileNotFoundError:
            recorded = None
        except OSError as exc:
            raise errors.StorageError(f"cannot read {root / 'driver'}: {exc.strerror}") from None
        if recorded and requested and requested != recorded:
            raise errors.InvalidArgument(f"store {root} uses driver {recorded}, not {requested}")
        if recorded:
            return recorded
        name = requested or default_driver(root)
        if not readonly and not (root / "log").is_dir():
            reason = driver_class(name).supported(root / name)  # InvalidArgument for an unknown name
            if reason:
                raise errors.DriverError(f"driver {name} cannot run here: {reason}")
        return name

    def _settle_driver(self, requested: str | None) -> None:
        """A new store records its driver in ``<root>/driver`` under the writer lock, so
        that of two first opens with different drivers only the first wins and the
        second is refused (or, asking for none, uses the first's)."""
        if not self.log.writer:
            return
        with self.log.locked():
            marker = self.root / "driver"
            try:
                recorded = marker.read_text().strip() or None
            except FileNotFoundError:
                recorded = None
            if recorded is None:
                write_atomic(marker, self.driver_name.encode() + b"\n")
            elif recorded != self.driver_name:
                if requested and requested != recorded:
                    raise errors.InvalidArgument(f"store {self.root} uses driver {recorded}, not {requested}")
                self.driver_name, self._driver = recorded, None

    def _adopt_index(self, expectation: Expectation) -> None:
        """Use the read models if they follow this very log (caught up if behind),
        else rebuild them (docs/integrity.md). A reader never writes ``index.db``: it
        catches up or rebuilds a copy in memory."""
        try:
            marks = self.index.marks()
            # a span the log did not confirm means the read models saw other bytes
            follows = (expectation.index_is_ours and marks.position is not None and marks.last_record is not None
                       and self.log.matches(Fingerprint(*marks.last_record), end=Position(*marks.position))
                       and (expectation.span is None or self.log.span_verified))
        except sqlite3.DatabaseError as exc:
            if sqlite_problem(exc) != "damaged":
                raise
            follows = False
            self._replace_damaged_index()
        if follows and self.log.tail == Position(*marks.position) and self.log.span_verified:
            self._foreign.clear()
            return  # current, and checked
        if self.index.readonly:
            source = self.index
            self.index = Index.in_memory(source if follows else None)
            source.close()
        if follows:
            self.index.catch_up(self.log)
        else:
            self.rebuild_index()
        if not (self.log.span_verified and self.index.marks().span_start is not None):
            self._reset_span()
        self._foreign.clear()  # projected just now

    def _reset_span(self) -> None:
        """Start the read models' span checksum at the newest checkpoint (or the log's
        start) and compute it over what they have projected since."""
        position = self.index.position()
        start = self.log.check_start
        if position is None:  # nothing projected yet: the span begins where the log does
            if not self.index.readonly and start == self.log.tail:
                self.index.set_span(start, 0)
            return
        crc = span_crc(self.log.log_dir, start[:2], position[:2])
        if crc is not None and not self.index.readonly:
            self.index.set_span(start, crc)

    def _replace_damaged_index(self) -> str:
        """Damaged read models: set aside (a reader: replaced in memory); where they went."""
        if self.index.readonly or self.index.path is None:
            self.index.close()
            self.index = Index.in_memory()
            return "memory"
        path = self.index.path
        self.index.close()
        aside = Index.set_aside(path, "damaged")
        self.index = Index(path)
        return aside.name

    def rebuild_in_memory(self) -> None:
        """Read models built afresh in memory from the log (a reader that met damage)."""
        self.index.close()
        self.index = Index.in_memory()
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """Drop the read models and project the log again: the layer tables from the
        newest checkpoint that follows the log (then only the events after it), the
        history from every event. A log whose older segments retention dropped can be
        rebuilt only so.

        In place, rather than by deleting index.db: another process with the file open
        would go on reading and writing an unlinked copy."""
        from eventstore import checkpoint

        # under the writer lock: no other process decides against half-rebuilt tables
        with self.log.locked() if self.log.writer else nullcontext():
            self.index.reset()
            ckpt = checkpoint.newest(self.root, self.log)
            starts_later = self.log.first_position.lsn > 1
            if ckpt is not None and ckpt.lsn > 0:
                # the history first: the checkpoint's load sets the position, and read
                # models with a position look whole (an interrupted backfill must not)
                self.index.backfill_history(self.log, until=ckpt.position)
                self.index.load_checkpoint(ckpt, str(self.log.store_uuid))
            elif starts_later:
                raise errors.CorruptStore(
                    f"the log starts at LSN {self.log.first_position.lsn} (retention dropped what came before) "
                    f"and no checkpoint carries the state before it: the read models cannot be rebuilt")
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
    def writing(self) -> Iterator["WriteSession"]:
        """Hold the writer lock, with the read models caught up with the log, and yield
        the session through which events are appended. Read models SQLite calls damaged
        are set aside and rebuilt, and ``ReadModelDamaged`` says so (an event appended
        before the damage was met stays: it is durable)."""
        with self.log.locked():
            try:
                self._apply_foreign()
                yield WriteSession(self)
            except sqlite3.DatabaseError as exc:
                if sqlite_problem(exc) != "damaged":
                    raise
                aside = self._replace_damaged_index()
                self.rebuild_index()
                raise errors.ReadModelDamaged(
                    f"the read models were damaged ({exc}): set aside to {aside} and rebuilt from the log"
                    + ("" if self.appended else "; nothing was changed")) from None

    def _apply_foreign(self) -> None:
        if self._index_behind or self._foreign:
            records, self._foreign[:] = list(self._foreign), []
            self._project(records)

    def _project(self, records: list[LogRecord]) -> None:
        try:
            if self._index_behind:
                # a projection failed after its events were durable: catch up from the
                # log itself. Projecting only the next record would move the read
                # models' position past the failed one, and they would never see it.
                self._foreign.clear()
                self.index.catch_up(self.log)
                self._index_behind = False
            else:
                self.index.apply(records, str(self.log.store_uuid))
        except BaseException:
            self._index_behind = True
            raise

    def _append_checked(self, state: IndexState, events: tuple[ev.Event, ...]) -> int:
        for event in events:  # each checked on the state the ones before it leave
            check(state, event)
            apply(state, 0, event)
        stamped = [stamp(e) for e in events]
        record = self.log.append_record(stamped)
        self.appended += len(stamped)
        last_lsn = record.end.lsn - 1
        try:
            self._project([record])
        except Exception as exc:
            # The events are durable: the operation happened, whatever the read models
            # say. They are caught up from the log before the next decision.
            if not self._warned:  # said once: the next ones fail for the same reason
                self._warned = True
                notice(f"the read models could not record LSN {last_lsn} ({exc}); the log has it, "
                     f"and they catch up from it at the next operation")
            return last_lsn
        if self._checkpoint_lsn is None:
            self._checkpoint_lsn = _newest_checkpoint_lsn(self.root)
        if last_lsn - self._checkpoint_lsn >= self.checkpoint_interval:
            self._write_checkpoint()
        return last_lsn

    def _write_checkpoint(self) -> Path:
        from eventstore import checkpoint

        # an empty store has no projected position yet: its checkpoint is the empty state at LSN 0
        position = self.index.position() or self.log.tail
        last = self.index.marks().last_record
        path = checkpoint.write(self.root, self.log.store_uuid, position, Fingerprint(*last) if last else None,
                                self.index.records(), self.index.sealed(), self.index.horizon())
        self._checkpoint_lsn = position.lsn - 1
        self.index.set_span(position, 0)  # the checked span starts at the newest checkpoint
        self._after_checkpoint(position, Fingerprint(*last) if last else None)
        return path

    def _after_checkpoint(self, position: Position, fingerprint: Fingerprint | None) -> None:
        """The log's lifecycle (docs/lifecycle.md): seal what the checkpoint covers,
        archive it, drop what retention lets go. Under the writer lock."""
        from eventstore import lifecycle

        for seal in lifecycle.seals_due(self.log, self.index.sealed(), position.segment):
            self._append_checked(self.index.state(), (seal,))
        faults.point("log.seal.after-event")
        if not self.archive_segments:
            return
        for seal in lifecycle.reseals_due(self.log, self.index.sealed()):
            self._append_checked(self.index.state(), (seal,))
        lifecycle.archive(self.log.log_dir, self.index.sealed())
        if self.history_retention is None:
            return
        due = lifecycle.horizon_due(self.log.log_dir, self.index.sealed(), position.lsn - 1, self.log.last_lsn,
                                    self.history_retention)
        if due is not None and due != self.index.horizon():
            self._append_checked(self.index.state(), (ev.HistoryHorizon(
                first_segment=due[0], first_lsn=due[1], checkpoint_lsn=position.lsn - 1,
                fingerprint=list(fingerprint or ()), policy=str(self.history_retention)),))
            faults.point("log.retention.after-event")
        horizon = self.index.horizon()
        if horizon is not None:  # written and dropped now, or finished after a crash
            lifecycle.write_horizon(self.log.log_dir, *horizon)
            lifecycle.drop_before(self.log.log_dir, horizon[0])
            self.log.forget_before(horizon[0])

    def checkpoint(self) -> Path:
        """Write a checkpoint of the state now (also taken every ``checkpoint_interval`` events)."""
        with self.writing():
            return self._write_checkpoint()

    # --- lookups ---------------------------------------------------------------------------

    def lookup(self, ref: str) -> LayerRecord:
        """The layer with id ``ref``, else named ``ref``, else whose id starts with ``ref``."""
        return self.index.lookup(ref)

    def exists(self, ref: str) -> bool:
        """True when ``ref`` names a layer (``layer_store_exists``)."""
        return self.index.exists(ref)

    def listing(self) -> list[dict]:
        """id, parent, names, incomplete of every layer (cheap; for listings)."""
        return self.index.listing()

    def layers(self) -> list[LayerRecord]:
        """Every layer, in creation order (incomplete ones included, flagged)."""
        return self.index.layers()

    def by_digest(self, digest: str, compressed: bool = False) -> list[str]:
        """Ids of the complete layers with that diff (or compressed) digest, oldest first."""
        return self.index.by_digest(digest, compressed)

    def by_compressed_digest(self, digest: str) -> list[str]:
        """Ids of the complete layers with that compressed digest (``..._by_compress_digest``)."""
        return self.index.by_digest(digest, compressed=True)

    def by_diff_digest(self, digest: str) -> list[str]:
        """Ids of the complete layers with that diff digest (``..._by_uncompress_digest``)."""
        return self.index.by_digest(digest, compressed=False)

    def hold_refs(self, ref: str) -> int:
        """The layer's hold count (``layer_get_hold_refs``)."""
        return self.lookup(ref).hold_refs

    def usable(self, ref: str) -> LayerRecord:
        """The layer ``ref`` names, refused when it is quarantined or incomplete."""
        return require_usable(self.lookup(ref))

    def fs_info(self, ref: str):
        """Bytes and inodes of the layer's own data (``layer_store_get_layer_fs_info``)."""
        return self.driver.fs_info(self.usable(ref).id)

    def metadata(self, ref: str) -> dict[str, str]:
        """The driver's view of the layer (``layer_store_get_metadata_by_layer_id``)."""
        return self.driver.metadata(self.usable(ref).id)

    # --- the shared judgements of the store and recovery --------------------------------------

    def stale_mount(self, rec: LayerRecord) -> str | None:
        """Why ``rec``'s mount count is not backed by the kernel (None: it is, or it is 0)."""
        if not rec.mount_count:
            return None
        if rec.mount_boot != process.boot_id():
            return "mounted in an earlier boot"
        if not self.driver.is_mounted(rec.id):
            return "not in the kernel's mount table"
        return None

    def tarsplit_path(self, layer_id: str) -> Path:
        """Where the layer's tar-split is (it may not exist)."""
        return self.tarsplit_dir / f"{layer_id}.tar-split"

    @property
    def tarsplit_dir(self) -> Path:
        """The directory of every layer's tar-split."""
        return self.root / "tarsplit"

    def remove_data(self, layer_id: str) -> None:
        """Remove every byte of a layer (driver data, tar-split, layer data, what an
        interrupted diff apply left); missing is fine. Callers record why first: an
        intent or a delete in the log."""
        from eventstore import applydiff, layerdata

        self.driver.remove(layer_id)
        try:
            os.unlink(self.tarsplit_path(layer_id))
        except FileNotFoundError:
            pass
        layerdata.remove_all(self.root, layer_id)
        applydiff.discard(self, layer_id)

    # --- create ------------------------------------------------------------------------------

    def create(self, layer_id: str | None = None, *, parent: str | None = None, names: list[str] = (),
               writable: bool = False, content: BinaryIO | None = None,
               compressed_digest: str | None = None, diff_digest: str | None = None,
               mount_label: str = "", max_size: int | None = None,
               progress: Callable[[int], None] | None = None, hold: Holder | None = None,
               snapshot: ev.Snapshot | None = None,
               uid_map: list[ev.IDMapping] = (), gid_map: list[ev.IDMapping] = ()) -> str:
        """Create a layer (optionally filled from a tar stream); its id.

        An id that exists already with the same parent gets a hold and is returned (the
        seed's rule); with another parent it is ``LayerExists``. The hold is the
        handle owner's, or ``hold``'s; with ``hold``, a new layer is held too, in the
        same event batch that completes it (no delete can come between). ``snapshot``
        records what containerd knows of a layer it makes (``eventstore.containerd``).
        ``uid_map``/``gid_map`` make an ID-mapped layer (``eventstore.idmap``): its
        files are owned by the host ids the content's ids map to.
        """
        # every argument checked before the first event (docs/security.md)
        checked = check_create(layer_id, names, compressed_digest, diff_digest, max_size, mount_label)
        names, max_size = checked.names, checked.max_size
        from eventstore.idmap import Owners, check as check_mapping

        owners = Owners(uid_map, gid_map)
        check_mapping(owners.uid_map, "uidmap")
        check_mapping(owners.gid_map, "gidmap")
        with self.writing() as w:
            parent_rec = self.usable(parent) if parent else None
            parent_id = parent_rec.id if parent_rec else None
            if layer_id is not None:
                existing = self.index.layer(layer_id)
                if existing is not None:
                    return self._create_existing(w, existing, parent_id, hold or self.owner)
            else:
                layer_id = self._new_id()
            self.check_parent_mapping(owners, parent_rec)
            w.append(ev.LayerCreated(layer=layer_id, parent=parent_id, names=names, writable=writable,
                                     driver=self.driver_name, owner=self.process, mount_label=mount_label,
                                     snapshot=snapshot, uid_map=owners.uid_map, gid_map=owners.gid_map))
        faults.point("store.create.after-intent")
        try:
            result = self._fill(layer_id, parent_rec, writable, content, compressed_digest, diff_digest,
                                max_size, progress, owners)
        except BaseException as exc:
            self.undo_create(layer_id, exc)
            raise
        with self.writing() as w:
            held = [ev.HoldAdded(layer=layer_id, holder=hold)] if hold is not None else []
            w.append(ev.LayerCompleted(layer=layer_id, **result), *held)
        return layer_id

    def _create_existing(self, w: "WriteSession", existing: LayerRecord, parent_id: str | None,
                         holder: Holder) -> str:
        if existing.parent != parent_id:
            raise errors.LayerExists(f"layer {existing.id}: exists with parent {existing.parent or 'none'}, "
                                     f"not {parent_id or 'none'}")
        w.append(ev.HoldAdded(layer=existing.id, holder=holder))
        return existing.id

    def _new_id(self) -> str:
        while True:
            layer_id = os.urandom(32).hex()
            if self.index.layer(layer_id) is None:
                return layer_id

    def check_parent_mapping(self, owners, parent_rec: LayerRecord | None) -> None:
        """A stacking driver shows a parent's files as they are on disk: its child must
        map ids as the parent does (a copying driver re-owns its copy instead)."""
        if parent_rec is None or not self.driver.stacks_layers:
            return
        if (owners.uid_map, owners.gid_map) != (list(parent_rec.uid_map), list(parent_rec.gid_map)):
            from eventstore.idmap import describe

            raise errors.InvalidArgument(
                f"on {self.driver_name}, a layer maps ids as its parent does: parent {parent_rec.id} has "
                f"--uidmap '{describe(parent_rec.uid_map)}' --gidmap '{describe(parent_rec.gid_map)}'")

    def _fill(self, layer_id: str, parent_rec: LayerRecord | None, writable: bool, content: BinaryIO | None,
              compressed_digest: str | None, diff_digest: str | None, max_size: int | None,
              progress: Callable[[int], None] | None, owners) -> dict:
        from eventstore.idmap import Owners, chown_root, shift_tree

        self.driver.create(layer_id, parent_rec.id if parent_rec else None, writable)
        faults.point("store.create.after-driver")
        if parent_rec is None:
            chown_root(self.driver.diff_path(layer_id), owners)
        elif not self.driver.stacks_layers:
            parent_owners = Owners(parent_rec.uid_map, parent_rec.gid_map)
            if (parent_owners.uid_map, parent_owners.gid_map) != (owners.uid_map, owners.gid_map):
                shift_tree(self.driver.diff_path(layer_id), parent_owners, owners)
        return self.fill_content(layer_id, content, compressed_digest=compressed_digest, diff_digest=diff_digest,
                                 max_size=max_size, progress=progress, owners=owners)

    def fill_content(self, layer_id: str, content: BinaryIO | None, *, compressed_digest: str | None = None,
                     diff_digest: str | None = None, max_size: int | None = None,
                     progress: Callable[[int], None] | None = None, owners=None) -> dict:
        """Fill a layer the driver has made from ``content`` (None: leave it empty), check
        the digests given, and make its data durable; the fields of its completion event.
        ``owners`` (an ``idmap.Owners``) shifts the owners of the files extracted.

        Touches the layer's own data and tar-split only, never the log or the read
        models, so threads may fill different layers at once (``eventstore.oci.parallel``).
        """
        result: dict = {}
        if content is not None:
            from eventstore.archive import DEFAULT_MAX_SIZE, import_layer

            tarsplit = self.tarsplit_path(layer_id)
            if not tarsplit.parent.is_dir():
                make_dir(tarsplit.parent)
                fsync_dir(self.root)
            imported = import_layer(content, self.driver.diff_path(layer_id), tarsplit,
                                    whiteout_format=self.driver.whiteout_format,
                                    max_size=max_size or DEFAULT_MAX_SIZE, progress=progress,
                                    owners=owners or None)
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

    def undo_create(self, layer_id: str, exc: BaseException) -> None:
        """Remove a half-made layer of this handle's (its intent appended, never
        completed); ``exc`` says why (rejected content is recorded as such). If that
        fails too, recovery finishes it once this process has exited.

        Nothing is removed unless the log still has the layer incomplete and ours: a
        completion that became durable before an error (a checkpoint after the append
        that failed, an interrupt) stands, and its data with it (DESIGN §4)."""
        try:
            with self.writing() as w:
                rec = w.layer(layer_id)
                if rec is None or not rec.incomplete or rec.deleting or rec.owner != self.process:
                    return
            self.remove_data(layer_id)  # (only this process completes or deletes it: ours alone)
            with self.writing() as w:
                if isinstance(exc, (errors.ContentRejected, errors.DigestMismatch)):
                    w.append(ev.ContentRejected(layer=layer_id, reason=str(exc)))
                w.append(ev.LayerDeleted(layer=layer_id))
        except Exception:
            pass  # the layer stays incomplete, owned by us; recovery removes it after we exit

    # --- names --------------------------------------------------------------------------------

    def set_names(self, ref: str, names: list[str]) -> None:
        """Make ``names`` the layer's names, exactly (a name another layer has is refused)."""
        names = check_names(names)
        with self.writing() as w:
            w.append(ev.NamesChanged(layer=self.lookup(ref).id, names=names))

    # --- damage -------------------------------------------------------------------------------

    def unquarantine(self, ref: str, reason: str = "") -> str:
        """Lift a layer's quarantine (the operator checked it); its id."""
        with self.writing() as w:
            rec = self.lookup(ref)
            w.append(ev.QuarantineLifted(layer=rec.id, reason=reason))
            return rec.id

    def purge_lost_found(self, name: str) -> None:
        """Delete a lost+found entry for good (never across a mount); recorded."""
        from eventstore import lostfound

        with self.writing() as w:
            lostfound.purge(self.root, name)
            w.append(ev.LostFoundPurged(name=name))

    # --- holds ----------------------------------------------------------------------------------

    def _holder(self, lease: str | None, holder: Holder | None) -> Holder:
        if lease is not None:  # an empty lease is invalid, not "no lease"
            return Holder(lease=check_name(lease, "lease"))
        if holder is not None and holder.lease:
            check_name(holder.lease, "lease")
        return holder or self.owner

    def hold(self, ref: str, *, lease: str | None = None, holder: Holder | None = None) -> int:
        """Take a hold (``layer_inc_hold_refs``); the new hold count."""
        chosen = self._holder(lease, holder)  # a hostile lease is a usage error, found or not
        with self.writing() as w:
            rec = self.lookup(ref)
            w.append(ev.HoldAdded(layer=rec.id, holder=chosen))
            return w.layer(rec.id).hold_refs

    def release(self, ref: str, *, lease: str | None = None, holder: Holder | None = None) -> int:
        """Release a hold (``layer_dec_hold_refs``); the new count. Without a lease or
        holder: this process's own hold, else the most recent process hold."""
        named = self._holder(lease, holder) if lease is not None or holder else None
        with self.writing() as w:
            rec = self.lookup(ref)
            if named is not None:
                chosen = named
            else:
                chosen = self.owner if self.owner in rec.holds else next(
                    (h for h in reversed(rec.holds) if not h.lease), None)
                if chosen is None:
                    what = "held only by leases (name one)" if rec.holds else "not held"
                    raise errors.NotHeld(f"layer {rec.id}: {what}; hold refs {rec.hold_refs}")
            w.append(ev.HoldReleased(layer=rec.id, holder=chosen))
            return w.layer(rec.id).hold_refs

    # --- delete ---------------------------------------------------------------------------------

    def delete(self, ref: str, *, force: bool = False, lease: str | None = None) -> None:
        """Delete a layer (``layer_store_delete``): refused while held, mounted (unless
        forced: then it is unmounted first) or the parent of another layer. ``lease``:
        release that lease's hold in the record that begins the delete (both or neither)."""
        with self.writing() as w:
            rec = self.lookup(ref)
            if rec.incomplete and not rec.deleting and rec.owner and process.is_alive(rec.owner) \
                    and rec.owner != self.process:
                raise errors.LayerIncomplete(f"layer {rec.id}: still being created by pid {rec.owner.pid}")
            self.driver.check_removable(rec.id)  # a volume mounted inside: refused, nothing logged
            if rec.mount_count and force:
                if not rec.deleting:
                    # the other rules (held, parent) first, on the state the unmount would
                    # leave: a refused delete must not have unmounted anything
                    after_unmount = self.index.state()
                    apply(after_unmount, 0, ev.LayerUnmounted(layer=rec.id, force=True))
                    check(after_unmount, ev.LayerMarkedIncomplete(layer=rec.id))
                self.driver.unmount(rec.id)
                w.append(ev.LayerUnmounted(layer=rec.id, force=True))
            if not rec.deleting:
                leased = Holder(lease=lease) if lease is not None else None
                released = [ev.HoldReleased(layer=rec.id, holder=leased)] if leased in rec.holds else []
                w.append(*released, ev.LayerMarkedIncomplete(layer=rec.id, reason="delete", owner=self.process))
        faults.point("store.delete.after-mark")
        self.remove_data(rec.id)
        faults.point("store.delete.after-remove")
        with self.writing() as w:
            if w.layer(rec.id) is not None:
                w.append(ev.LayerDeleted(layer=rec.id))

    # --- containerd snapshots (eventstore/containerd) --------------------------------------------

    def commit_snapshot(self, ref: str, *, key: str, names: list[str], labels: dict[str, str],
                        size: int = -1, inodes: int = -1) -> None:
        """Freeze an active snapshot's layer read-only under ``key`` and ``names``, its
        labels replaced; its data is synced first, so a committed layer survives a power loss."""
        names = check_names(names)
        layer_id = self.usable(ref).id
        self.driver.sync(layer_id)
        with self.writing() as w:
            w.append(ev.SnapshotCommitted(layer=layer_id, key=key, names=names, labels=labels,
                                          size=size, inodes=inodes))

    def set_snapshot_labels(self, ref: str, labels: dict[str, str]) -> None:
        """Replace a snapshot layer's labels."""
        with self.writing() as w:
            w.append(ev.SnapshotLabelsChanged(layer=self.lookup(ref).id, labels=labels))

    # --- mounts -----------------------------------------------------------------------------------

    def mount(self, ref: str) -> str:
        """Mount (``layer_store_mount``): the first mount mounts for real, later ones
        count; the path either way."""
        with self.writing() as w:
            rec = require_not_applying(self.usable(ref))  # before the driver mounts anything
            stale = self.stale_mount(rec)
            if stale:
                w.append(ev.MountsReconciled(layer=rec.id, count=0, reason=stale))
                rec = w.layer(rec.id)
            if rec.mount_count == 0:
                path = str(self._mount_repairing(rec))
                faults.point("store.mount.after-driver")
            else:
                path = rec.mount_point
            w.append(ev.LayerMounted(layer=rec.id, mount_point=path, boot=process.boot_id()))
            return path

    def _mount_repairing(self, rec: LayerRecord) -> Path:
        """Mount; when the driver's metadata of the chain is damaged (a short link gone,
        a lower file wrong), rebuild it from the parent chain in the log and mount again
        (as iSulad's overlay driver repairs its lowers)."""
        try:
            return self.driver.mount(rec.id, rec.mount_label)
        except errors.DriverError:
            chain = [rec.id, *self.parents(rec.id)]
            repaired = []
            for i in reversed(range(len(chain))):  # the base first: a child's lower file names its parents
                repaired += self.driver.repair_layer(chain[i], chain[i + 1:])
            if not repaired:
                raise
            notice(f"layer {rec.id}: driver metadata rebuilt before mounting: {'; '.join(repaired)}")
            return self.driver.mount(rec.id, rec.mount_label)

    def parents(self, layer_id: str) -> list[str]:
        """The layer's parents, nearest first."""
        chain, rec = [], self.index.layer(layer_id)
        while rec is not None and rec.parent:
            chain.append(rec.parent)
            rec = self.index.layer(rec.parent)
        return chain

    def umount(self, ref: str, *, force: bool = False) -> int:
        """Unmount (``layer_store_umount``): counts down, unmounting for real at zero
        (or at once with ``force``); the remaining count."""
        with self.writing() as w:
            rec = self.lookup(ref)
            if rec.mount_count == 0:
                raise errors.NotMounted(f"layer {rec.id}: not mounted")
            if force or rec.mount_count == 1:
                self.driver.unmount(rec.id)
                faults.point("store.umount.after-driver")
            w.append(ev.LayerUnmounted(layer=rec.id, force=force))
            return w.layer(rec.id).mount_count

    # --- content out ----------------------------------------------------------------------------

    def diff(self, ref: str, against: str | None = None) -> Iterator[bytes]:
        """The layer's changes as an uncompressed tar: byte for byte the tar it was
        created from, or (made otherwise) a tar of its changes against its parent — or
        against the layer ``against``."""
        from eventstore.archive import diff_changes, export_layer

        rec = require_not_applying(self.usable(ref))  # its data and tar-split are being swapped
        if against is not None and self.lookup(against).id != rec.parent:
            return self.diff_against(rec.id, against)
        if not rec.has_tarsplit and (rec.uid_map or rec.gid_map):
            return self.diff_against(rec.id, rec.parent) if rec.parent else self._diff_of_base(rec)
        if rec.has_tarsplit:
            return export_layer(self.driver.diff_path(rec.id), self.tarsplit_path(rec.id))
        parents = [self.driver.diff_path(p) for p in self.parents(rec.id)]
        return diff_changes(self.driver.diff_path(rec.id), parents, self.driver.whiteout_format)


    def _diff_of_base(self, rec: LayerRecord) -> Iterator[bytes]:
        """A tar of every file of a base layer without a tar-split, owners mapped back."""
        from eventstore.archive.changetar import export_changes
        from eventstore.idmap import Owners

        changes = self.changes(rec.id)
        return export_changes(self.driver.diff_path(rec.id), changes, Owners(rec.uid_map, rec.gid_map))


class WriteSession:
    """What its holder may do under the writer lock (``LayerStore.writing``)."""

    def __init__(self, store: LayerStore):
        self.store = store
        # the state as the read models had it when the session began, and every event
        # appended since (whether or not its projection succeeded)
        self.state = store.index.state()

    def append(self, *events: ev.Event) -> int:
        """Check ``events`` against the rules (each on the state the ones before it
        leave), append them as one durable record, project them; the last LSN."""
        return self.store._append_checked(self.state, events)

    def layer(self, layer_id: str) -> LayerRecord | None:
        """The layer's record as the events appended so far leave it (None: no such layer)."""
        return self.state.get(layer_id)
