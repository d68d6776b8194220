"""Checkpoints: taken every N events and on demand, written atomically, and never trusted
when damaged: whatever is in the checkpoint directory, ``load_state`` equals the fold of
the whole log."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from eventstore import checkpoint
from eventstore.log.format import crc32c
from eventstore.errors import LostRecords
from eventstore.opener import open_store
from eventstore.store import LayerStore
from replay.audit import state_at
from replay.verify import check
from tests.recovery.support import (
    CRASH_EXIT_CODE,
    as_data,
    cli_ok,
    fold_until,
    child_env,
    run_cli,
    run_python,
    workload,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def files(root: Path) -> list[str]:
    directory = root / "checkpoints"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def assert_checkpoint_is_the_fold(store, ckpt: checkpoint.Checkpoint) -> None:
    assert as_data(ckpt.state) == as_data(fold_until(store, ckpt.lsn))
    assert ckpt.position.lsn == ckpt.lsn + 1


# --- when they are taken ------------------------------------------------------------------


def test_a_checkpoint_is_taken_every_interval_events(root: Path):
    with open_store(root, "vfs") as store:
        store.checkpoint_interval = 5
        taken = set()
        for _ in range(4):
            ids = workload(store)
            for layer_id in ids.values():
                if store.exists(layer_id):
                    store.hold(layer_id)
            newest = checkpoint.newest(root, store.log)
            assert newest is not None and store.log.last_lsn - newest.lsn < store.checkpoint_interval
            assert_checkpoint_is_the_fold(store, newest)
            taken.add(newest.lsn)
        assert len(taken) == 4
        assert len(files(root)) == checkpoint.KEEP  # older ones pruned


def test_no_checkpoint_before_the_interval(root: Path):
    with open_store(root, "vfs") as store:
        workload(store)
        assert store.log.last_lsn < store.checkpoint_interval
    assert files(root) == []


def test_checkpoint_command_writes_the_state_now(root: Path):
    with open_store(root, "vfs") as store:
        workload(store)
        last = store.log.last_lsn
    path = Path(cli_ok(root, "checkpoint").strip())
    assert path.parent == root / "checkpoints"
    with open_store(root) as store:
        ckpt = checkpoint.read(path, store.log.store_uuid)
        assert isinstance(ckpt, checkpoint.Checkpoint) and ckpt.lsn == last
        assert_checkpoint_is_the_fold(store, ckpt)


# --- written atomically -----------------------------------------------------------------------


def two_checkpoints(root: Path) -> list[str]:
    with open_store(root, "vfs") as store:
        store.create()
        store.checkpoint()
        store.create()
        store.checkpoint()
        store.create()
    return files(root)


def test_a_checkpoint_killed_before_its_write_leaves_nothing(root: Path):
    before = two_checkpoints(root)
    result = run_cli(root, "checkpoint", env=child_env("checkpoint.before-write=crash"))
    assert result.returncode == CRASH_EXIT_CODE
    assert files(root) == before


def test_a_checkpoint_killed_after_its_rename_is_whole_and_the_next_prunes(root: Path):
    before = two_checkpoints(root)
    result = run_cli(root, "checkpoint", env=child_env("checkpoint.after-write=crash"))
    assert result.returncode == CRASH_EXIT_CODE
    now = files(root)
    assert len(now) == len(before) + 1 and now[:-1] == before  # the old ones not yet pruned
    with open_store(root) as store:
        newest = checkpoint.newest(root, store.log)
        assert newest.path.endswith(now[-1]) and newest.lsn == store.log.last_lsn
        store.create()
        store.checkpoint()
    assert len(files(root)) == checkpoint.KEEP


KILLED_BEFORE_THE_RENAME = """
import os, sys
from eventstore import open_store
store = open_store(sys.argv[1])
store.create()
os.rename = lambda *args: os._exit(137)  # the temp file is written and fsync'd: die here
store.checkpoint()
"""


def test_a_temp_file_left_by_a_crash_before_the_rename_is_ignored_then_removed(root: Path):
    before = two_checkpoints(root)
    assert run_python(KILLED_BEFORE_THE_RENAME, str(root)).returncode == CRASH_EXIT_CODE
    leftovers = [name for name in files(root) if name not in before]
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0]
    with open_store(root) as store:
        assert as_data(checkpoint.load_state(root, store.log)) == as_data(fold_until(store, store.log.last_lsn))
        store.checkpoint()
    assert not [name for name in files(root) if ".tmp-" in name]


# --- damaged: skipped, never trusted ---------------------------------------------------------


def rewrite(path: Path, edit) -> None:
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(edit(data)))


def with_crc(data: bytearray) -> bytearray:
    data[-4:] = struct.pack("<I", crc32c(bytes(data[:-4])))
    return data


def flip_body_byte(path: Path, other: Path) -> None:
    rewrite(path, lambda d: d[:40] + bytes([d[40] ^ 0x01]) + d[41:])


def flip_magic(path: Path, other: Path) -> None:
    rewrite(path, lambda d: bytes([d[0] ^ 0xFF]) + d[1:])


def flip_checksum(path: Path, other: Path) -> None:
    rewrite(path, lambda d: d[:-1] + bytes([d[-1] ^ 0x80]))


def truncate_half(path: Path, other: Path) -> None:
    rewrite(path, lambda d: d[: len(d) // 2])


def truncate_to_nothing(path: Path, other: Path) -> None:
    path.write_bytes(b"")


def unknown_version(path: Path, other: Path) -> None:
    rewrite(path, lambda d: with_crc(d[:8] + struct.pack("<I", 99) + d[12:]))


def from_another_store(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)


def renamed_to_an_older_lsn(path: Path, other: Path) -> None:
    # a name that claims LSN 1: a question about LSN 1.. would pick it
    path.rename(path.with_name(f"{1:016d}.ckpt"))


DAMAGE = [flip_body_byte, flip_magic, flip_checksum, truncate_half, truncate_to_nothing, unknown_version,
          from_another_store, renamed_to_an_older_lsn]


def store_with_checkpoints(root: Path, interval: int) -> None:
    with open_store(root, "vfs") as store:
        store.checkpoint_interval = interval
        workload(store)
        workload(store)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_skipped_and_the_state_is_the_full_fold(tmp_path: Path, root: Path, damage):
    store_with_checkpoints(root, interval=9)
    store_with_checkpoints(tmp_path / "other", interval=9)
    newest_path = root / "checkpoints" / files(root)[-1]
    other_path = tmp_path / "other" / "checkpoints" / files(tmp_path / "other")[-1]
    assert newest_path.name == other_path.name  # same workload, same LSNs
    damage(newest_path, other_path)

    with open_store(root) as store:
        skipped: list[str] = []
        state = checkpoint.load_state(root, store.log, skipped)
        assert as_data(state) == as_data(fold_until(store, store.log.last_lsn))
        if damage is not renamed_to_an_older_lsn:
            assert len(skipped) == 1 and skipped[0].startswith(newest_path.name)
        for lsn in range(store.log.last_lsn + 1):
            assert as_data(state_at(store, lsn)) == as_data(fold_until(store, lsn)), f"state at LSN {lsn}"
        assert check(store) == []


def test_a_checkpoint_beyond_the_end_of_the_log_means_lost_records(tmp_path: Path, root: Path):
    """A log restored from a backup, with the checkpoints of its later life still there:
    the log lost acknowledged records. Refused (exit 4), never rebuilt from the shorter log."""
    with open_store(root, "vfs") as store:
        workload(store)
    shutil.copytree(root / "log", tmp_path / "log-backup")
    with open_store(root) as store:
        workload(store)
        store.checkpoint()
        seen = store.log.last_lsn
    shutil.rmtree(root / "log")
    shutil.copytree(tmp_path / "log-backup", root / "log")
    os.unlink(root / "index.db")

    with pytest.raises(LostRecords) as caught:
        LayerStore.open(root)
    assert caught.value.last_lsn == seen
    assert run_cli(root, "layers").returncode == 4


def test_a_checkpoint_of_another_history_is_skipped(tmp_path: Path, root: Path):
    """A log restored from a backup that then grew again: the checkpoint taken in the
    lost history names a last record the log does not have."""
    with open_store(root, "vfs") as store:
        workload(store)
    shutil.copytree(root / "log", tmp_path / "log-backup")
    with open_store(root) as store:
        workload(store)
        store.checkpoint()
    shutil.rmtree(root / "log")
    shutil.copytree(tmp_path / "log-backup", root / "log")
    os.unlink(root / "index.db")
    for path in (root / "checkpoints").iterdir():  # keep its LSN reachable: grow the restored log
        lsn = int(path.stem)
    shutil.move(str(root / "checkpoints"), str(tmp_path / "checkpoints"))
    with open_store(root) as store:
        while store.log.last_lsn < lsn:
            store.create()
    shutil.move(str(tmp_path / "checkpoints"), str(root / "checkpoints"))
    with LayerStore.open(root) as store:
        skipped: list[str] = []
        state = checkpoint.load_state(root, store.log, skipped)
        assert as_data(state) == as_data(fold_until(store, store.log.last_lsn))
        assert any("another history" in s for s in skipped)
