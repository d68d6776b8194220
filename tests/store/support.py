"""Helpers for the store, index and CLI tests: snapshots of everything a store has (to
prove a refused operation changed nothing), the fold of a log (to compare the read
models with), and mount cleanup (no test may leave a mount behind)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from eventstore.log import EventLog
from eventstore.mounts import detach_all, mount_points
from eventstore.state import State, fold

READ_MODEL_TABLES = ("layers", "names", "history")


# --- mounts ---------------------------------------------------------------------------------

def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, from /proc/self/mountinfo (octal escapes undone)."""
    return sorted(mount_points(root))


def is_mounted(path: str | Path) -> bool:
    return os.path.realpath(path) in mounts_under(Path(path))


def unmount_everything_under(root: Path) -> None:
    """Detach every mount at or below ``root``, deepest first, so that a failed test
    never leaves pytest's tmp_path cleanup deleting through a live overlay."""
    detach_all(root)


# --- read models and the log ----------------------------------------------------------------

def remove_index(path: Path) -> None:
    """Delete an index database and its WAL files (the store rebuilds it from the log)."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


def dump_tables(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Every row of the read-model tables, in the order SQLite stores them (no ORDER BY:
    a rebuild must produce the same rows in the same order, not just the same set)."""
    return {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in READ_MODEL_TABLES}


def dump_index_file(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dump_tables(conn)
    finally:
        conn.close()


def last_lsn_on_disk(root: Path) -> int:
    """The log's last LSN as a fresh reader sees it (not a handle's cached tail)."""
    with EventLog.open(root, writer=False, create=False) as log:
        return log.last_lsn


def fold_log(root: Path) -> State:
    """The state the log says, folded from its first event."""
    with EventLog.open(root, writer=False, create=False) as log:
        return fold(log.events())


def snapshot(store) -> dict:
    """Everything a refused operation must leave as it was: the read models, the log's
    last LSN, the driver's layers and the mounts under the store root."""
    return {
        "tables": dump_tables(store.index.conn),
        "last_lsn": last_lsn_on_disk(store.root),
        "driver_layers": sorted(store.driver.layers()),
        "mounts": mounts_under(store.root),
    }


def assert_read_models_equal_fold(index, state: State) -> None:
    """``index`` (an eventstore.index.Index) holds exactly what ``state`` holds."""
    assert index.layers() == list(state.layers.values())
    assert dict(index.conn.execute("SELECT name, layer FROM names")) == state.names
    children = {}
    for rec in state:
        if rec.parent:
            children.setdefault(rec.parent, []).append(rec.id)
    for rec in state:
        assert index.children(rec.id) == children.get(rec.id, [])
    position = index.position()
    assert position is not None and position.lsn - 1 == state.lsn
