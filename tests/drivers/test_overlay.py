"""The overlay driver: the contract, plus the layout, real kernel mounts, long chains,
busy unmounts. Skipped, with the reason, where overlay cannot mount."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from eventstore import faults, mountapi
from eventstore.drivers import overlay
from eventstore.drivers.overlay import MAX_DEPTH, OPTIONS_LIMIT, OverlayDriver
from eventstore.mounts import mount_table
from eventstore.errors import DriverError
from tests.drivers.contract import (
    DriverContract,
    kernel_mount_points,
    unmount_everything_under,
    write_file,
)


def _overlay_driver(home: Path, **kwargs) -> OverlayDriver:
    reason = OverlayDriver.supported(home)
    if reason is not None:
        pytest.skip(f"overlay cannot run here: {reason}")
    return OverlayDriver(home, **kwargs)


@pytest.fixture
def driver(tmp_path: Path) -> OverlayDriver:
    return _overlay_driver(tmp_path / "overlay")


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


class TestOverlayContract(DriverContract):
    metadata_keys = {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}


def kernel_mount_entry(path: Path) -> tuple[str, str] | None:
    """(fstype, super options) of the mount on ``path``, read from mountinfo here,
    independently of the driver's parser."""
    wanted = os.path.realpath(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, tail = line.rstrip("\n").partition(" - ")
            if fields.split(" ")[4] == wanted:
                fstype, _source, options = tail.split(" ", 2)
                return fstype, options
    return None


def chain(driver: OverlayDriver, count: int) -> list[str]:
    """``count`` layers, each the child of the one before; layer i holds file layer-i."""
    ids = [f"layer{i:03d}" for i in range(count)]
    for i, layer_id in enumerate(ids):
        driver.create(layer_id, ids[i - 1] if i else None, writable=False)
        write_file(driver.diff_path(layer_id) / f"layer-{i}", str(i).encode())
    return ids


# --- layout --------------------------------------------------------------------------

def test_a_base_layer_has_diff_work_merged_empty_link_and_no_lower(driver: OverlayDriver):
    driver.create("base", None, writable=True)
    layer = driver.home / "base"
    for sub in ("diff", "work", "merged", "empty"):
        assert (layer / sub).is_dir()
    assert not (layer / "lower").exists()
    short = (layer / "link").read_text()
    assert re.fullmatch(r"[A-Z0-9]{26}", short)
    assert os.readlink(driver.home / "l" / short) == "../base/diff"
    assert (driver.home / "l" / short).resolve() == (layer / "diff").resolve()


def test_lower_lists_the_parents_short_links_nearest_first(driver: OverlayDriver):
    ids = chain(driver, 3)
    short = {i: (driver.home / i / "link").read_text() for i in ids}
    assert (driver.home / ids[1] / "lower").read_text() == f"l/{short[ids[0]]}"
    assert (driver.home / ids[2] / "lower").read_text() == f"l/{short[ids[1]]}:l/{short[ids[0]]}"


def test_metadata_names_the_parents_diff_dirs(driver: OverlayDriver):
    ids = chain(driver, 3)
    home = driver.home
    assert driver.metadata(ids[0])["LowerDir"] == ""
    assert driver.metadata(ids[2]) == {
        "LowerDir": f"{home}/{ids[1]}/diff:{home}/{ids[0]}/diff",
        "UpperDir": f"{home}/{ids[2]}/diff",
        "WorkDir": f"{home}/{ids[2]}/work",
        "MergedDir": f"{home}/{ids[2]}/merged",
    }


def test_remove_deletes_the_short_link_too(driver: OverlayDriver):
    driver.create("base", None, writable=True)
    short = (driver.home / "base" / "link").read_text()
    driver.remove("base")
    assert not os.path.lexists(driver.home / "l" / short)
    assert os.listdir(driver.home / "l") == []


def test_layers_skips_the_link_dir_and_stray_files_but_lists_half_made_dirs(driver: OverlayDriver):
    driver.create("base", None, writable=True)
    (driver.home / "stray-file").write_text("not a layer")
    (driver.home / "half-made").mkdir()  # a crash right after mkdir in create
    assert driver.layers() == {"base", "half-made"}
    driver.remove("half-made")
    assert driver.layers() == {"base"}


def test_a_layer_cannot_be_named_after_the_link_dir(driver: OverlayDriver):
    with pytest.raises(DriverError, match="link directory"):
        driver.create("l", None, writable=True)


@pytest.mark.parametrize("new_mount_api", [False, True], ids=["mount(2)", "new-mount-api"])
def test_a_chain_deeper_than_the_limit_is_refused(tmp_path: Path, new_mount_api: bool):
    if new_mount_api and not mountapi.available():
        pytest.skip("the kernel has no fsconfig lowerdir+ (Linux 6.8+)")
    driver = _overlay_driver(tmp_path / "overlay", new_mount_api=new_mount_api)
    assert driver.max_depth == (mountapi.OVERLAY_MAX_STACK if new_mount_api else MAX_DEPTH)
    ids = chain(driver, driver.max_depth + 1)  # the top one has max_depth parents: allowed
    with pytest.raises(DriverError, match="too-deep"):
        driver.create("too-deep", ids[-1], writable=True)
    assert not driver.exists("too-deep")
    merged = driver.mount(ids[-1])  # the deepest allowed chain still mounts, whole
    assert (merged / "layer-0").read_bytes() == b"0"
    assert len([n for n in os.listdir(merged) if n.startswith("layer-")]) == driver.max_depth + 1
    driver.unmount(ids[-1])


# --- real mounts ---------------------------------------------------------------------

def test_a_mount_is_a_kernel_overlay_and_goes_away_on_unmount(driver: OverlayDriver):
    driver.create("base", None, writable=True)
    merged = driver.mount("base")
    entry = kernel_mount_entry(merged)
    assert entry is not None and entry[0] == "overlay"
    assert f"upperdir={driver.home}/base/diff" in entry[1]
    assert driver.is_mounted("base")
    driver.unmount("base")
    assert kernel_mount_entry(merged) is None
    assert not driver.is_mounted("base")


def test_unmount_peels_off_mounts_stacked_by_racing_mounters(driver: OverlayDriver, monkeypatch):
    driver.create("base", None, writable=True)
    with monkeypatch.context() as patched:
        patched.setattr(driver, "is_mounted", lambda layer_id: False)  # both racers saw "not mounted"
        merged = driver.mount("base")
        driver.mount("base")
    assert kernel_mount_points().count(os.path.realpath(merged)) == 2
    driver.unmount("base")
    assert os.path.realpath(merged) not in kernel_mount_points()


def test_a_file_written_through_merged_lands_in_diff(driver: OverlayDriver):
    driver.create("base", None, writable=False)
    driver.create("child", "base", writable=True)
    merged = driver.mount("child")
    write_file(merged / "var" / "log" / "app.log", b"started\n")
    assert (driver.diff_path("child") / "var" / "log" / "app.log").read_bytes() == b"started\n"
    assert not (driver.diff_path("base") / "var").exists()


def test_deleting_a_parents_file_through_the_mount_leaves_a_kernel_whiteout(driver: OverlayDriver):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "etc" / "motd", b"hello")
    driver.create("child", "base", writable=True)
    merged = driver.mount("child")
    (merged / "etc" / "motd").unlink()
    whiteout = os.lstat(driver.diff_path("child") / "etc" / "motd")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert (driver.diff_path("base") / "etc" / "motd").exists()


