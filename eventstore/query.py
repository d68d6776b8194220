"""Read-only queries on the read models, shared by the store and the CLI's fast path.

Nothing here imports msgspec or the event types: a CLI call that only reads (``exists``,
``layer``, ``layers``, ``refs``, ``by-digest``) opens SQLite, checks that the read
models have seen the whole log (two ``stat`` calls), and answers. Rows hold each layer
as JSON; ``decode`` turns that into whatever the caller wants (a dict here, a
``LayerRecord`` in the store).
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import TYPE_CHECKING, NamedTuple

from eventstore.errors import AmbiguousLayer, InvalidArgument, LayerNotFound

if TYPE_CHECKING:  # typing costs milliseconds at every CLI start; only checkers need it
    from collections.abc import Callable
    from typing import Any

HEX = frozenset("0123456789abcdef")


def _field(rec: Any, name: str) -> Any:
    return rec.get(name) if isinstance(rec, dict) else getattr(rec, name)


def rec_id(rec: Any) -> str:
    return _field(rec, "id")


def _owner_alive(owner: Any) -> bool:
    from eventstore.process import alive

    if owner is None:
        return False
    get = owner.get if isinstance(owner, dict) else (lambda k, d=None: getattr(owner, k, d))
    return bool(get("lease")) or alive(get("pid", 0), get("start", 0), get("boot", ""))


def abandoned_create(rec: Any) -> bool:
    """True for a layer still incomplete whose creator (or deleter) is dead and that is
    not quarantined: recovery removes it; reads never report it as existing."""
    return bool(_field(rec, "incomplete")) and not _field(rec, "quarantined") and \
        not _owner_alive(_field(rec, "owner"))


def sqlite_problem(exc: BaseException) -> str:
    """What an SQLite error means for the read models, by SQLite's own error code:
    ``damaged`` (corrupt pages, not a database), ``busy``, ``full``, ``readonly``,
    ``cantopen``, ``io``, or ``other``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, problem in (("SQLITE_CORRUPT", "damaged"), ("SQLITE_NOTADB", "damaged"), ("SQLITE_BUSY", "busy"),
                            ("SQLITE_LOCKED", "busy"), ("SQLITE_FULL", "full"), ("SQLITE_READONLY", "readonly"),
                            ("SQLITE_CANTOPEN", "cantopen"), ("SQLITE_PERM", "cantopen"),
                            ("SQLITE_AUTH", "cantopen"), ("SQLITE_IOERR", "io")):
        if name.startswith(prefix):
            return problem
    return "other"


def connect(path: str | os.PathLike, readonly: bool) -> sqlite3.Connection:
    """A connection to the read models; ``readonly`` never writes a byte (mode=ro)."""
    if readonly:
        from urllib.parse import quote

        # on a read-only file system nothing can change the file: SQLite need not look
        # for (or make) the WAL's shared-memory file, which it could not create there
        frozen = os.path.exists(path) and bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        return sqlite3.connect(f"file:{quote(os.fspath(path))}?mode=ro{'&immutable=1' if frozen else ''}",
                               uri=True, isolation_level=None, timeout=30.0, check_same_thread=False)
    return sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)


class Marks(NamedTuple):
    """What the read models say of the log they follow (kept in ``meta``, written in the
    same transaction as the rows): its store, how far they have projected, the last
    record they projected (segment, offset, LSN, CRC), and the span checksum — the start
    of the record bytes it covers (segment, offset, LSN) and their CRC32C."""

    store_uuid: str | None
    position: tuple[int, int, int] | None
    last_record: tuple[int, int, int, int] | None
    span_start: tuple[int, int, int] | None
    span_crc: int | None


NO_MARKS = Marks(None, None, None, None, None)


def _numbers(value: str | None, count: int) -> tuple[int, ...] | None:
    try:
        numbers = tuple(int(x) for x in value.split(":")) if value else ()
    except ValueError:
        return None
    return numbers if len(numbers) == count else None


