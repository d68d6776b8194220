"""The btrfs driver: the contract on a loop-mounted btrfs, plus subvolumes, snapshots,
the read-only property, nested subvolumes, mounts inside a layer, and qgroups."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from eventstore import faults
from eventstore.drivers import btrfs_ioctl
from eventstore.drivers.btrfs import BtrfsDriver
from eventstore.errors import DriverError, ForeignMount
from tests.drivers.contract import DriverContract, kernel_mount_points, write_file


@pytest.fixture
def tmp_path(btrfs_tmp_path: Path) -> Path:
    """Every test here (the contract's included) works on the session's btrfs."""
    return btrfs_tmp_path


@pytest.fixture
def driver(tmp_path: Path) -> BtrfsDriver:
    reason = BtrfsDriver.supported(tmp_path / "btrfs")
    if reason is not None:
        pytest.skip(f"btrfs cannot run here: {reason}")
    return BtrfsDriver(tmp_path / "btrfs")


class TestBtrfsContract(DriverContract):
    metadata_keys = {"Dir", "SubvolumeID", "ReadOnly"}


def subvolume_id(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return btrfs_ioctl.subvolume_id(fd)
    finally:
        os.close(fd)


def make_subvolume(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        btrfs_ioctl.create_subvolume(fd, path.name)
    finally:
        os.close(fd)


# --- layout: subvolumes and snapshots ---------------------------------------------------

def test_every_layer_is_its_own_subvolume(driver: BtrfsDriver):
    driver.create("base", None, writable=False)
    driver.create("child", "base", writable=True)
    base, child = driver.diff_path("base"), driver.diff_path("child")
    assert base == driver.home / "subvolumes" / "base" == driver.mount_path("base")
    for path in (base, child):
        st = os.lstat(path)
        assert st.st_ino == btrfs_ioctl.FIRST_FREE_OBJECTID
        assert st.st_dev != os.lstat(path.parent).st_dev
    assert subvolume_id(base) != subvolume_id(child)
    assert driver.metadata("child")["SubvolumeID"] == str(subvolume_id(child))


def test_a_child_is_a_snapshot_of_its_parent_at_the_time(driver: BtrfsDriver):
    driver.create("base", None, writable=True)
    write_file(driver.diff_path("base") / "etc" / "hostname", b"base\n", mode=0o640)
    os.chown(driver.diff_path("base") / "etc" / "hostname", 1234, 5678)
    os.setxattr(driver.diff_path("base") / "etc" / "hostname", "trusted.kept", b"yes")
    driver.create("child", "base", writable=True)
    (driver.diff_path("base") / "etc" / "hostname").write_bytes(b"changed later\n")
    copied = driver.diff_path("child") / "etc" / "hostname"
    assert copied.read_bytes() == b"base\n"
    st = os.lstat(copied)
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert os.getxattr(copied, "trusted.kept") == b"yes"


def test_layers_are_made_and_removed_without_running_any_program(driver: BtrfsDriver, monkeypatch):
    def no_programs(*args, **kwargs):
        raise AssertionError(f"ran a program: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", no_programs)
    driver.create("base", None, writable=False)
    driver.create("child", "base", writable=True)
    driver.remove("child")
    driver.remove("base")
    assert driver.layers() == set()


# --- the read-only property -------------------------------------------------------------

def test_a_read_only_layer_is_frozen_when_its_first_child_is_made(driver: BtrfsDriver):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "f", b"content")  # still being filled: writable
    assert driver.metadata("base")["ReadOnly"] == "false"
    driver.create("child", "base", writable=True)
    assert driver.metadata("base")["ReadOnly"] == "true"
    with pytest.raises(OSError) as info:
        (driver.diff_path("base") / "f").write_bytes(b"changed")
    assert info.value.errno == errno.EROFS
    assert (driver.diff_path("base") / "f").read_bytes() == b"content"
    # the child is a writable snapshot of the frozen parent
    assert driver.metadata("child")["ReadOnly"] == "false"
    (driver.diff_path("child") / "f").write_bytes(b"child's")


def test_a_writable_parent_stays_writable(driver: BtrfsDriver):
    driver.create("container", None, writable=True)
    driver.create("snapshot", "container", writable=False)
    assert driver.metadata("container")["ReadOnly"] == "false"
    (driver.diff_path("container") / "still-writable").write_bytes(b"x")


def test_a_mark_left_by_an_earlier_layer_of_the_same_id_is_not_trusted(driver: BtrfsDriver):
    driver.create("base", None, writable=True)
    (driver.home / "read-only" / "reused").write_bytes(b"")  # a stale mark
    driver.create("reused", None, writable=True)
    driver.create("child", "reused", writable=True)
    assert driver.metadata("reused")["ReadOnly"] == "false"
    assert not (driver.home / "read-only" / "reused").exists()


def test_a_frozen_layer_and_its_mark_are_removed(driver: BtrfsDriver):
    driver.create("base", None, writable=False)
    driver.create("child", "base", writable=True)
    driver.remove("child")
    driver.remove("base")
    assert driver.layers() == set()
    assert os.listdir(driver.home / "read-only") == []


def test_a_mark_alone_is_listed_so_that_recovery_removes_it(driver: BtrfsDriver, armed):
    driver.create("base", None, writable=False)
    armed("driver.btrfs.remove.after-destroy", "eio@1")
    with pytest.raises(DriverError, match="base"):
        driver.remove("base")
    assert not driver.exists("base")
    assert driver.layers() == {"base"}  # the mark
    driver.remove("base")
    assert driver.layers() == set()


# --- removal: nested subvolumes, plain directories, mounts inside -----------------------

def test_subvolumes_made_inside_a_layer_are_removed_with_it(driver: BtrfsDriver):
    driver.create("base", None, writable=True)
    top = driver.diff_path("base")
    write_file(top / "var" / "lib" / "keep", b"x")
    make_subvolume(top / "var" / "lib" / "nested")
    write_file(top / "var" / "lib" / "nested" / "data", b"y")
    make_subvolume(top / "var" / "lib" / "nested" / "deeper")
    make_subvolume(top / "second")
    driver.remove("base")
    assert not top.exists() and driver.layers() == set()


def test_a_read_only_layer_holding_a_subvolume_is_removed(driver: BtrfsDriver):
    driver.create("base", None, writable=False)
    make_subvolume(driver.diff_path("base") / "nested")
    driver.create("child", "base", writable=True)  # freezes base
    driver.remove("child")
    driver.remove("base")
    assert driver.layers() == set()


def test_a_plain_directory_where_a_subvolume_belongs_is_removed(driver: BtrfsDriver):
    driver.create("base", None, writable=True)
    write_file(driver.home / "subvolumes" / "plain" / "sub" / "f", b"x")
    assert driver.layers() == {"base", "plain"}
    driver.remove("plain")
    assert driver.layers() == {"base"}


def test_remove_refuses_to_cross_a_mount_inside_the_layer_and_names_it(driver: BtrfsDriver):
    driver.create("base", None, writable=True)
    proc = driver.mount("base") / "proc"
    proc.mkdir()
    write_file(driver.diff_path("base") / "etc" / "kept", b"x")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(proc)], check=True)
    try:
        (proc / "inside-the-mount").write_bytes(b"not the layer's")
        with pytest.raises(ForeignMount, match="base: .* is mounted inside it") as refused:
            driver.remove("base")
        assert refused.value.mount_point == os.path.realpath(proc)
        assert (driver.diff_path("base") / "etc" / "kept").read_bytes() == b"x"
        assert (proc / "inside-the-mount").read_bytes() == b"not the layer's"
    finally:
        subprocess.run(["umount", str(proc)], check=True)
    driver.remove("base")
    assert not driver.exists("base")
    assert os.path.realpath(proc) not in kernel_mount_points()


# --- failpoints ------------------------------------------------------------------------------

@pytest.fixture
def armed():
    yield faults.arm
    faults.disarm()


def test_a_create_failing_after_the_subvolume_leaves_nothing(driver: BtrfsDriver, armed):
    driver.create("base", None, writable=False)
    armed("driver.btrfs.create.after-subvolume", "eio")
    with pytest.raises(DriverError, match="child"):
        driver.create("child", "base", writable=False)
    assert driver.layers() == {"base"}


# --- fs info -----------------------------------------------------------------------------------

def test_without_quotas_fs_info_is_a_walk(driver: BtrfsDriver):
    driver.create("base", None, writable=True)
    write_file(driver.diff_path("base") / "blob", os.urandom(256 * 1024))
    driver.create("child", "base", writable=True)
    # the walk counts the shared blob in the child too (as vfs counts its copy)
    assert driver.fs_info("child").used_bytes >= 256 * 1024


def test_with_quotas_fs_info_counts_what_no_other_layer_shares(tmp_path: Path):
    from replay.loopfs import loop_btrfs

    with loop_btrfs("512m") as fs:
        subprocess.run(["btrfs", "quota", "enable", str(fs)], check=True, capture_output=True)
        driver = BtrfsDriver(fs / "btrfs")
        driver.create("base", None, writable=False)
        write_file(driver.diff_path("base") / "blob", os.urandom(1 << 20))
        assert driver.fs_info("base").used_bytes >= 1 << 20
        driver.create("child", "base", writable=True)
        shared = driver.fs_info("child")
        assert shared.used_bytes < 256 * 1024  # the blob is the parent's, shared
        write_file(driver.diff_path("child") / "own", os.urandom(512 * 1024))
        own = driver.fs_info("child")
        assert own.used_bytes >= shared.used_bytes + 512 * 1024
        assert own.inodes_used == shared.inodes_used + 1
        # exclusive: what deleting the layer would free; the child shares the blob now
        assert driver.fs_info("base").used_bytes < 256 * 1024
        driver.remove("child")
        driver.remove("base")


# --- supported ---------------------------------------------------------------------------------

def test_supported_says_why_not_off_btrfs(tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("not-btrfs")
    reason = BtrfsDriver.supported(elsewhere / "btrfs")
    assert reason is not None and "is not on btrfs" in reason and str(elsewhere) in reason


def test_supported_says_why_not_without_root(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in BtrfsDriver.supported(tmp_path / "btrfs")
