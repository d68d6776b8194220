"""``eventstore.removal.remove_tree``: a recursive delete that never leaves its own
mount and never follows a symlink, whatever is planted in the tree or mounted into
it before or during the walk."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from eventstore import removal
from eventstore.errors import ForeignMount, StorageError
from eventstore.removal import remove_tree

from .support import bind_mount, listing, make_volume, tmpfs_mount


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    return make_volume(tmp_path / "outside")


def test_a_tree_of_files_links_and_directories_goes(tmp_path: Path, outside: Path):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_bytes(b"x")
    (tree / "empty").mkdir()
    os.symlink(outside, tree / "to-outside")  # a symlink is unlinked, never followed
    os.symlink(outside / "precious", tree / "a" / "to-file")
    os.mkfifo(tree / "fifo")
    before = listing(outside)
    remove_tree(tree)
    assert not os.path.lexists(tree)
    assert listing(outside) == before


def test_a_missing_tree_is_fine_and_a_symlink_in_its_place_is_only_unlinked(tmp_path: Path, outside: Path):
    remove_tree(tmp_path / "never-there")
    os.symlink(outside, tmp_path / "tree")
    before = listing(outside)
    remove_tree(tmp_path / "tree")
    assert not os.path.lexists(tmp_path / "tree") and listing(outside) == before


def test_a_bind_mount_deep_inside_is_refused_before_anything_is_removed(tmp_path: Path, outside: Path):
    tree = tmp_path / "tree"
    (tree / "x" / "y" / "mnt").mkdir(parents=True)
    (tree / "first-file").write_bytes(b"1")
    bind_mount(outside, tree / "x" / "y" / "mnt")
    tree_before, outside_before = listing(tree), listing(outside)
    with pytest.raises(ForeignMount) as caught:
        remove_tree(tree)
    assert caught.value.mount_point == str(tree / "x" / "y" / "mnt")
    assert listing(tree) == tree_before and listing(outside) == outside_before


def test_a_mount_made_during_the_walk_stops_it_there(tmp_path: Path, outside: Path, monkeypatch):
    # the mount table is read before the walk; a mount made after that is met by the
    # walk itself, by mount id (a bind mount of the same filesystem has the same st_dev)
    tree = tmp_path / "tree"
    (tree / "mnt").mkdir(parents=True)
    bind_mount(outside, tree / "mnt")
    monkeypatch.setattr(removal, "mounts_under", lambda path: [])
    before = listing(outside)
    with pytest.raises(ForeignMount, match="mount point"):
        remove_tree(tree)
    assert listing(outside) == before


def test_a_tmpfs_in_place_of_the_tree_itself_is_refused(tmp_path: Path, monkeypatch):
    tree = tmp_path / "tree"
    tree.mkdir()
    tmpfs_mount(tree)
    (tree / "file").write_bytes(b"tmpfs")
    with pytest.raises(ForeignMount):
        remove_tree(tree)
    monkeypatch.setattr(removal, "mounts_under", lambda path: [])
    with pytest.raises(ForeignMount):
        remove_tree(tree)
    assert (tree / "file").read_bytes() == b"tmpfs"


def test_a_file_bind_mounted_over_a_file_is_refused(tmp_path: Path, outside: Path, monkeypatch):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "passwd").write_bytes(b"")
    bind_mount(outside / "precious", tree / "passwd")
    monkeypatch.setattr(removal, "mounts_under", lambda path: [])
    with pytest.raises(ForeignMount):
        remove_tree(tree)
    assert (outside / "precious").read_bytes() == b"keep me\n"


def test_a_tree_deeper_than_the_fd_limit_goes(tmp_path: Path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        tree = tmp_path / "tree"
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:  # 600 levels, made fd by fd (the path is longer than PATH_MAX)
            os.mkdir("tree", dir_fd=fd)
            for _ in range(600):
                next_fd = os.open("tree" if _ == 0 else "d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = next_fd
                os.mkdir("d", dir_fd=fd)
                with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                    f.write(b"x")
        finally:
            os.close(fd)
        remove_tree(tree)
        assert not tree.exists()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_directory_moved_away_during_the_walk_stops_it(tmp_path: Path, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real_scan = removal._Walk._scan

    def scan_then_move(walk):
        real_scan(walk)
        if walk.stack[-1].name == "b":  # inside tree/a/b: move tree/a out from under the walk
            os.rename(tree / "a", elsewhere / "a")

    monkeypatch.setattr(removal._Walk, "_scan", scan_then_move)
    with pytest.raises(StorageError, match="moved"):
        remove_tree(tree)
    assert (elsewhere / "a").is_dir()  # what moved was not removed from its new place


def test_every_unlink_and_rmdir_goes_through_os_at_call_time(tmp_path: Path, monkeypatch):
    # replay/powerloss.py interposes os.unlink/os.rmdir/os.open/os.fsync for its
    # power-loss simulation: the removal must call them through the os module
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"x")
    calls = []
    for name in ("unlink", "rmdir", "fsync"):
        real = getattr(os, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(os, name, spy)
    remove_tree(tree)
    assert calls == ["unlink", "rmdir", "rmdir", "fsync"]
