"""The fuse-overlayfs driver: the contract, plus overlay's layout, the daemon behind each
mount, dead mounts, /dev/fuse, and moving a store's layers between overlay and
fuse-overlayfs. Skipped, with the reason, where fuse-overlayfs cannot mount."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from eventstore.drivers import fuse_overlay
from eventstore.drivers.fuse_overlay import FuseOverlayDriver, fuse_device_problem
from eventstore.drivers.overlay import OverlayDriver
from eventstore.errors import DriverError
from eventstore.rootless import is_rootless
from tests.drivers.contract import DriverContract, kernel_mount_points, unmount_everything_under, write_file


REPO = Path(__file__).resolve().parents[2]


def _fuse_driver(home: Path) -> FuseOverlayDriver:
    reason = FuseOverlayDriver.supported(home)
    if reason is not None:
        pytest.skip(f"fuse-overlayfs cannot run here: {reason}")
    return FuseOverlayDriver(home)


@pytest.fixture
def driver(tmp_path: Path) -> FuseOverlayDriver:
    return _fuse_driver(tmp_path / "overlay")


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


class TestFuseOverlayContract(DriverContract):
    metadata_keys = {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}


def mount_entry(path: Path) -> str | None:
    """The filesystem type of the mount on ``path``, read from mountinfo here."""
    wanted = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            if fields.split(" ")[4] == wanted:
                return tail.split(" ")[0]
    return None


def daemon_of(merged: Path) -> int | None:
    """The pid of the fuse-overlayfs process serving ``merged``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"fuse-overlayfs") and os.fsencode(merged) in argv:
            return int(pid)
    return None