class Reader:
    """Lookups over ``index.db``; ``decode`` turns a row's JSON into a layer."""

    def __init__(self, conn: sqlite3.Connection, decode: Callable[[str | bytes], Any] = json.loads):
        self.conn = conn
        self.decode = decode

    def meta(self, key: str) -> str | None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a database without read models yet
                return None
            raise
        return row[0] if row else None

    def marks(self) -> Marks:
        span = _numbers(self.meta("span"), 4)
        return Marks(self.meta("store_uuid"), _numbers(self.meta("position"), 3),  # type: ignore[arg-type]
                     _numbers(self.meta("last_record"), 4),  # type: ignore[arg-type]
                     span[:3] if span else None, span[3] if span else None)  # type: ignore[arg-type]

    def layer(self, layer_id: str) -> Any | None:
        row = self.conn.execute("SELECT record FROM layers WHERE id = ?", (layer_id,)).fetchone()
        return self.decode(row[0]) if row else None

    def layers(self) -> list[Any]:
        """Every layer, in creation order, but creates whose creator died half-way."""
        decoded = (self.decode(r[0]) for r in self.conn.execute("SELECT record FROM layers ORDER BY created_lsn"))
        return [rec for rec in decoded if not abandoned_create(rec)]

    def listing(self) -> list[dict]:
        """id, parent, names, incomplete and quarantined of every layer, in creation
        order, without decoding whole records (``layers`` at 10,000 layers stays fast);
        creates whose creator died half-way are not listed."""
        rows = self.conn.execute(
            "SELECT id, parent, json_extract(record, '$.names'), incomplete, json_extract(record, '$.quarantined'), "
            "CASE WHEN incomplete THEN json_extract(record, '$.owner') END FROM layers ORDER BY created_lsn")
        found = []
        for i, p, n, inc, quarantined, owner in rows:
            if inc and not quarantined and not _owner_alive(json.loads(owner) if owner else None):
                continue
            found.append({"id": i, "parent": p or "", "names": json.loads(n) if n and n != "[]" else [],
                          "incomplete": bool(inc), "quarantined": quarantined or ""})
        return found

    def by_name(self, name: str) -> str | None:
        row = self.conn.execute("SELECT layer FROM names WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        # a range scan on the primary key finds every id starting with ``prefix``
        rows = self.conn.execute("SELECT id FROM layers WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                 (prefix, prefix + "\U0010ffff", limit))
        return [r[0] for r in rows]

    def lookup(self, ref: str) -> Any:
        """The layer with id ``ref``, else named ``ref``, else whose id starts with ``ref``
        (a create whose creator died half-way is not found: it does not exist)."""
        rec = self._lookup(ref)
        if abandoned_create(rec):
            raise LayerNotFound(f"layer {rec_id(rec)}: not found (its creator died before it was complete)")
        return rec

    def _lookup(self, ref: str) -> Any:
        rec = self.layer(ref)
        if rec is not None:
            return rec
        owner = self.by_name(ref)
        if owner is not None:
            return self.layer(owner)
        if ref and len(ref) < 64 and HEX.issuperset(ref):
            matches = self.ids_with_prefix(ref)
            if len(matches) > 1:
                raise AmbiguousLayer(f"layer prefix {ref!r} is ambiguous: matches {matches[0][:12]}, "
                                     f"{matches[1][:12]}, ...")
            if matches:
                return self.layer(matches[0])
        # a ref is caller input: quoted when it holds control characters (one line, no
        # terminal escapes in an error message)
        raise LayerNotFound(f"layer {ref if ref.isprintable() and ref else repr(ref)}: not found")

    def exists(self, ref: str) -> bool:
        try:
            self.lookup(ref)
        except (LayerNotFound, AmbiguousLayer):
            return False
        return True

    def by_digest(self, digest: str, compressed: bool) -> list[str]:
        if not (digest.startswith("sha256:") and len(digest) == 71 and HEX.issuperset(digest[7:])):
            raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 hex digits>")
        column = "compressed_digest" if compressed else "diff_digest"
        rows = self.conn.execute(
            f"SELECT id FROM layers WHERE {column} = ? AND NOT incomplete ORDER BY created_lsn", (digest,))
        return [r[0] for r in rows]


def open_reader(root: str | os.PathLike) -> Reader | None:
    """A Reader on read models that have projected the whole log and that the log
    confirms (``provenance.current``), or None when the caller must open the store:
    no index yet, events not yet applied, or anything that needs a closer look."""
    from eventstore.provenance import current

    path = os.path.join(root, "index.db")
    if not os.path.exists(path):
        return None
    try:
        conn = connect(path, readonly=True)
    except sqlite3.DatabaseError:
        return None
    try:
        if current(root, Reader(conn).marks()):
            return Reader(conn)
    except sqlite3.DatabaseError:
        pass
    conn.close()
    return None
