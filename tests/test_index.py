"""The SQLite read models (eventstore/index.py): the projection equals the fold of the
log, and however the index was lost, cut short, run ahead or swapped, reopening the
store brings back exactly the rows a fresh projection makes, in the same order."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore import events as ev
from eventstore.errors import LostRecords
from eventstore.events import Holder
from eventstore.index import Index
from eventstore.process import this_process
from eventstore.log import EventLog
from eventstore.opener import open_store
from eventstore.store import LayerStore

from tests.store.support import (assert_read_models_equal_fold, dump_index_file, dump_tables, fold_log,
                                 last_lsn_on_disk, remove_index, unmount_everything_under)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


def open_vfs(root: Path) -> LayerStore:
    return open_store(root, "vfs")


def workload(store: LayerStore, rounds: int = 3) -> None:
    """Every kind of event the store writes, layers coming and going, names moving."""
    for r in range(rounds):
        base = store.create(names=[f"base-{r}", f"alias-{r}" * (r + 1)])
        child = store.create(parent=base, names=[f"child-{r}"], writable=True)
        leaf = store.create(parent=child)
        store.hold(base, lease=f"lease-{r}")
        store.hold(child)
        store.hold(child, lease="x" * (10 * r + 1))
        store.release(child)
        store.mount(child)
        store.mount(child)
        store.umount(child)
        store.mount(leaf)
        store.umount(leaf, force=True)
        store.set_names(base, [f"base-{r}"])  # drops the alias...
        store.set_names(leaf, [f"alias-{r}" * (r + 1), f"leaf-{r}"])  # ...which moves to the leaf
        doomed = store.create(parent=leaf, names=[f"doomed-{r}"])
        store.mount(doomed)
        store.delete(doomed, force=True)
        if r % 2:
            store.delete(leaf)
            store.release(child, lease="x" * (10 * r + 1))


@pytest.fixture
def root(tmp_path: Path, monkeypatch) -> Path:
    """A store after ``workload`` and a recovery (a "reboot" resets the mounts and
    releases the holds of processes from before it)."""
    root = tmp_path / "store"
    with open_vfs(root) as store:
        workload(store)
        first = store.layers()[0].id
        store.hold(first, holder=Holder(pid=os.getpid(), start=1, boot="an-earlier-boot"))
        store.mount(first)
    monkeypatch.setenv("LAYERSTORE_BOOT_ID", "a-later-boot")
    with open_vfs(root) as store:
        types = {row[3] for row in store.index.history()}
        assert {"recovery-started", "mounts-reconciled", "recovery-finished"} <= types
    return root


def index_path(root: Path) -> Path:
    return root / "index.db"


def full_projection(root: Path, scratch: Path) -> dict:
    """The tables a projection from scratch makes, on a copy of the store."""
    copy = scratch / "fresh-projection"
    shutil.copytree(root, copy, symlinks=True)
    remove_index(index_path(copy))
    with open_vfs(copy):
        pass
    return dump_index_file(index_path(copy))


# --- the projection is the fold ---------------------------------------------------------------

def test_the_projection_equals_the_fold_of_the_log(root: Path):
    with open_vfs(root) as store:
        assert_read_models_equal_fold(store.index, fold_log(root))
        assert len(store.layers()) > 3


def test_the_projection_equals_the_fold_after_every_operation(tmp_path: Path):
    with open_vfs(tmp_path / "store") as store:
        operations = [
            lambda: store.create("a" * 64, names=["a"]),
            lambda: store.create("b" * 64, parent="a", names=["b"]),
            lambda: store.hold("a", lease="l"),
            lambda: store.mount("b"),
            lambda: store.set_names("b", ["a2", "b"]),
            lambda: store.umount("b"),
            lambda: store.delete("b"),
            lambda: store.create("c" * 64, parent="a", names=["b"]),
            lambda: store.release("a", lease="l"),
        ]
        for operation in operations:
            operation()
            assert_read_models_equal_fold(store.index, fold_log(store.root))


def test_history_has_one_row_per_event(root: Path):
    with EventLog.open(root, writer=False, create=False) as log:
        events = list(log.events())
    with open_vfs(root) as store:
        rows = list(store.index.history())
    assert [r[0] for r in rows] == [lsn for lsn, _ in events] == list(range(1, len(events) + 1))
    for (lsn, event), row in zip(events, rows):
        assert row[1:6] == (event.time, getattr(event, "layer", None), event.type_name, event.actor.pid,
                            event.actor.uid)
        assert row[4] == os.getpid()


def test_digest_queries_find_complete_layers_in_creation_order(tmp_path: Path):
    """Written into the log directly: content import is another module's job."""
    root = tmp_path / "store"
    diff, other, packed = ("sha256:" + c * 64 for c in "123")
    alive = this_process()  # the fourth layer's creator is alive: it is being created, and listed
    ids = [c * 64 for c in "abcd"]
    with EventLog.open(root) as log:
        for layer_id, diff_digest in zip(ids, [diff, other, diff, diff]):
            log.append(ev.stamp(ev.LayerCreated(layer=layer_id, driver="vfs", owner=alive)))
        for layer_id, diff_digest in zip(ids[:3], [diff, other, diff]):  # the fourth stays incomplete
            log.append(ev.stamp(ev.LayerCompleted(layer=layer_id, diff_digest=diff_digest,
                                                  compressed_digest=packed if layer_id == ids[2] else "")))
    with LayerStore.open(root, "vfs") as store:
        assert store.by_diff_digest(diff) == [ids[0], ids[2]]
        assert store.by_diff_digest(other) == [ids[1]]
        assert store.by_compressed_digest(packed) == [ids[2]]
        assert store.by_compressed_digest(diff) == []
        assert store.by_diff_digest("sha256:" + "9" * 64) == []
        assert_read_models_equal_fold(store.index, fold_log(root))