def test_a_whiteout_in_a_child_hides_the_parents_file(driver: OverlayDriver):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "gone", b"x")
    write_file(driver.diff_path("base") / "kept", b"y")
    driver.create("child", "base", writable=True)
    os.mknod(driver.diff_path("child") / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    merged = driver.mount("child")
    assert sorted(os.listdir(merged)) == ["kept"]


def test_is_mounted_reads_escaped_paths_in_mountinfo(tmp_path: Path):
    # mountinfo writes space as \040 and backslash as \134; comma and colon must be
    # escaped in the mount options themselves
    driver = _overlay_driver(tmp_path / "home with space, comma:colon\\back")
    driver.create("base", None, writable=True)
    driver.create("child", "base", writable=True)
    write_file(driver.diff_path("base") / "f", b"x")
    assert not driver.is_mounted("child")
    merged = driver.mount("child")
    assert driver.is_mounted("child")
    assert (merged / "f").read_bytes() == b"x"
    driver.unmount("child")
    assert not driver.is_mounted("child")


def test_mount_points_undoes_octal_escapes(tmp_path: Path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_bytes(b"36 35 98:0 / /mnt/a\\040b\\134c\\011d rw - ext3 /dev/root rw\n")
    assert [m.point for m in mount_table(str(mountinfo))] == ["/mnt/a b\\c\td"]


def test_a_chain_of_100_layers_mounts_through_relative_paths(tmp_path: Path):
    driver = _overlay_driver(tmp_path / "overlay", new_mount_api=False)  # the mount(2) fallback
    ids = chain(driver, 100)
    top = ids[-1]
    meta = driver.metadata(top)
    absolute = f"lowerdir={meta['LowerDir']},upperdir={meta['UpperDir']},workdir={meta['WorkDir']}"
    assert len(absolute) > OPTIONS_LIMIT + 1  # absolute paths cannot be passed whole
    plan = driver.mount_plan(top)
    assert plan.relative and len(plan.options) <= OPTIONS_LIMIT
    merged = driver.mount(top)
    assert (merged / "layer-0").read_bytes() == b"0"
    assert (merged / "layer-50").read_bytes() == b"50"
    assert len([n for n in os.listdir(merged) if n.startswith("layer-")]) == 100
    fstype, options = kernel_mount_entry(merged)
    assert fstype == "overlay" and "lowerdir=l/" in options
    assert os.getcwd() != str(driver.home)  # only the forked child changed directory
    driver.unmount(top)
    assert not driver.is_mounted(top)


@pytest.fixture
def armed():
    yield faults.arm
    faults.disarm()


def test_a_create_failing_half_way_leaves_no_directory_and_no_link(driver: OverlayDriver, armed):
    driver.create("base", None, writable=False)
    armed("driver.overlay.create.half-done", "eio")
    with pytest.raises(DriverError, match="child"):
        driver.create("child", "base", writable=True)
    assert driver.layers() == {"base"}
    assert len(os.listdir(driver.home / "l")) == 1


def test_a_failed_mount_is_a_driver_error_naming_the_layer(driver: OverlayDriver):
    driver.create("base", None, writable=True)
    (driver.home / "base" / "work").rmdir()
    with pytest.raises(DriverError, match="base.*mount failed"):
        driver.mount("base")
    assert not driver.is_mounted("base")


# --- busy unmounts -------------------------------------------------------------------

def test_a_busy_unmount_is_retried_until_the_mount_is_free(tmp_path: Path):
    driver = _overlay_driver(tmp_path / "overlay", unmount_timeout=2.0)
    driver.create("base", None, writable=True)
    merged = driver.mount("base")
    held = open(merged / "held-open", "wb")
    threading.Timer(0.3, held.close).start()
    started = time.monotonic()
    driver.unmount("base")
    assert time.monotonic() - started >= 0.25  # it waited for the file to close
    assert not driver.is_mounted("base")


def test_a_mount_that_stays_busy_is_a_driver_error_naming_the_layer(tmp_path: Path):
    driver = _overlay_driver(tmp_path / "overlay", unmount_timeout=0.3)
    driver.create("squatted", None, writable=True)
    merged = driver.mount("squatted")
    squatter = subprocess.Popen(["sleep", "30"], cwd=merged)
    try:
        started = time.monotonic()
        with pytest.raises(DriverError, match="squatted.*still busy after 0.3s"):
            driver.unmount("squatted")
        assert 0.25 <= time.monotonic() - started < 1.5
        assert driver.is_mounted("squatted")
        with pytest.raises(DriverError, match="squatted"):
            driver.remove("squatted")  # refused before a byte is deleted
        assert driver.exists("squatted") and (driver.home / "squatted" / "diff").is_dir()
    finally:
        squatter.kill()
        squatter.wait()
    driver.remove("squatted")
    assert not driver.exists("squatted")


# --- supported -----------------------------------------------------------------------

def test_supported_explains_why_not_without_root(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in OverlayDriver.supported(tmp_path / "overlay")


def test_supported_explains_why_not_without_the_kernel_module(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(overlay, "_kernel_has_overlay", lambda: False)
    assert "/proc/filesystems" in OverlayDriver.supported(tmp_path / "overlay")


def test_supported_leaves_nothing_behind(tmp_path: Path):
    OverlayDriver.supported(tmp_path / "not-yet" / "overlay")
    assert os.listdir(tmp_path) == []
    assert not any(os.path.realpath(tmp_path) in m for m in kernel_mount_points())
