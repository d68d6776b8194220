"""Read models in SQLite, projected from the log (DESIGN §3).

Tables: ``layers`` (one row a layer: query columns plus the whole record), ``names``,
``history`` (one row an event, for audit) and ``meta`` (the log position applied).
Digest lookups use indexes on ``layers``. The projection writes its rows and the
position they bring it to in one transaction, so after a crash it resumes exactly
where it stopped; several processes may project at once (SQLite serialises the
writers, and each skips records another already applied).

The index is derived data: synchronous=NORMAL (no fsync per commit) is enough,
because the log is the durable truth and ``Index.rebuild`` recreates it identically.
Hot paths use the sqlite3 module directly; sqlite-utils creates the schema (its
import costs ~80 ms, too much for every CLI call).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from eventstore import events as ev
from eventstore import faults
from eventstore.fsutil import fsync_dir
from eventstore.log import LogRecord, Position
from eventstore.log.format import crc32c
from eventstore.query import Reader, connect
from eventstore.state import LayerRecord, apply


SCHEMA_VERSION = 2

_json = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(LayerRecord)

LAYER_COLUMNS = (
    "id", "parent", "created", "compressed_digest", "diff_digest", "incomplete",
    "mount_count", "hold_refs", "process_holds", "created_lsn", "record",
)


#: The read models' tables: name -> (primary key, column types in order). Written as plain
#: DDL: sqlite-utils would load its plugins (an entry-point scan of every installed
#: package, and their code on the store's connection) and cost a new store's first open
#: ~120 ms (docs/benchmarks.md, "Start-up"); tests/test_index.py checks the tables and
#: indexes against sqlite-utils' own view of them.
TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "layers": ("id", {
        "id": "TEXT", "parent": "TEXT", "created": "INTEGER", "compressed_digest": "TEXT", "diff_digest": "TEXT",
        "incomplete": "INTEGER", "mount_count": "INTEGER", "hold_refs": "INTEGER", "process_holds": "INTEGER",
        "created_lsn": "INTEGER", "record": "TEXT"}),
    "names": ("name", {"name": "TEXT", "layer": "TEXT"}),
    "history": ("lsn", {
        "lsn": "INTEGER", "time": "INTEGER", "layer": "TEXT", "type": "TEXT", "pid": "INTEGER", "uid": "INTEGER",
        "program": "TEXT", "details": "TEXT"}),
    "meta": ("key", {"key": "TEXT", "value": "TEXT"}),
    # sealed segments (docs/lifecycle.md), from segment-sealed events
    "segments": ("number", {
        "number": "INTEGER", "first_lsn": "INTEGER", "last_lsn": "INTEGER", "size": "INTEGER", "crc": "INTEGER",
        "last_time": "INTEGER"}),
}
INDEXES = [("layers", "parent"), ("layers", "compressed_digest"), ("layers", "diff_digest"),
           ("layers", "created_lsn"), ("names", "layer"), ("history", "layer"), ("history", "time")]


def _create_schema(conn: sqlite3.Connection) -> None:
    for table, (pk, columns) in TABLES.items():
        body = ", ".join(f'"{name}" {kind}{" PRIMARY KEY" if name == pk else ""}' for name, kind in columns.items())
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({body})')
    for table, column in INDEXES:
        conn.execute(f'CREATE INDEX IF NOT EXISTS "idx_{table}_{column}" ON "{table}" ("{column}")')
    conn.execute("CREATE INDEX IF NOT EXISTS layers_attention ON layers(id) "
                 "WHERE incomplete OR mount_count > 0 OR process_holds > 0")
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))


_GONE = LayerRecord(id="", incomplete=False)


def decode_record(text: str | bytes) -> LayerRecord:
    return _record_decoder.decode(text)


class IndexState:
    """The fold's view of state, loaded lazily from the ``layers`` table.

    Only the layers an operation touches are read; changes stay in memory until
    ``flush`` writes them in the projection's transaction.

    ``flush`` writes rows in the order of their last change. Each write puts a row at
    the end of its table, so a projection that flushes after every event and a rebuild
    that flushes thousands at once leave the tables in the same order: a rebuild is
    identical, row for row (DESIGN §3).
    """

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._cache: dict[str, LayerRecord | None] = {}
        self._names: dict[str, str | None] = {}
        self._children_delta: dict[str, int] = {}
        self._dirty: dict[str, None] = {}  # ordered by last change
        self.lsn = 0

    def get(self, layer_id: str) -> LayerRecord | None:
        if layer_id not in self._cache:
            row = self._conn.execute("SELECT record FROM layers WHERE id = ?", (layer_id,)).fetchone()
            self._cache[layer_id] = decode_record(row[0]) if row else None
        return self._cache[layer_id]

    def owner_of(self, name: str) -> str | None:
        if name in self._names:
            return self._names[name]
        row = self._conn.execute("SELECT layer FROM names WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def has_children(self, layer_id: str) -> bool:
        (count,) = self._conn.execute("SELECT count(*) FROM layers WHERE parent = ?", (layer_id,)).fetchone()
        return count + self._children_delta.get(layer_id, 0) > 0

    def incomplete_ids(self) -> list[str]:
        rows = self._conn.execute("SELECT id FROM layers INDEXED BY layers_attention "
                                  "WHERE incomplete OR mount_count > 0 OR process_holds > 0").fetchall()
        stored = {r[0] for r in rows if (self.get(r[0]) or _GONE).incomplete}
        changed = {i for i, rec in self._cache.items() if rec is not None and rec.incomplete}
        return sorted(stored | changed)

    def _set_owner(self, name: str, owner: str | None) -> None:
        self._names.pop(name, None)  # to the end: flush follows the order of last change
        self._names[name] = owner

    def _touch(self, layer_id: str) -> None:
        self._dirty.pop(layer_id, None)
        self._dirty[layer_id] = None

    def put(self, rec: LayerRecord, old_names: Iterable[str] = ()) -> None:
        existed = self.get(rec.id) is not None
        kept = set(rec.names)
        # only names that change are written: an unchanged name keeps its row (and place)
        for name in old_names:
            if name not in kept and self.owner_of(name) == rec.id:
                self._set_owner(name, None)
        for name in rec.names:
            if self.owner_of(name) != rec.id:
                self._set_owner(name, rec.id)
        if not existed and rec.parent:
            self._children_delta[rec.parent] = self._children_delta.get(rec.parent, 0) + 1
        self._cache[rec.id] = rec
        self._touch(rec.id)

    def drop(self, layer_id: str) -> None:
        rec = self.get(layer_id)
        if rec is None:
            return
        for name in rec.names:
            if self.owner_of(name) == layer_id:
                self._set_owner(name, None)
        if rec.parent:
            self._children_delta[rec.parent] = self._children_delta.get(rec.parent, 0) - 1
        self._cache[layer_id] = None
        self._touch(layer_id)

    def flush(self) -> None:
        """Write every changed layer and name (inside the caller's transaction)."""
        conn = self._conn
        for layer_id in self._dirty:
            rec = self._cache[layer_id]
            if rec is None:
                conn.execute("DELETE FROM layers WHERE id = ?", (layer_id,))
            else:
                conn.execute(
                    f"INSERT OR REPLACE INTO layers ({', '.join(LAYER_COLUMNS)}) VALUES ({', '.join('?' * len(LAYER_COLUMNS))})",
                    (rec.id, rec.parent, rec.created, rec.compressed_digest, rec.diff_digest,
                     int(rec.incomplete), rec.mount_count, rec.hold_refs,
                     _process_claims(rec), rec.created_lsn, _json.encode(rec).decode()))
        for name, owner in self._names.items():
            if owner is None:
                conn.execute("DELETE FROM names WHERE name = ?", (name,))
            else:
                conn.execute("INSERT OR REPLACE INTO names VALUES (?, ?)", (name, owner))
        self._dirty.clear()
        self._names.clear()
        self._children_delta.clear()


def _process_claims(rec: LayerRecord) -> int:
    """The ``process_holds`` column: holds by processes, plus a diff apply in progress
    (its process owns the layer until it is done), so that recovery's one indexed query
    finds the layers a dead process left (held or half-applied)."""
    return sum(1 for h in rec.holds if not h.lease) + (rec.applying is not None)


_NO_ACTOR = ev.Actor(pid=0, uid=0)


def history_row(lsn: int, event: ev.Event, _builtins=msgspec.to_builtins, _encode=_json.encode) -> tuple:
    """The history table's row of one event: who, when, which layer, and the rest of
    the event as JSON. (Runs once per event of a rebuild: kept lean.)"""
    details = _builtins(event)
    kind = details.pop("type")
    details.pop("time", None)
    details.pop("actor", None)
    details.pop("layer", None)
    actor = event.actor or _NO_ACTOR
    return (lsn, event.time, getattr(event, "layer", None), kind, actor.pid, actor.uid, actor.program, _encode(details).decode())


class Index(Reader):
    """The SQLite read models of one store (``<root>/index.db``), or a copy of them in
    memory (``Index.in_memory``) for a reader that may not write the file."""

    def __init__(self, path: Path | None, readonly: bool = False, conn: sqlite3.Connection | None = None):
        self.path = Path(path) if path is not None else None
        self.readonly = readonly
        if conn is None:
            new = not self.path.exists()
            conn = connect(self.path, readonly)
        else:
            new = False
        super().__init__(conn, decode_record)
        if readonly:
            self.conn.execute("SELECT value FROM meta LIMIT 1").fetchall()  # damaged or not ours: fail now
            return
        if self.path is not None:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        if new or self.meta("schema") != str(SCHEMA_VERSION):  # new tables come with if_not_exists
            self._transaction(lambda: _create_schema(self.conn))

    @classmethod
    def in_memory(cls, source: "Index | None" = None) -> "Index":
        """Read models in memory: empty, or a copy of ``source`` (to catch up or rebuild
        without writing the file)."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if source is not None:
            source.conn.backup(conn)
        index = cls(None, conn=conn)
        return index

    # --- position and meta -------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        """Record ``key`` = ``value`` in its own transaction."""
        self._transaction(lambda: self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))

    def position(self) -> Position | None:
        """Where in the log the projection stands (None: nothing applied yet)."""
        value = self.meta("position")
        if not value:
            return None
        segment, offset, lsn = (int(x) for x in value.split(":"))
        return Position(segment, offset, lsn)

    @property
    def store_uuid(self) -> str | None:
        return self.meta("store_uuid")

    def reset(self) -> None:
        """Empty every read model (in place, one transaction), to be projected again."""
        def body() -> None:
            for table in ("layers", "names", "history"):
                self.conn.execute(f"DELETE FROM {table}")
            self.conn.execute("DELETE FROM segments")
            self.conn.execute("DELETE FROM meta WHERE key IN "
                              "('position', 'store_uuid', 'swept_boot', 'last_record', 'span', 'horizon')")

        self._transaction(body)

    def set_span(self, start: Position, crc: int) -> None:
        """The span checksum now covers the record bytes from ``start`` to the position,
        with CRC ``crc`` (after a checkpoint: from its position, nothing yet)."""
        self.set_meta("span", ":".join(map(str, (*start, crc))))

    # --- projecting -------------------------------------------------------------------

    def _transaction(self, body):
        def run():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = body()
                faults.point("index.before-commit")
                self.conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): a rollback that
                # fails must not hide the error that caused it
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            faults.point("index.after-commit")
            return result

        try:
            return run()
        except sqlite3.OperationalError as exc:
            # SQLite already waited its busy timeout; past that, back off and retry.
            # (tenacity is imported only here: it costs ~20 ms at every CLI start.)
            from eventstore.retry import is_busy_database, on_busy_database

            if not is_busy_database(exc):
                raise
            return on_busy_database(run)()

    def apply(self, records: Iterable[LogRecord], store_uuid: str | None = None) -> int:
        """Project ``records`` (skipping what is already applied); events applied."""
        records = list(records)
        if not records:
            return 0

        def body() -> int:
            applied_lsn = (self.position() or Position(0, 0, 1)).lsn
            marks = self.marks()
            span_crc = marks.span_crc
            state = IndexState(self.conn)
            history = []
            end = last = None
            for record in records:
                if record.end.lsn <= applied_lsn:
                    continue
                # the span checksum grows with every record's bytes; a record whose
                # bytes are unknown ends it (the next open checks record by record)
                span_crc = crc32c(record.raw, span_crc) if span_crc is not None and record.raw else None
                last = record
                for i, event in enumerate(record.events):
                    lsn = record.lsn + i
                    if lsn < applied_lsn:
                        continue
                    apply(state, lsn, event)
                    history.append(history_row(lsn, event))
                    if isinstance(event, (ev.SegmentSealed, ev.HistoryHorizon)):
                        self._project_lifecycle(event)
                end = record.end
            if end is None:
                return 0
            state.flush()
            self.conn.executemany("INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)", history)
            meta = [("position", f"{end.segment}:{end.offset}:{end.lsn}"),
                    ("last_record", ":".join(map(str, last.fingerprint)))]
            if span_crc is not None and marks.span_start is not None:
                meta.append(("span", ":".join(map(str, (*marks.span_start, span_crc)))))
            else:
                self.conn.execute("DELETE FROM meta WHERE key = 'span'")
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
            if store_uuid:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('store_uuid', ?)", (store_uuid,))
            return len(history)

        return self._transaction(body)

    def _project_lifecycle(self, event: ev.Event) -> None:
        # inside the projection's transaction
        if isinstance(event, ev.SegmentSealed):
            self.conn.execute("INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                              (event.segment, event.first_lsn, event.last_lsn, event.size, event.crc,
                               event.last_time))
        else:  # the history before the horizon went with its segments
            self.conn.execute("DELETE FROM history WHERE lsn < ?", (event.first_lsn,))
            self.conn.execute("DELETE FROM segments WHERE number < ?", (event.first_segment,))
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('horizon', ?)",
                              (f"{event.first_segment}:{event.first_lsn}",))

    def sealed(self) -> dict[int, tuple[int, int, int, int, int]]:
        """Sealed segments: number -> (first LSN, last LSN, size, CRC, last event time)."""
        return {row[0]: tuple(row[1:]) for row in self.conn.execute("SELECT * FROM segments ORDER BY number")}

    def horizon(self) -> tuple[int, int] | None:
        """(first segment, first LSN) of the log once retention dropped older segments."""
        value = self.meta("horizon")
        return tuple(int(x) for x in value.split(":")) if value else None  # type: ignore[return-value]

    def load_checkpoint(self, ckpt, store_uuid: str) -> None:
        """Empty read models filled with a checkpoint's state, positioned after it: the
        layer tables of a rebuild without replaying what came before (the history
        before it comes from ``backfill_history``)."""
        def body() -> None:
            state = IndexState(self.conn)
            for rec in sorted(ckpt.state.layers.values(), key=lambda r: r.created_lsn):
                state.put(rec)
            state.flush()
            self.conn.executemany("INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                                  [(n, *facts) for n, facts in ckpt.sealed.items()])
            meta = [("position", ":".join(map(str, ckpt.position))), ("store_uuid", store_uuid)]
            if ckpt.horizon:
                meta.append(("horizon", ":".join(map(str, ckpt.horizon))))
            if ckpt.fingerprint and ckpt.lsn:
                meta.append(("last_record", ":".join(map(str, ckpt.fingerprint))))
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)

        self._transaction(body)

    def backfill_history(self, log, until: Position) -> int:
        """History rows for the events before ``until`` (a rebuild from a checkpoint:
        the layer tables came from it, the audit trail comes from the log); rows only,
        no fold. The events written.

        In bulk: the history's secondary indexes are dropped first and made again at the
        end (one sort instead of a random B-tree insert per row), and the rows go in
        one transaction. An interrupted backfill leaves read models without a position,
        which the next open rebuilds (and ``_create_schema`` makes the indexes again)."""
        total = 0
        rows: list[tuple] = []
        history_indexes = [(t, c) for t, c in INDEXES if t == "history"]

        def body() -> None:
            nonlocal total, rows
            for table, column in history_indexes:
                self.conn.execute(f'DROP INDEX IF EXISTS "idx_{table}_{column}"')
            insert = "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            for record in log.records(until=until):
                lsn = record.lsn
                rows += [history_row(lsn + i, event) for i, event in enumerate(record.events)]
                if len(rows) >= 50_000:
                    self.conn.executemany(insert, rows)
                    total += len(rows)
                    rows = []
            self.conn.executemany(insert, rows)
            total += len(rows)
            for table, column in history_indexes:
                self.conn.execute(f'CREATE INDEX IF NOT EXISTS "idx_{table}_{column}" ON "{table}" ("{column}")')

        self._transaction(body)
        return total

    def catch_up(self, log) -> int:
        """Apply whatever the log holds beyond our position; events applied."""
        total = 0
        batch: list[LogRecord] = []
        for record in log.records(self.position()):
            batch.append(record)
            if len(batch) >= 2000:
                total += self.apply(batch, str(log.store_uuid))
                batch = []
        total += self.apply(batch, str(log.store_uuid))
        return total

    def state(self) -> IndexState:
        """A fresh lazy view of the state as the index has it now."""
        return IndexState(self.conn)

    # --- queries ------------------------------------------------------------------------

    def needing_attention(self) -> list[LayerRecord]:
        """Layers recovery must look at: incomplete, mounted, or held by processes."""
        rows = self.conn.execute(
            "SELECT record FROM layers INDEXED BY layers_attention "
            "WHERE incomplete OR mount_count > 0 OR process_holds > 0 ORDER BY created_lsn")
        return [decode_record(r[0]) for r in rows]

    def children(self, layer_id: str) -> list[str]:
        rows = self.conn.execute("SELECT id FROM layers WHERE parent = ? ORDER BY created_lsn", (layer_id,))
        return [r[0] for r in rows]

    def history(self, layer_id: str | None = None) -> Iterator[tuple]:
        if layer_id is None:
            return self.conn.execute("SELECT * FROM history ORDER BY lsn")
        return self.conn.execute("SELECT * FROM history WHERE layer = ? ORDER BY lsn", (layer_id,))

    def layer_ids(self) -> set[str]:
        """The id of every layer the read models hold."""
        return {row[0] for row in self.conn.execute("SELECT id FROM layers")}

    def close(self) -> None:
        self.conn.close()

    @staticmethod
    def set_aside(path: Path, why: str) -> Path:
        """Move an index database and its WAL files aside (``<path>.<why>-<UTC time>``),
        to be rebuilt from the log; never deleted: it may hold evidence. The new name."""
        import time

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = Path(f"{path}.{why}-{stamp}")
        n = 0
        while aside.exists():
            n += 1
            aside = Path(f"{path}.{why}-{stamp}.{n}")
        for suffix in ("-wal", "-shm", ""):  # the database file last: its name is the claim
            try:
                os.rename(f"{path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                pass
        fsync_dir(Path(path).parent)
        return aside