def gone(pid: int, seconds: float = 10) -> bool:
    """True once process ``pid`` has exited (it is not our child: watch /proc)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.01)
    return False


# --- layout and mounts -------------------------------------------------------------------

def test_the_layout_is_the_overlay_drivers(driver: FuseOverlayDriver):
    driver.create("base", None, writable=True)
    driver.create("child", "base", writable=True)
    as_overlay = OverlayDriver(driver.home)
    assert as_overlay.layers() == driver.layers() == {"base", "child"}
    assert as_overlay.metadata("child") == driver.metadata("child")
    assert (driver.home / "child" / "lower").read_text().startswith("l/")


def test_a_mount_is_served_by_a_fuse_overlayfs_daemon_until_unmounted(driver: FuseOverlayDriver):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "etc" / "hostname", b"base\n")
    driver.create("child", "base", writable=True)
    merged = driver.mount("child")
    assert mount_entry(merged) == "fuse.fuse-overlayfs"
    pid = daemon_of(merged)
    assert pid is not None
    (merged / "etc" / "hostname").write_bytes(b"child\n")
    assert (driver.diff_path("child") / "etc" / "hostname").read_bytes() == b"child\n"
    assert (driver.diff_path("base") / "etc" / "hostname").read_bytes() == b"base\n"
    driver.unmount("child")
    assert mount_entry(merged) is None and not driver.is_mounted("child")
    assert gone(pid)  # the daemon went with its mount


def test_deleting_a_parents_file_through_the_mount_leaves_a_whiteout_overlay_reads(driver: FuseOverlayDriver):
    driver.create("base", None, writable=False)
    write_file(driver.diff_path("base") / "gone", b"x")
    write_file(driver.diff_path("base") / "dir" / "old", b"y")
    driver.create("child", "base", writable=True)
    merged = driver.mount("child")
    (merged / "gone").unlink()
    driver.unmount("child")
    whiteout = os.lstat(driver.diff_path("child") / "gone")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0  # the kernel's form
    # the same layers, mounted by the kernel's overlay: the file is gone there too
    kernel = OverlayDriver(driver.home)
    if OverlayDriver.supported(driver.home) is None:
        assert not (kernel.mount("child") / "gone").exists()
        kernel.unmount("child")


def test_a_mount_whose_daemon_died_is_not_mounted_and_is_mounted_again(driver: FuseOverlayDriver):
    driver.create("base", None, writable=True)
    write_file(driver.diff_path("base") / "f", b"x")
    merged = driver.mount("base")
    pid = daemon_of(merged)
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    assert os.path.realpath(merged) in kernel_mount_points()  # the kernel still lists it
    assert not driver.is_mounted("base")
    assert (driver.mount("base") / "f").read_bytes() == b"x"
    assert kernel_mount_points().count(os.path.realpath(merged)) == 1
    driver.unmount("base")
    assert os.path.realpath(merged) not in kernel_mount_points()


def test_a_dead_mount_is_cleared_by_remove(driver: FuseOverlayDriver):
    driver.create("base", None, writable=True)
    merged = driver.mount("base")
    os.kill(daemon_of(merged), signal.SIGKILL)
    driver.remove("base")
    assert not driver.exists("base")
    assert os.path.realpath(merged) not in kernel_mount_points()


def test_a_deep_chain_mounts(driver: FuseOverlayDriver):
    ids = [f"layer{i:03d}" for i in range(128)]
    for i, layer_id in enumerate(ids):
        driver.create(layer_id, ids[i - 1] if i else None, writable=False)
        write_file(driver.diff_path(layer_id) / f"f{i}", str(i).encode())
    merged = driver.mount(ids[-1])
    assert len(os.listdir(merged)) == 128
    assert (merged / "f0").read_bytes() == b"0"
    driver.unmount(ids[-1])


def test_a_failed_mount_is_a_driver_error_naming_the_layer(driver: FuseOverlayDriver):
    driver.create("base", None, writable=True)
    (driver.home / "base" / "work").rmdir()
    (driver.home / "base" / "work").write_bytes(b"not a directory")
    with pytest.raises(DriverError, match="layer base: fuse-overlayfs failed"):
        driver.mount("base")
    assert not driver.is_mounted("base")


def test_a_busy_mount_is_reported_and_stays(driver: FuseOverlayDriver):
    driver.create("base", None, writable=True)
    driver.unmount_timeout = 0.2
    merged = driver.mount("base")
    with open(merged / "open-file", "w"):
        with pytest.raises(DriverError, match="busy"):
            driver.unmount("base")
        assert driver.is_mounted("base")
    driver.unmount("base")
    assert not driver.is_mounted("base")


# --- /dev/fuse and supported ---------------------------------------------------------------

def test_a_fuse_device_that_cannot_be_opened_is_named_with_its_mode(tmp_path_factory):
    if is_rootless():
        pytest.skip("needs root to play a user who cannot open a root-owned 0600 device")
    # a stand-in for /dev/fuse as these machines have it: root's, 0600; a user opens it
    public = Path(tempfile.mkdtemp(prefix="layerstore-fuse-device-"))
    try:
        public.chmod(0o755)
        device = public / "fuse"
        device.write_bytes(b"")
        device.chmod(0o600)
        code = f"from eventstore.drivers.fuse_overlay import fuse_device_problem as p; print(p({str(device)!r}))"
        out = subprocess.run(["setpriv", "--reuid=4243", "--regid=4243", "--clear-groups", sys.executable,
                              "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/",
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        reason = out.stdout.strip()
        assert reason.startswith(f"cannot open {device}: Permission denied (mode 0600;")
        assert f"chmod 0666 {device}" in reason
    finally:
        shutil.rmtree(public)


def test_a_missing_fuse_device_is_named(tmp_path: Path):
    assert "does not exist" in fuse_device_problem(str(tmp_path / "no-fuse"))


def test_mount_says_why_when_the_fuse_device_cannot_be_opened(driver: FuseOverlayDriver, monkeypatch):
    driver.create("base", None, writable=True)
    monkeypatch.setattr(fuse_overlay, "FUSE_DEVICE", "/nonexistent/fuse")
    monkeypatch.setattr(fuse_overlay.fuse_device_problem, "__defaults__", ("/nonexistent/fuse",))
    with pytest.raises(DriverError, match="layer base: cannot mount: /nonexistent/fuse does not exist"):
        driver.mount("base")


def test_supported_says_why_without_the_program(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "fuse-overlayfs is not installed" in FuseOverlayDriver.supported(tmp_path / "overlay")


def test_supported_leaves_nothing_behind(tmp_path: Path):
    FuseOverlayDriver.supported(tmp_path / "not-yet" / "overlay")
    assert os.listdir(tmp_path) == []
    assert not any(os.path.realpath(tmp_path) in m for m in kernel_mount_points())


def test_a_home_with_space_comma_and_backslash_mounts(tmp_path: Path):
    driver = _fuse_driver(tmp_path / "home with space, comma\\back")
    driver.create("base", None, writable=True)
    driver.create("child", "base", writable=True)
    write_file(driver.diff_path("base") / "f", b"x")
    merged = driver.mount("child")
    assert driver.is_mounted("child")
    assert (merged / "f").read_bytes() == b"x"
    (merged / "g").write_bytes(b"y")
    assert (driver.diff_path("child") / "g").read_bytes() == b"y"
    driver.unmount("child")
    assert not driver.is_mounted("child")


def test_a_home_holding_a_colon_is_refused_with_the_reason(tmp_path: Path):
    # fuse-overlayfs makes upperdir absolute, then splits it at ":" (no escape)
    home = tmp_path / "a:b" / "overlay"
    assert "cannot use a path holding ':'" in FuseOverlayDriver.supported(home)
    driver = FuseOverlayDriver(home)
    driver.create("base", None, writable=True)
    with pytest.raises(DriverError, match="layer base: fuse-overlayfs cannot use a path holding ':'"):
        driver.mount("base")


def test_a_stopped_daemon_does_not_hang_is_mounted(driver: FuseOverlayDriver):
    # every call on the mount of a stopped daemon waits for it: is_mounted must not
    # make one (recovery asks it on every open)
    driver.create("base", None, writable=True)
    merged = driver.mount("base")
    pid = daemon_of(merged)
    os.kill(pid, signal.SIGSTOP)
    try:
        asked = subprocess.run([sys.executable, "-c", f"""
from eventstore.drivers.fuse_overlay import FuseOverlayDriver
print(FuseOverlayDriver({str(driver.home)!r}).is_mounted("base"))
"""], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=20)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert asked.stdout.strip() == "True", asked.stderr
    driver.unmount("base")


def test_a_missing_parent_link_is_named_before_fuse_overlayfs_runs(driver: FuseOverlayDriver):
    driver.create("base", None, writable=False)
    driver.create("child", "base", writable=True)
    short = (driver.home / "base" / "link").read_text()
    (driver.home / "l" / short).unlink()
    with pytest.raises(DriverError, match=f"layer child: lower link l/{short} is missing"):
        driver.mount("child")
    assert not driver.is_mounted("child")