# --- rebuilding ---------------------------------------------------------------------------

def test_dropping_the_index_rebuilds_it_identically(root: Path):
    before = dump_index_file(index_path(root))
    lsn = last_lsn_on_disk(root)
    remove_index(index_path(root))
    with open_vfs(root) as store:
        assert dump_tables(store.index.conn) == before
        assert_read_models_equal_fold(store.index, fold_log(root))
    assert last_lsn_on_disk(root) == lsn


def test_rebuild_keeps_the_table_order_whatever_the_hash_seed(root: Path, tmp_path: Path):
    """Two rebuilds in processes with different string hashing make the same rows, in
    the same order (a rebuild must not depend on set or dict iteration order)."""
    incremental = dump_index_file(index_path(root))
    dumps = []
    for seed in ("1", "2"):
        copy = tmp_path / f"copy-{seed}"
        shutil.copytree(root, copy, symlinks=True)
        remove_index(index_path(copy))
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        code = f"from eventstore import open_store; open_store({str(copy)!r}, 'vfs').close()"
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        dumps.append(dump_index_file(index_path(copy)))
    assert dumps[0] == dumps[1] == incremental


def test_rebuild_index_in_place_is_identical(root: Path):
    with open_vfs(root) as store:
        before = dump_tables(store.index.conn)
        store.rebuild_index()
        assert dump_tables(store.index.conn) == before


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.33, 0.5, 0.9, 1.0])
def test_an_index_stopped_part_way_resumes_to_the_same_result(root: Path, tmp_path: Path, fraction: float):
    expected = full_projection(root, tmp_path)
    with EventLog.open(root, writer=False, create=False) as log:
        records = list(log.records())
        uuid = str(log.store_uuid)
    remove_index(index_path(root))
    partial = Index(index_path(root))
    cut = int(len(records) * fraction)
    # in two transactions, as a projection interrupted between commits would leave it
    partial.apply(records[: cut // 2], uuid)
    partial.apply(records[cut // 2: cut], uuid)
    assert partial.position() == (records[cut - 1].end if cut else None)
    partial.close()
    with open_vfs(root) as store:
        assert dump_tables(store.index.conn) == expected
        assert_read_models_equal_fold(store.index, fold_log(root))


def test_records_applied_twice_are_applied_once(root: Path, tmp_path: Path):
    expected = full_projection(root, tmp_path)
    with EventLog.open(root, writer=False, create=False) as log:
        records = list(log.records())
        uuid = str(log.store_uuid)
    remove_index(index_path(root))
    index = Index(index_path(root))
    half = len(records) // 2
    index.apply(records[:half], uuid)
    assert index.apply(records[:half], uuid) == 0
    index.apply(records[half // 2:], uuid)  # overlapping: the first quarter again
    assert dump_tables(index.conn) == expected
    index.close()


def test_an_index_ahead_of_the_log_means_the_log_lost_records(root: Path, tmp_path: Path):
    """The log goes back in time (its last records lost, or an old copy restored) while
    the read models have seen more: refused as corruption, never rebuilt from the
    shorter log (which would forget acknowledged layers), and nothing is changed."""
    saved_log = tmp_path / "saved-log"
    shutil.copytree(root / "log", saved_log)
    with open_vfs(root) as store:
        late = store.create(names=["from-the-future"])
        store.hold(late, lease="future")
        seen = store.log.last_lsn
    shutil.rmtree(root / "log")
    shutil.copytree(saved_log, root / "log")
    index_before = dump_index_file(index_path(root))
    with pytest.raises(LostRecords) as caught:
        open_vfs(root)
    assert (caught.value.first_lsn, caught.value.last_lsn) == (last_lsn_on_disk(root) + 1, seen)
    assert dump_index_file(index_path(root)) == index_before


@pytest.mark.parametrize("other_rounds", [1, 2, 3, 5])
def test_an_index_from_another_store_is_rebuilt(root: Path, tmp_path: Path, other_rounds: int):
    """Another store's index.db copied over ours: its position points anywhere in our
    log (between records, inside one, past the end); ours must open, unharmed."""
    other = tmp_path / "other"
    with open_vfs(other) as store:
        workload(store, rounds=other_rounds)
        store.create(names=["only-in-the-other-store"])
    expected = full_projection(root, tmp_path)
    lsn = last_lsn_on_disk(root)
    log_files = sorted(os.listdir(root / "log"))
    remove_index(index_path(root))
    shutil.copy(index_path(other), index_path(root))
    with open_vfs(root) as store:
        assert not store.exists("only-in-the-other-store")
        assert dump_tables(store.index.conn) == expected
        assert store.index.store_uuid == str(store.log.store_uuid)
    assert last_lsn_on_disk(root) == lsn  # not a byte of our log was cut
    assert sorted(os.listdir(root / "log")) == log_files
    with EventLog.open(root, writer=False, create=False) as log:
        report = log.verify()
    assert report.torn_tail is None and report.last_lsn == lsn


def test_an_index_of_another_store_at_the_same_offset_is_rebuilt(tmp_path: Path):
    """Two stores with byte-identical record sizes: the foreign position is a valid
    record boundary of ours, so only the store uuid tells them apart."""
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        with open_vfs(root) as store:
            store.create(names=[root.name[:5]])  # "first" and "secon": same length
    remove_index(index_path(first))
    shutil.copy(index_path(second), index_path(first))
    with open_vfs(first) as store:
        assert store.exists("first") and not store.exists("secon")
        assert_read_models_equal_fold(store.index, fold_log(first))


def test_an_index_of_another_store_pointing_into_our_last_record_cuts_nothing(tmp_path: Path):
    """The foreign position falls inside our last record, with nothing valid after it:
    just what a torn tail looks like. Our acknowledged record must stay."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root, lease in ((ours, "L" * 250), (theirs, "s")):
        with open_vfs(root) as store:
            store.create("a" * 64)  # same record sizes in both logs up to here
            store.hold("a" * 64, lease=lease)
    lsn = last_lsn_on_disk(ours)
    remove_index(index_path(ours))
    shutil.copy(index_path(theirs), index_path(ours))
    with open_vfs(ours) as store:
        assert store.lookup("a" * 64).holds == [Holder(lease="L" * 250)]
    assert last_lsn_on_disk(ours) == lsn
    assert sorted(os.listdir(ours / "log")) == sorted(os.listdir(theirs / "log"))


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_a_damaged_index_file_is_rebuilt(root: Path, tmp_path: Path, damage: str):
    expected = full_projection(root, tmp_path)
    path = index_path(root)
    data = path.read_bytes()
    remove_index(path)
    path.write_bytes({"garbage": b"not a database" * 512, "empty": b"", "truncated": data[:1536]}[damage])
    with open_vfs(root) as store:
        assert dump_tables(store.index.conn) == expected


def test_an_index_ahead_only_because_others_appended_is_kept(tmp_path: Path, monkeypatch):
    """Another process appends (and projects) between our reading the log and our
    looking at the index: the index is ahead of what we read, not of the log. Rebuilding
    it then would unlink a database other processes are writing to."""
    import eventstore.store

    root = tmp_path / "store"
    with open_vfs(root) as store:
        store.create(names=["a"])
    other = open_vfs(root)

    class LogWithARacingAppend(EventLog):
        @classmethod
        def open(cls, *args, **kwargs):
            log = EventLog.open(*args, **kwargs)
            other.create(names=["b"])  # lands after our read of the log, before our index check
            return log

    monkeypatch.setattr(eventstore.store, "EventLog", LogWithARacingAppend)
    inode = os.stat(index_path(root)).st_ino
    store = open_vfs(root)
    monkeypatch.undo()
    try:
        assert os.stat(index_path(root)).st_ino == inode
        store.create(names=["c"])
        assert store.exists("b") and other.exists("c")
        assert_read_models_equal_fold(other.index, fold_log(root))
    finally:
        store.close()
        other.close()


def test_the_schema_is_what_sqlite_utils_declares(tmp_path: Path):
    """The read models' DDL is written by hand (sqlite-utils' plugin scan cost every new
    store ~120 ms): the tables, their column types, primary keys and indexes are the
    ones sqlite-utils' declarative create makes from the same declaration."""
    import sqlite3

    import sqlite_utils

    from eventstore.index import INDEXES, TABLES

    with open_vfs(tmp_path / "store"):
        pass
    ours = sqlite_utils.Database(sqlite3.connect(tmp_path / "store" / "index.db"))
    theirs = sqlite_utils.Database(memory=True)
    python_types = {"TEXT": str, "INTEGER": int}
    for table, (pk, columns) in TABLES.items():
        theirs[table].create({name: python_types[kind] for name, kind in columns.items()}, pk=pk)
    for table, column in INDEXES:
        theirs[table].create_index([column])
    for table in TABLES:
        assert ours[table].columns == theirs[table].columns
        assert ours[table].pks == theirs[table].pks
        assert {(i.name, tuple(i.columns)) for i in theirs[table].indexes} <= \
            {(i.name, tuple(i.columns)) for i in ours[table].indexes}
    assert set(ours.table_names()) == set(TABLES)
