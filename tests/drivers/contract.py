"""What every storage driver must do (DESIGN §6): one suite, every driver.

A driver's test module subclasses ``DriverContract`` and provides a ``driver`` fixture
(a fresh driver whose home is under ``tmp_path``) and ``metadata_keys``. Everything here
goes through the Driver interface only, so a new driver gets the whole suite for free.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from eventstore.drivers import driver_class
from eventstore.drivers.base import Driver
from eventstore.errors import DriverError, ForeignMount, InvalidArgument
from eventstore.mounts import mount_table
from tests.store.support import unmount_everything_under

def kernel_mount_points() -> list[str]:
    """Every mount point, once per mount stacked on it (``eventstore.mounts``)."""
    return [m.point for m in mount_table()]


def write_file(path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


class DriverContract:
    """Subclasses provide the ``driver`` fixture and the driver's ``metadata_keys``."""

    metadata_keys: set[str] = set()

    @pytest.fixture(autouse=True)
    def _no_mount_outlives_the_test(self, tmp_path: Path):
        yield
        unmount_everything_under(tmp_path)

    # --- create, exists, layers ------------------------------------------------------

    def test_a_fresh_home_has_no_layers(self, driver: Driver):
        assert driver.layers() == set()
        assert not driver.exists("base")

    def test_created_layers_exist_and_are_listed(self, driver: Driver):
        driver.create("base", None, writable=False)
        driver.create("child", "base", writable=True)
        assert driver.exists("base") and driver.exists("child")
        assert driver.layers() == {"base", "child"}
        assert driver.diff_path("child").is_dir()

    def test_creating_an_existing_layer_fails(self, driver: Driver):
        driver.create("base", None, writable=False)
        write_file(driver.diff_path("base") / "kept", b"x")
        with pytest.raises(DriverError, match="base"):
            driver.create("base", None, writable=False)
        assert (driver.diff_path("base") / "kept").read_bytes() == b"x"

    def test_creating_on_a_missing_parent_fails_and_leaves_nothing(self, driver: Driver):
        with pytest.raises(DriverError, match="orphan"):
            driver.create("orphan", "nobody", writable=True)
        assert not driver.exists("orphan")
        assert driver.layers() == set()

    @pytest.mark.parametrize("bad_id", ["..", "a/b", "", "nul\x00byte", "new\nline", "../escape"])
    def test_ids_that_are_not_one_safe_path_component_are_refused(self, driver: Driver, bad_id: str):
        with pytest.raises(InvalidArgument):
            driver.create(bad_id, None, writable=True)
        with pytest.raises(InvalidArgument):
            driver.remove(bad_id)
        assert driver.layers() == set()

    def test_diff_and_mount_paths_are_under_home(self, driver: Driver):
        driver.create("base", None, writable=True)
        assert driver.diff_path("base").is_relative_to(driver.home)
        assert driver.mount_path("base").is_relative_to(driver.home)

    # --- remove ----------------------------------------------------------------------

    def test_remove_deletes_every_byte_of_the_layer(self, driver: Driver):
        driver.create("base", None, writable=True)
        write_file(driver.diff_path("base") / "etc" / "os-release", b"ID=test\n")
        driver.remove("base")
        assert not driver.exists("base")
        assert driver.layers() == set()
        assert not driver.diff_path("base").exists()

    def test_remove_twice_and_remove_of_a_missing_layer_are_fine(self, driver: Driver):
        driver.create("base", None, writable=True)
        driver.remove("base")
        driver.remove("base")
        driver.remove("never-created")
        assert driver.layers() == set()

    def test_removing_a_child_leaves_its_parent_alone(self, driver: Driver):
        driver.create("base", None, writable=False)
        write_file(driver.diff_path("base") / "bin" / "sh", b"#!")
        driver.create("child", "base", writable=True)
        driver.remove("child")
        assert driver.layers() == {"base"}
        assert (driver.diff_path("base") / "bin" / "sh").read_bytes() == b"#!"

    # --- parents and children --------------------------------------------------------

    def test_a_child_sees_its_parents_files(self, driver: Driver):
        driver.create("base", None, writable=False)
        write_file(driver.diff_path("base") / "etc" / "hostname", b"base\n", mode=0o600)
        driver.create("child", "base", writable=True)
        view = driver.mount("child")
        seen = view / "etc" / "hostname"
        assert seen.read_bytes() == b"base\n"
        assert seen.stat().st_mode & 0o777 == 0o600

    def test_a_childs_changes_never_reach_its_parent(self, driver: Driver):
        driver.create("base", None, writable=False)
        write_file(driver.diff_path("base") / "etc" / "hostname", b"base\n")
        driver.create("child", "base", writable=True)
        view = driver.mount("child")
        (view / "etc" / "hostname").write_bytes(b"child\n")
        (view / "new-in-child").write_bytes(b"!")
        assert (driver.diff_path("base") / "etc" / "hostname").read_bytes() == b"base\n"
        assert not (driver.diff_path("base") / "new-in-child").exists()

    # --- mount and unmount -----------------------------------------------------------

    def test_mount_twice_returns_the_same_path(self, driver: Driver):
        driver.create("base", None, writable=True)
        first = driver.mount("base")
        second = driver.mount("base")
        assert first == second == driver.mount_path("base")
        assert driver.is_mounted("base")

    def test_a_mounted_view_shows_the_layers_own_files(self, driver: Driver):
        driver.create("base", None, writable=True)
        write_file(driver.diff_path("base") / "hello", b"hi")
        assert (driver.mount("base") / "hello").read_bytes() == b"hi"

    def test_mounting_a_missing_layer_fails_naming_it(self, driver: Driver):
        with pytest.raises(DriverError, match="ghost"):
            driver.mount("ghost")

    def test_unmount_of_an_unmounted_layer_is_fine(self, driver: Driver):
        driver.create("base", None, writable=True)
        driver.unmount("base")
        driver.mount("base")
        driver.unmount("base")
        driver.unmount("base")
        driver.unmount("never-created")

    def test_remove_of_a_mounted_layer_unmounts_first(self, driver: Driver):
        driver.create("base", None, writable=True)
        view = driver.mount("base")
        (view / "written-while-mounted").write_bytes(b"x")
        driver.remove("base")
        assert not driver.exists("base")
        assert os.path.realpath(view) not in kernel_mount_points()

    # --- removal never crosses a filesystem boundary (DESIGN §4) ---------------------

    def test_the_layers_own_mount_is_not_foreign(self, driver: Driver):
        driver.create("base", None, writable=True)
        assert driver.foreign_mounts("base") == []
        driver.mount("base")
        assert driver.foreign_mounts("base") == []
        driver.check_removable("base")

    def test_remove_refuses_a_volume_mounted_inside_and_leaves_it_whole(self, driver: Driver, tmp_path: Path):
        driver.create("base", None, writable=True)
        volume = tmp_path / "volume"
        write_file(volume / "sub" / "keep", b"the volume's\n")
        inside = driver.mount("base") / "data"
        inside.mkdir()
        subprocess.run(["mount", "--bind", str(volume), str(inside)], check=True)
        assert driver.foreign_mounts("base") == [os.path.realpath(inside)]
        with pytest.raises(ForeignMount) as caught:
            driver.remove("base")
        assert caught.value.mount_point == os.path.realpath(inside)
        assert (volume / "sub" / "keep").read_bytes() == b"the volume's\n"
        assert driver.exists("base")
        subprocess.run(["umount", str(inside)], check=True)
        driver.remove("base")
        assert not driver.exists("base") and (volume / "sub" / "keep").exists()

    # --- facts -----------------------------------------------------------------------

    def test_metadata_has_the_drivers_keys(self, driver: Driver):
        driver.create("base", None, writable=True)
        meta = driver.metadata("base")
        assert set(meta) == self.metadata_keys
        assert all(isinstance(v, str) for v in meta.values())

    def test_metadata_of_a_missing_layer_fails_naming_it(self, driver: Driver):
        with pytest.raises(DriverError, match="ghost"):
            driver.metadata("ghost")

    def test_fs_info_counts_bytes_and_inodes_with_hardlinks_once(self, driver: Driver):
        driver.create("base", None, writable=True)
        diff = driver.diff_path("base")
        empty = driver.fs_info("base")
        payload = write_file(diff / "data" / "blob", os.urandom(300 * 1024))
        os.link(payload, diff / "data" / "same-blob")
        after = driver.fs_info("base")
        blocks = sum(os.lstat(p).st_blocks for p in (diff, diff / "data", payload)) * 512
        assert after.used_bytes == blocks
        assert after.used_bytes < empty.used_bytes + 2 * 300 * 1024
        assert after.inodes_used == empty.inodes_used + 2  # data/ and one blob, not two
        assert after.mountpoint == str(driver.mount_path("base"))

    def test_fs_info_of_a_missing_layer_fails_naming_it(self, driver: Driver):
        with pytest.raises(DriverError, match="ghost"):
            driver.fs_info("ghost")

    def test_sync_of_a_layer_succeeds(self, driver: Driver):
        driver.create("base", None, writable=True)
        write_file(driver.diff_path("base") / "f", b"data")
        driver.sync("base")

    def test_status_names_the_driver_and_its_home(self, driver: Driver):
        status = driver.status()
        assert status["driver"] == driver.name
        assert status["home"] == str(driver.home)

    def test_a_staged_copy_sits_beside_the_data_and_is_no_layer(self, driver: Driver):
        # applydiff builds a staged copy there and swaps it in with a rename: it must be
        # on the data's filesystem, and never taken for a layer (the orphan sweep would
        # move a live apply's copy to lost+found)
        driver.create("base", None, writable=True)
        staging = driver.staging_path("base")
        staging.mkdir(parents=True)
        # (the parents' devices: a btrfs subvolume has a device of its own, and its
        # entry, which the rename moves, lies in the parent directory)
        assert os.stat(staging.parent).st_dev == os.stat(driver.diff_path("base").parent).st_dev
        assert driver.layers() == {"base"}
        assert driver.view_dirs("base")[0] == driver.diff_path("base")

    def test_the_registry_finds_the_driver_by_name(self, driver: Driver):
        assert driver_class(driver.name) is type(driver)

    def test_the_driver_says_it_can_run_here(self, driver: Driver):
        assert type(driver).supported(driver.home) is None
