"""The power-loss layer on btrfs: subvolumes are part of the tracked tree (each has its
own st_dev, and inode numbers repeat across them), while real mounts are not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from eventstore.drivers import btrfs_ioctl
from eventstore.fsutil import fsync_dir, sync_tree
from replay import powerloss


@pytest.fixture
def tmp_path(btrfs_tmp_path: Path) -> Path:
    return btrfs_tmp_path


@pytest.fixture
def tracked(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    tracker = powerloss.Tracker(str(root), "drop", 0)
    tracker.sync_all()
    powerloss.install(tracker)
    yield root, tracker
    powerloss.uninstall()


def subvolume(path: Path) -> Path:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        btrfs_ioctl.create_subvolume(fd, path.name)
    finally:
        os.close(fd)
    return path


def lose_power(tracker: powerloss.Tracker) -> None:
    powerloss.uninstall()
    tracker.apply_image()


def test_synced_files_in_subvolumes_survive_and_unsynced_ones_do_not(tracked):
    root, tracker = tracked
    first, second = subvolume(root / "first"), subvolume(root / "second")
    for sub in (first, second):  # the same inode numbers in both: 257, 258, ...
        (sub / "a").write_bytes(sub.name.encode())
    sync_tree(root)
    (first / "a").write_bytes(b"unsynced change")
    (second / "late").write_bytes(b"unsynced file")
    lose_power(tracker)
    assert (first / "a").read_bytes() == b"first"
    assert (second / "a").read_bytes() == b"second"
    assert not (second / "late").exists()
    assert os.lstat(first).st_ino == btrfs_ioctl.FIRST_FREE_OBJECTID  # still a subvolume


def test_an_fsync_inside_a_subvolume_counts(tracked):
    root, tracker = tracked
    sub = subvolume(root / "sub")
    sync_tree(root)
    fd = os.open(sub / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.close(fd)
    fsync_dir(sub)
    lose_power(tracker)
    assert (sub / "synced").read_bytes() == b"durable"


def test_a_subvolume_made_after_the_last_sync_is_lost(tracked):
    root, tracker = tracked
    sub = subvolume(root / "new")
    (sub / "f").write_bytes(b"x")
    lose_power(tracker)
    assert not os.path.lexists(sub)


def test_a_real_mount_inside_the_root_is_not_tracked(tracked):
    root, tracker = tracked
    (root / "mnt").mkdir()
    sync_tree(root)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "mnt")], check=True)
    try:
        (root / "mnt" / "on-the-tmpfs").write_bytes(b"not ours")
        sync_tree(root)
        assert tracker.dirs[""][1]["mnt"].key is None  # a mount point, known by path
        assert "mnt" not in tracker.dirs  # and nothing below it was recorded
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=True)
