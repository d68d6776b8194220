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
from typing import TYPE_CHECKING

from eventstore.errors import AmbiguousLayer, InvalidArgument, LayerNotFound

if TYPE_CHECKING:  # typing costs milliseconds at every CLI start; only checkers need it
    from collections.abc import Callable
    from typing import Any

HEX = frozenset("0123456789abcdef")


def segment_path(root: str | os.PathLike, number: int) -> str:
    return os.path.join(root, "log", f"{number:016d}.wal")


class Reader:
    """Lookups over ``index.db``; ``decode`` turns a row's JSON into a layer."""

    def __init__(self, conn: sqlite3.Connection, decode: Callable[[str | bytes], Any] = json.loads):
        self.conn = conn
        self.decode = decode

    def meta(self, key: str) -> str | None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:  # no table yet, or not a database at all: not current
            return None
        return row[0] if row else None

    def layer(self, layer_id: str) -> Any | None:
        row = self.conn.execute("SELECT record FROM layers WHERE id = ?", (layer_id,)).fetchone()
        return self.decode(row[0]) if row else None

    def layers(self) -> list[Any]:
        return [self.decode(r[0]) for r in self.conn.execute("SELECT record FROM layers ORDER BY created_lsn")]

    def listing(self) -> list[dict]:
        """id, parent, names and incomplete of every layer, in creation order, without
        decoding whole records (``layers`` at 10,000 layers stays fast)."""
        rows = self.conn.execute(
            "SELECT id, parent, json_extract(record, '$.names'), incomplete FROM layers ORDER BY created_lsn")
        return [{"id": i, "parent": p or "", "names": json.loads(n) if n and n != "[]" else [],
                 "incomplete": bool(inc)} for i, p, n, inc in rows]

    def by_name(self, name: str) -> str | None:
        row = self.conn.execute("SELECT layer FROM names WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        # a range scan on the primary key finds every id starting with ``prefix``
        rows = self.conn.execute("SELECT id FROM layers WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                 (prefix, prefix + "\U0010ffff", limit))
        return [r[0] for r in rows]

    def lookup(self, ref: str) -> Any:
        """The layer with id ``ref``, else named ``ref``, else whose id starts with ``ref``."""
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

    def is_current(self, root: str | os.PathLike) -> bool:
        """True when the read models have applied everything in the log: the last
        segment ends exactly at their position and no later segment exists."""
        value = self.meta("position")
        if not value:
            return False
        segment, offset, _ = (int(x) for x in value.split(":"))
        try:
            size = os.stat(segment_path(root, segment)).st_size
        except FileNotFoundError:
            return False
        return size == offset and not os.path.exists(segment_path(root, segment + 1))


def open_reader(root: str | os.PathLike) -> Reader | None:
    """A Reader on an up-to-date index, or None when the caller must open the store
    (no index yet, or the log holds events the read models have not applied)."""
    path = os.path.join(root, "index.db")
    if not os.path.exists(path):
        return None
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    reader = Reader(conn)
    if not reader.is_current(root):
        conn.close()
        return None
    return reader
