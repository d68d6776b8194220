"""The power-loss layer keeps exactly what was synced (drop), a part of the rest
(random), or all but a torn last write (torn)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventstore.fsutil import fsync_dir, sync_tree, write_atomic
from replay import powerloss


@pytest.fixture
def tracked(tmp_path: Path):
    """A root tracked from now on; ``lose_power()`` rewrites it to its durable image."""
    root = tmp_path / "root"
    root.mkdir()

    def start(mode: str = "drop", seed: int = 0) -> powerloss.Tracker:
        tracker = powerloss.Tracker(str(root), mode, seed)
        tracker.sync_all()
        powerloss.install(tracker)
        return tracker

    def lose_power(tracker: powerloss.Tracker) -> None:
        powerloss.uninstall()
        tracker.apply_image()

    yield root, start, lose_power
    powerloss.uninstall()


def write(path: Path, data: bytes, sync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_synced_file_in_synced_directory_survives(tracked):
    root, start, lose_power = tracked
    tracker = start()
    write(root / "a", b"durable", sync=True)
    fsync_dir(root)
    lose_power(tracker)
    assert (root / "a").read_bytes() == b"durable"


def test_unsynced_data_is_lost(tracked):
    root, start, lose_power = tracked
    tracker = start()
    write(root / "a", b"volatile")
    fsync_dir(root)
    lose_power(tracker)
    assert (root / "a").read_bytes() == b""


def test_new_entry_without_directory_sync_is_lost(tracked):
    root, start, lose_power = tracked
    tracker = start()
    write(root / "a", b"data", sync=True)
    lose_power(tracker)
    assert not (root / "a").exists()


def test_unsynced_overwrite_is_rolled_back(tracked):
    root, start, lose_power = tracked
    write(root / "a", b"old contents")
    tracker = start()  # everything there now is durable
    write(root / "a", b"new")
    lose_power(tracker)
    assert (root / "a").read_bytes() == b"old contents"


def test_unsynced_unlink_and_rename_come_back(tracked):
    root, start, lose_power = tracked
    write(root / "gone", b"was here")
    write(root / "target", b"old target")
    tracker = start()
    os.unlink(root / "gone")
    write(root / "tmp", b"replacement", sync=True)
    os.rename(root / "tmp", root / "target")
    lose_power(tracker)
    assert (root / "gone").read_bytes() == b"was here"
    assert (root / "target").read_bytes() == b"old target"
    assert not (root / "tmp").exists()


def test_atomic_write_is_durable_once_it_returns(tracked):
    root, start, lose_power = tracked
    tracker = start()
    write_atomic(root / "marker", b"vfs\n")
    lose_power(tracker)
    assert (root / "marker").read_bytes() == b"vfs\n"


def test_syncfs_makes_the_whole_tree_durable(tracked):
    root, start, lose_power = tracked
    tracker = start()
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f").write_bytes(b"deep")
    os.symlink("e/f", root / "d" / "link")
    sync_tree(root / "d")
    (root / "later").write_bytes(b"after the sync")
    lose_power(tracker)
    assert (root / "d" / "e" / "f").read_bytes() == b"deep"
    assert os.readlink(root / "d" / "link") == "e/f"
    assert not (root / "later").exists()


def test_removed_and_remade_directory_does_not_inherit_old_entries(tracked):
    root, start, lose_power = tracked
    (root / "d").mkdir()
    write(root / "d" / "old", b"old")
    tracker = start()
    for name in os.listdir(root / "d"):
        os.unlink(root / "d" / name)
    os.rmdir(root / "d")
    os.mkdir(root / "d")
    write(root / "d" / "new", b"new", sync=True)
    fsync_dir(root)  # the new directory's entry is durable, its contents are not
    lose_power(tracker)
    assert os.listdir(root / "d") == []


def test_a_reused_inode_number_is_another_file(tracked):
    root, start, lose_power = tracked
    write(root / "a", b"first file")
    tracker = start()
    os.unlink(root / "a")
    write(root / "b", b"second file", sync=True)  # may well get a's inode number
    lose_power(tracker)
    assert (root / "a").read_bytes() == b"first file"
    assert not (root / "b").exists()


def test_volatile_read_models_are_not_tracked(tracked):
    root, start, lose_power = tracked
    tracker = start()
    (root / "index.db").write_bytes(b"sqlite")
    fsync_dir(root)
    assert "index.db" not in tracker.dirs[""][1]


def test_torn_mode_tears_the_last_write_at_a_sector_boundary(tracked):
    root, start, lose_power = tracked
    write(root / "log", b"A" * 100)
    seen = set()
    for seed in range(12):
        write(root / "log", b"A" * 100)
        tracker = start("torn", seed)
        fd = os.open(root / "log", os.O_WRONLY)
        os.pwrite(fd, b"B" * 2000, 100)
        os.close(fd)
        lose_power(tracker)
        data = (root / "log").read_bytes()
        assert data[:100] == b"A" * 100
        kept = data[100:].rstrip(b"\0")
        assert kept == b"B" * len(kept)
        assert (100 + len(kept)) % 512 == 0 or not kept
        seen.add(len(data))
    assert len(seen) > 2  # different cuts, truncated or zero-filled


def test_random_mode_keeps_some_unsynced_sectors(tracked):
    root, start, lose_power = tracked
    outcomes = set()
    for seed in range(8):
        write(root / "f", bytes(4096))
        tracker = start("random", seed)
        write(root / "f", b"\xff" * 4096)
        lose_power(tracker)
        data = (root / "f").read_bytes()
        sectors = [data[i:i + 512] for i in range(0, len(data), 512)]
        assert all(s in (bytes(len(s)), b"\xff" * len(s)) for s in sectors)
        outcomes.add(data)
    assert len(outcomes) > 1
