"""The vfs driver: the contract, plus what a full copy must keep."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eventstore import faults
from eventstore.drivers.vfs import VfsDriver
from eventstore.errors import DriverError
from tests.drivers.contract import DriverContract, write_file


@pytest.fixture
def driver(tmp_path: Path) -> VfsDriver:
    return VfsDriver(tmp_path / "vfs")


class TestVfsContract(DriverContract):
    metadata_keys = {"Dir"}


def test_layers_live_in_home_dir(driver: VfsDriver):
    driver.create("base", None, writable=True)
    assert driver.diff_path("base") == driver.home / "dir" / "base"
    assert driver.mount_path("base") == driver.diff_path("base")
    assert driver.metadata("base") == {"Dir": str(driver.home / "dir" / "base")}


def test_is_mounted_means_the_directory_exists(driver: VfsDriver):
    assert not driver.is_mounted("base")
    driver.create("base", None, writable=True)
    assert driver.is_mounted("base")
    driver.remove("base")
    assert not driver.is_mounted("base")


def test_a_child_is_a_copy_not_a_view(driver: VfsDriver):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "f", b"before")
    driver.create("child", "base", writable=True)
    (driver.diff_path("base") / "f").write_bytes(b"after")
    assert (driver.diff_path("child") / "f").read_bytes() == b"before"


@pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and trusted xattrs need root")
def test_the_copy_keeps_owners_modes_times_xattrs_links_and_devices(driver: VfsDriver):
    driver.create("base", None, writable=False)
    base = driver.diff_path("base")
    data = write_file(base / "etc" / "secret", b"s3cret", mode=0o640)
    os.chown(data, 1234, 5678)
    os.setxattr(data, "user.origin", b"base")
    os.setxattr(data, "trusted.overlay.opaque", b"y")
    os.utime(data, ns=(1_000_000_000_000_000_000, 1_500_000_000_123_456_789))
    os.link(data, base / "etc" / "secret-again")
    os.symlink("secret", base / "etc" / "link-to-secret")
    os.mknod(base / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(base / "pipe")

    driver.create("child", "base", writable=True)
    child = driver.diff_path("child")
    copied = os.lstat(child / "etc" / "secret")
    original = os.lstat(data)
    assert (copied.st_mode, copied.st_uid, copied.st_gid) == (original.st_mode, 1234, 5678)
    assert copied.st_mtime_ns == original.st_mtime_ns
    assert os.getxattr(child / "etc" / "secret", "user.origin") == b"base"
    assert os.getxattr(child / "etc" / "secret", "trusted.overlay.opaque") == b"y"
    again = os.lstat(child / "etc" / "secret-again")
    assert again.st_ino == copied.st_ino != original.st_ino
    assert copied.st_nlink == 2
    assert os.readlink(child / "etc" / "link-to-secret") == "secret"
    device = os.lstat(child / "null")
    assert stat.S_ISCHR(device.st_mode) and device.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(child / "pipe").st_mode)


def test_a_copy_failing_half_way_leaves_no_half_made_layer(driver: VfsDriver, tmp_path: Path, monkeypatch):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "f", b"x")
    # a cp that makes part of the target and then fails, as a full disk would
    fake_bin = tmp_path / "bin"
    script = b'#!/bin/sh\nfor t; do :; done\nmkdir -p "$t" && touch "$t/partial"\necho "cp: disk full" >&2\nexit 1\n'
    write_file(fake_bin / "cp", script, 0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    with pytest.raises(DriverError, match="child.*disk full"):
        driver.create("child", "base", writable=True)
    assert driver.layers() == {"base"}


def test_a_missing_cp_is_a_driver_error(driver: VfsDriver, monkeypatch):
    driver.create("base", None, writable=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DriverError, match="child"):
        driver.create("child", "base", writable=True)
    assert driver.layers() == {"base"}


@pytest.fixture
def armed():
    yield faults.arm
    faults.disarm()


def test_a_failure_after_the_copy_removes_the_copy(driver: VfsDriver, armed):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "f", b"x")
    armed("driver.vfs.create.after-copy", "eio")
    with pytest.raises(DriverError, match="child"):
        driver.create("child", "base", writable=True)
    assert driver.layers() == {"base"}


def test_layers_skips_stray_files_and_names_no_layer_can_have(driver: VfsDriver):
    driver.create("base", None, writable=True)
    (driver.home / "dir" / "stray-file").write_text("not a layer")
    (driver.home / "dir" / "bad\nname").mkdir()
    assert driver.layers() == {"base"}
