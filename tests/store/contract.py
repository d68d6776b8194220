"""What the layer store does on every driver (DESIGN §1): one suite, every driver.

A driver's module subclasses ``StoreContract`` and sets ``driver_name``,
``metadata_keys`` and ``real_mounts`` (whether the driver mounts in the kernel, so the
suite can check /proc/self/mountinfo). Everything goes through ``LayerStore``; the
driver is only looked at to prove that data and mounts come and go for real.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from eventstore import errors
from eventstore.events import Holder
from eventstore.faults import CRASH_EXIT_CODE
from eventstore.process import boot_id
from eventstore.opener import open_store
from eventstore.store import LayerStore

from .support import (assert_read_models_equal_fold, fold_log, is_mounted, mounts_under, snapshot,
                      unmount_everything_under)

HEX64 = re.compile(r"^[0-9a-f]{64}$")
REPO = Path(__file__).resolve().parents[2]


def cli_create(root: Path, layer_id: str, failpoint: str, **popen) -> subprocess.Popen:
    """``layerstore create --id layer_id`` in a child process with ``failpoint`` armed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERSTORE_FAILPOINTS": failpoint}
    return subprocess.Popen([sys.executable, "-m", "eventstore.cli", "--root", str(root), "create", "--id", layer_id],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


def given_id(prefix: str, fill: str = "0") -> str:
    """A valid 64-hex id starting with ``prefix``."""
    return (prefix + fill * 64)[:64]


class StoreContract:
    """Subclasses set the driver; every test here must pass on it."""

    driver_name: str = ""
    metadata_keys: set[str] = set()
    real_mounts: bool = False

    @pytest.fixture(autouse=True)
    def _no_mount_outlives_the_test(self, tmp_path: Path):
        yield
        unmount_everything_under(tmp_path)

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        return tmp_path / "store"

    @pytest.fixture
    def store(self, root: Path):
        store = open_store(root, self.driver_name)
        yield store
        store.close()

    def reopen(self, store: LayerStore) -> LayerStore:
        store.close()
        return open_store(store.root, self.driver_name)

    @contextmanager
    def unchanged(self, store: LayerStore):
        """The block must leave the store exactly as it found it."""
        before = snapshot(store)
        yield
        assert snapshot(store) == before

    def refused(self, store: LayerStore, error: type[Exception], call, *args, **kwargs):
        with self.unchanged(store), pytest.raises(error) as info:
            call(*args, **kwargs)
        return info.value

    def assert_mounted(self, store: LayerStore, layer_id: str, mounted: bool) -> None:
        """The kernel agrees (drivers with real mounts only)."""
        if self.real_mounts:
            assert is_mounted(store.driver.mount_path(layer_id)) == mounted

    # --- create ---------------------------------------------------------------------------

    def test_create_generates_a_64_hex_id_for_a_complete_read_only_layer(self, store: LayerStore):
        before = time.time_ns()
        layer_id = store.create()
        after = time.time_ns()
        assert HEX64.match(layer_id)
        rec = store.lookup(layer_id)
        assert rec.id == layer_id and rec.parent is None and rec.names == []
        assert not rec.incomplete and not rec.writable
        assert rec.driver == self.driver_name
        assert (rec.hold_refs, rec.mount_count, rec.mount_point) == (0, 0, "")
        assert before <= rec.created <= after
        assert store.driver.exists(layer_id)

    def test_generated_ids_differ(self, store: LayerStore):
        assert len({store.create() for _ in range(5)}) == 5

    def test_create_writable(self, store: LayerStore):
        assert store.lookup(store.create(writable=True)).writable

    def test_create_with_a_given_id(self, store: LayerStore):
        layer_id = given_id("abc")
        assert store.create(layer_id) == layer_id
        assert store.exists(layer_id) and store.driver.exists(layer_id)

    def test_create_with_parent_and_names(self, store: LayerStore):
        base = store.create(names=["base", "ubuntu:24.04"])
        child = store.create(parent="base", names=["app"], writable=True)
        assert store.lookup(child).parent == base
        assert store.lookup("ubuntu:24.04").id == base
        assert store.lookup("app").id == child
        assert store.lookup(base).names == ["base", "ubuntu:24.04"]

    def test_a_child_sees_its_parents_files(self, store: LayerStore):
        base = store.create()
        (store.driver.diff_path(base) / "from-base").write_text("hello")
        child = store.create(parent=base, writable=True)
        mounted = Path(store.mount(child))
        assert (mounted / "from-base").read_text() == "hello"
        store.umount(child)

    def test_create_with_a_parent_given_by_prefix(self, store: LayerStore):
        base = store.create(given_id("f00d"))
        assert store.lookup(store.create(parent="f00d")).parent == base

    def test_creating_an_existing_id_with_the_same_parent_holds_it(self, store: LayerStore):
        base = store.create(given_id("aa"))
        child = store.create(given_id("bb"), parent=base)
        assert store.create(child, parent=base) == child
        assert store.hold_refs(child) == 1
        assert store.create(base) == base
        assert store.hold_refs(base) == 1
        assert [r.id for r in store.layers()] == [base, child]
        created = [row for row in store.index.history() if row[3] == "layer-created"]
        assert len(created) == 2

    def test_creating_an_existing_id_with_another_parent_is_layer_exists(self, store: LayerStore):
        base = store.create(given_id("aa"))
        other = store.create(given_id("cc"))
        child = store.create(given_id("bb"), parent=base)
        self.refused(store, errors.LayerExists, store.create, child, parent=other)
        self.refused(store, errors.LayerExists, store.create, child)
        self.refused(store, errors.LayerExists, store.create, base, parent=other)

    def test_creating_on_a_missing_parent_is_layer_not_found(self, store: LayerStore):
        store.create()
        self.refused(store, errors.LayerNotFound, store.create, parent=given_id("99"))

    def test_creating_with_a_taken_name_is_name_in_use(self, store: LayerStore):
        store.create(names=["taken"])
        self.refused(store, errors.NameInUse, store.create, names=["free", "taken"])
        self.refused(store, errors.NameInUse, store.create, given_id("77"), names=["taken"])

    def test_a_layer_whose_creator_crashed_is_incomplete_until_recovery(self, store: LayerStore):
        base = store.create()
        half = given_id("dead")
        store.close()
        creator = cli_create(store.root, half, "store.create.after-driver=crash")
        assert creator.wait(timeout=60) == CRASH_EXIT_CODE
        store = LayerStore.open(store.root, self.driver_name)  # no recovery
        try:
            assert store.index.layer(half).incomplete and store.driver.exists(half)
            # its creator died half-way: it does not exist for reads, nor for operations
            # (DESIGN §4): every use of it finds nothing
            assert not store.exists(half) and [r.id for r in store.layers()] == [base]
            for call, args in [(store.hold, (half,)), (store.mount, (half,)), (store.fs_info, (half,)),
                               (store.set_names, (half, ["x"]))]:
                self.refused(store, errors.LayerNotFound, call, *args)
            self.refused(store, errors.LayerNotFound, store.create, parent=half)
            assert store.by_diff_digest("sha256:" + "0" * 64) == []
        finally:
            store.close()
        store = open_store(store.root, self.driver_name)  # recovery removes it
        try:
            assert not store.exists(half) and not store.driver.exists(half)
            assert [r.id for r in store.layers()] == [base]
        finally:
            store.close()

    def test_a_layer_being_created_by_a_live_process_is_left_alone(self, store: LayerStore):
        half = given_id("11fe")
        creator = cli_create(store.root, half, "store.create.after-driver=sleep:60", start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not (store.exists(half) and store.driver.exists(half)):  # paused after the driver work
                assert time.monotonic() < deadline and creator.poll() is None
                time.sleep(0.02)
            store.close()
            store = open_store(store.root, self.driver_name)  # recovery: the owner lives
            assert store.lookup(half).incomplete and store.driver.exists(half)
            self.refused(store, errors.LayerIncomplete, store.delete, half)
            self.refused(store, errors.LayerIncomplete, store.hold, half)
        finally:
            os.killpg(creator.pid, signal.SIGKILL)
            creator.wait()
            store.close()
        store = open_store(store.root, self.driver_name)  # now the owner is dead
        try:
            assert not store.exists(half) and not store.driver.exists(half)
        finally:
            store.close()

    def test_layers_survive_reopening(self, store: LayerStore):
        base = store.create(names=["base"])
        child = store.create(parent=base, writable=True)
        before = store.layers()
        store = self.reopen(store)
        try:
            assert store.layers() == before
            assert [r.id for r in store.layers()] == [base, child]
        finally:
            store.close()

    # --- holds ------------------------------------------------------------------------------

    def test_hold_and_release_count(self, store: LayerStore):
        layer_id = store.create()
        assert [store.hold(layer_id), store.hold(layer_id)] == [1, 2]
        assert store.hold_refs(layer_id) == 2
        assert store.release(layer_id) == 1
        assert store.release(layer_id) == 0
        assert store.hold_refs(layer_id) == 0

    def test_named_leases_are_released_by_name(self, store: LayerStore):
        layer_id = store.create()
        assert store.hold(layer_id, lease="build") == 1
        assert store.hold(layer_id, lease="cache") == 2
        assert store.hold(layer_id) == 3
        assert store.release(layer_id, lease="build") == 2
        assert Holder(lease="build") not in store.lookup(layer_id).holds
        self.refused(store, errors.NotHeld, store.release, layer_id, lease="build")
        assert store.hold_refs(layer_id) == 2

    def test_releasing_a_lease_never_held_is_not_held(self, store: LayerStore):
        layer_id = store.create()
        store.hold(layer_id, lease="mine")
        self.refused(store, errors.NotHeld, store.release, layer_id, lease="yours")
        assert store.hold_refs(layer_id) == 1

    def test_releasing_at_zero_is_not_held_and_the_count_stays_zero(self, store: LayerStore):
        layer_id = store.create()
        self.refused(store, errors.NotHeld, store.release, layer_id)
        store.hold(layer_id)
        store.release(layer_id)
        self.refused(store, errors.NotHeld, store.release, layer_id)
        assert store.hold_refs(layer_id) == 0

    def test_a_plain_release_does_not_drop_a_lease(self, store: LayerStore):
        layer_id = store.create()
        store.hold(layer_id, lease="keep")
        self.refused(store, errors.NotHeld, store.release, layer_id)
        assert store.lookup(layer_id).holds == [Holder(lease="keep")]

    def test_holding_an_unknown_layer_is_layer_not_found(self, store: LayerStore):
        store.create()
        self.refused(store, errors.LayerNotFound, store.hold, given_id("99"))
        self.refused(store, errors.LayerNotFound, store.release, given_id("99"))
        self.refused(store, errors.LayerNotFound, store.hold_refs, given_id("99"))

    def test_holds_are_by_id_name_or_prefix(self, store: LayerStore):
        layer_id = store.create(given_id("beef"), names=["img"])
        assert store.hold("img") == 1
        assert store.hold("beef") == 2
        assert store.release(layer_id) == 1

    def test_leases_and_live_holds_survive_reopening_dead_holds_do_not(self, store: LayerStore):
        layer_id = store.create()
        store.hold(layer_id, lease="pinned")
        store.hold(layer_id)
        dead = Holder(pid=2**22 + 1, start=1, boot=boot_id())  # beyond pid_max: never alive
        store.hold(layer_id, holder=dead)
        store = self.reopen(store)
        try:
            holds = store.lookup(layer_id).holds
            assert Holder(lease="pinned") in holds and store.owner in holds
            assert dead not in holds and len(holds) == 2
        finally:
            store.close()

    # --- delete -------------------------------------------------------------------------------

    def test_delete_removes_the_layer_its_names_and_its_data(self, store: LayerStore):
        base = store.create(names=["base"])
        child = store.create(parent=base, names=["child"], writable=True)
        (store.driver.diff_path(child) / "data").write_bytes(b"x" * 1000)
        store.delete(child)
        assert not store.exists(child) and not store.exists("child")
        with pytest.raises(errors.LayerNotFound):
            store.lookup(child)
        assert not store.driver.exists(child)
        assert not store.driver.diff_path(child).exists()
        assert [r.id for r in store.layers()] == [base]
        # the name is free and the parent deletable now
        assert store.lookup(store.create(names=["child"])).names == ["child"]
        store.delete(base)
        assert not store.driver.exists(base)

    def test_deleting_a_held_layer_is_layer_in_use(self, store: LayerStore):
        layer_id = store.create()
        store.hold(layer_id, lease="keep")
        self.refused(store, errors.LayerInUse, store.delete, layer_id)
        self.refused(store, errors.LayerInUse, store.delete, layer_id, force=True)
        store.release(layer_id, lease="keep")
        store.delete(layer_id)
        assert not store.exists(layer_id)

    def test_deleting_a_mounted_layer_is_layer_in_use_unless_forced(self, store: LayerStore):
        layer_id = store.create(writable=True)
        store.mount(layer_id)
        store.mount(layer_id)
        self.refused(store, errors.LayerInUse, store.delete, layer_id)
        self.assert_mounted(store, layer_id, True)
        store.delete(layer_id, force=True)
        assert not store.exists(layer_id) and not store.driver.exists(layer_id)
        assert mounts_under(store.root) == []
        types = [row[3] for row in store.index.history(layer_id)]
        assert types[-3:] == ["layer-unmounted", "layer-marked-incomplete", "layer-deleted"]

    def test_deleting_a_parent_is_layer_in_use(self, store: LayerStore):
        base = store.create()
        store.create(parent=base)
        self.refused(store, errors.LayerInUse, store.delete, base)
        self.refused(store, errors.LayerInUse, store.delete, base, force=True)

    def test_a_forced_delete_of_a_mounted_layer_still_held_changes_nothing(self, store: LayerStore):
        layer_id = store.create(writable=True)
        store.hold(layer_id, lease="keep")
        path = store.mount(layer_id)
        self.refused(store, errors.LayerInUse, store.delete, layer_id, force=True)
        assert store.lookup(layer_id).mount_count == 1
        self.assert_mounted(store, layer_id, True)
        assert Path(path).is_dir()

    def test_a_forced_delete_of_a_mounted_parent_changes_nothing(self, store: LayerStore):
        base = store.create(writable=True)
        store.create(parent=base)
        store.mount(base)
        self.refused(store, errors.LayerInUse, store.delete, base, force=True)
        assert store.lookup(base).mount_count == 1
        self.assert_mounted(store, base, True)

    def test_deleting_an_unknown_layer_is_layer_not_found(self, store: LayerStore):
        store.create()
        self.refused(store, errors.LayerNotFound, store.delete, given_id("99"))

    # --- lookups ----------------------------------------------------------------------------

    def test_lookup_by_id_name_and_unique_prefix(self, store: LayerStore):
        first = store.create(given_id("abc1"), names=["first"])
        second = store.create(given_id("abd2"))
        assert store.lookup(first).id == first
        assert store.lookup("first").id == first
        assert store.lookup("abc").id == first
        assert store.lookup("abd").id == second
        assert store.lookup(second[:63]).id == second
        assert store.exists(first) and store.exists("first") and store.exists("abc")

    def test_an_ambiguous_prefix_is_ambiguous_layer(self, store: LayerStore):
        store.create(given_id("abc1"))
        store.create(given_id("abc2"))
        self.refused(store, errors.AmbiguousLayer, store.lookup, "abc")
        self.refused(store, errors.AmbiguousLayer, store.hold, "ab")
        self.refused(store, errors.AmbiguousLayer, store.delete, "a")
        assert not store.exists("abc")

    def test_a_name_wins_over_a_prefix(self, store: LayerStore):
        store.create(given_id("abc1"))
        named = store.create(given_id("ff"), names=["abc"])
        assert store.lookup("abc").id == named

    def test_unknown_refs_are_not_found(self, store: LayerStore):
        store.create(given_id("abc1"))
        for ref in [given_id("99"), "nothing", "abd", "ABC1", given_id("abc1") + "0"]:
            assert not store.exists(ref)
            with pytest.raises(errors.LayerNotFound):
                store.lookup(ref)

    def test_layers_are_in_creation_order(self, store: LayerStore):
        ids = [store.create(given_id(p)) for p in ("ff", "00", "aa")]
        ids.append(store.create(parent=ids[0]))
        assert [r.id for r in store.layers()] == ids
        store.delete(ids[1])
        late = store.create(given_id("00"))
        assert [r.id for r in store.layers()] == [ids[0], ids[2], ids[3], late]

    def test_digest_lookups_of_unknown_digests_are_empty(self, store: LayerStore):
        store.create()
        assert store.by_compressed_digest("sha256:" + "1" * 64) == []
        assert store.by_diff_digest("sha256:" + "1" * 64) == []

    @pytest.mark.parametrize("digest", ["", "sha256:", "sha256:" + "1" * 63, "sha256:" + "1" * 65,
                                        "sha256:" + "G" * 64, "md5:" + "1" * 32, "1" * 64,
                                        "sha256:" + "1" * 63 + "\n"])
    def test_a_malformed_digest_is_invalid_argument(self, store: LayerStore, digest: str):
        store.create()
        self.refused(store, errors.InvalidArgument, store.by_compressed_digest, digest)
        self.refused(store, errors.InvalidArgument, store.by_diff_digest, digest)

    # --- mounts -------------------------------------------------------------------------------

    def test_mount_twice_counts_and_returns_the_same_path(self, store: LayerStore):
        layer_id = store.create(writable=True)
        first = store.mount(layer_id)
        assert first == str(store.driver.mount_path(layer_id))
        self.assert_mounted(store, layer_id, True)
        assert store.mount(layer_id) == first
        rec = store.lookup(layer_id)
        assert (rec.mount_count, rec.mount_point) == (2, first)

    def test_umount_counts_down_and_unmounts_at_zero(self, store: LayerStore):
        layer_id = store.create(writable=True)
        store.mount(layer_id)
        store.mount(layer_id)
        assert store.umount(layer_id) == 1
        self.assert_mounted(store, layer_id, True)
        assert store.lookup(layer_id).mount_point == str(store.driver.mount_path(layer_id))
        assert store.umount(layer_id) == 0
        self.assert_mounted(store, layer_id, False)
        assert store.lookup(layer_id).mount_point == ""
        assert mounts_under(store.root) == []

    def test_a_forced_umount_goes_to_zero(self, store: LayerStore):
        layer_id = store.create(writable=True)
        for _ in range(3):
            store.mount(layer_id)
        assert store.umount(layer_id, force=True) == 0
        self.assert_mounted(store, layer_id, False)
        assert store.lookup(layer_id).mount_count == 0

    def test_unmounting_an_unmounted_layer_is_not_mounted(self, store: LayerStore):
        layer_id = store.create()
        self.refused(store, errors.NotMounted, store.umount, layer_id)
        self.refused(store, errors.NotMounted, store.umount, layer_id, force=True)
        store.mount(layer_id)
        store.umount(layer_id)
        self.refused(store, errors.NotMounted, store.umount, layer_id)

    def test_mounting_an_unknown_layer_is_layer_not_found(self, store: LayerStore):
        store.create()
        self.refused(store, errors.LayerNotFound, store.mount, given_id("99"))
        self.refused(store, errors.LayerNotFound, store.umount, given_id("99"))

    def test_writes_through_the_mount_land_in_the_layer(self, store: LayerStore):
        base = store.create()
        layer_id = store.create(parent=base, writable=True)
        (Path(store.mount(layer_id)) / "written").write_text("through the mount")
        store.umount(layer_id)
        assert (store.driver.diff_path(layer_id) / "written").read_text() == "through the mount"
        assert not (store.driver.diff_path(base) / "written").exists()

    def test_mounts_survive_reopening(self, store: LayerStore):
        layer_id = store.create(writable=True)
        path = store.mount(layer_id)
        store = self.reopen(store)
        try:
            assert store.lookup(layer_id).mount_count == 1
            assert store.mount(layer_id) == path
            assert store.lookup(layer_id).mount_count == 2
            self.assert_mounted(store, layer_id, True)
        finally:
            store.close()

    def test_a_mount_the_kernel_lost_is_mounted_again(self, store: LayerStore):
        if not self.real_mounts:
            pytest.skip(f"{self.driver_name} does not mount in the kernel")
        layer_id = store.create(writable=True)
        path = store.mount(layer_id)
        store.mount(layer_id)
        subprocess.run(["umount", path], check=True)  # behind the store's back
        assert not is_mounted(path)
        assert store.mount(layer_id) == path
        assert is_mounted(path)
        assert store.lookup(layer_id).mount_count == 1
        types = [row[3] for row in store.index.history(layer_id)]
        assert types[-2:] == ["mounts-reconciled", "layer-mounted"]
        assert store.umount(layer_id) == 0
        assert not is_mounted(path)

    def test_a_mount_from_an_earlier_boot_is_reconciled(self, store: LayerStore, monkeypatch):
        layer_id = store.create(writable=True)
        store.mount(layer_id)
        store.mount(layer_id)
        store.close()
        unmount_everything_under(store.root)  # what a reboot does to mounts
        monkeypatch.setenv("LAYERSTORE_BOOT_ID", "a-later-boot")
        store = open_store(store.root, self.driver_name)
        try:
            assert store.lookup(layer_id).mount_count == 0
            path = store.mount(layer_id)
            assert store.lookup(layer_id).mount_count == 1
            self.assert_mounted(store, layer_id, True)
            store.umount(layer_id)
            assert path == str(store.driver.mount_path(layer_id))
        finally:
            store.close()

    # --- fs info and metadata -------------------------------------------------------------

    def test_fs_info_counts_the_layers_own_data(self, store: LayerStore):
        base = store.create()
        (store.driver.diff_path(base) / "in-base").write_bytes(os.urandom(300_000))
        layer_id = store.create(parent=base, writable=True)
        empty = store.fs_info(layer_id)
        (store.driver.diff_path(layer_id) / "big").write_bytes(os.urandom(200_000))
        info = store.fs_info(layer_id)
        assert info.used_bytes >= empty.used_bytes + 200_000
        assert info.inodes_used == empty.inodes_used + 1
        assert info.mountpoint == str(store.driver.mount_path(layer_id))
        with pytest.raises(errors.LayerNotFound):
            store.fs_info(given_id("99"))

    def test_metadata_has_the_drivers_keys(self, store: LayerStore):
        base = store.create()
        child = store.create(parent=base)
        for layer_id in (base, child):
            meta = store.metadata(layer_id)
            assert set(meta) == self.metadata_keys
            assert all(isinstance(v, str) for v in meta.values())
        with pytest.raises(errors.LayerNotFound):
            store.metadata(given_id("99"))

    # --- history ------------------------------------------------------------------------------

    def test_history_has_one_row_per_event_with_the_actor(self, store: LayerStore):
        layer_id = store.create(names=["x"])
        store.hold(layer_id, lease="l")
        store.release(layer_id, lease="l")
        store.mount(layer_id)
        store.umount(layer_id)
        store.set_names(layer_id, ["y"])
        store.delete(layer_id)
        rows = list(store.index.history(layer_id))
        assert [r[3] for r in rows] == [
            "layer-created", "layer-completed", "hold-added", "hold-released", "layer-mounted",
            "layer-unmounted", "names-changed", "layer-marked-incomplete", "layer-deleted"]
        assert {(r[2], r[4], r[5]) for r in rows} == {(layer_id, os.getpid(), os.getuid())}
        everything = list(store.index.history())
        assert [r[0] for r in everything] == list(range(1, store.log.last_lsn + 1))
        times = [r[1] for r in everything]
        assert times == sorted(times) and times[0] > 0

    def test_the_read_models_equal_the_fold_of_the_log(self, store: LayerStore):
        base = store.create(names=["base"])
        child = store.create(parent=base, writable=True)
        store.hold(child, lease="l")
        store.mount(child)
        extra = store.create(parent=base)
        store.delete(extra)
        assert_read_models_equal_fold(store.index, fold_log(store.root))
