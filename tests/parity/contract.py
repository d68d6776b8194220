"""containers-storage's layer operations on every driver, through the Python API: names,
changes and diffs against any layer, diff sizes, applying a diff, layer data, mount
state, status, ID-mapped layers. A driver's module subclasses ``ParityContract``."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from eventstore import errors
from eventstore.changeset import ADD, DELETE, MODIFY, Change
from eventstore.idmap import parse
from eventstore.opener import open_store
from replay.audit import history, resolve_layer
from tests.store.support import snapshot, unmount_everything_under

from .support import TarBuilder, base_tar, change_tar, skip_unless_driver_runs, tar_members, view


class ParityContract:
    driver_name = ""

    @pytest.fixture(autouse=True)
    def _no_mount_outlives_the_test(self, tmp_path: Path):
        yield
        unmount_everything_under(tmp_path)

    @pytest.fixture
    def store(self, tmp_path: Path):
        skip_unless_driver_runs(self.driver_name, tmp_path)
        store = open_store(tmp_path / "store", self.driver_name)
        yield store
        store.close()

    def refused(self, store, error, call, *args, **kwargs):
        before = snapshot(store)
        with pytest.raises(error) as info:
            call(*args, **kwargs)
        assert snapshot(store) == before
        return info.value

    def image(self, store, names=()) -> str:
        return store.create(content=io.BytesIO(base_tar()), names=list(names))

    def write_through_mount(self, store, layer_id: str) -> None:
        """A container at work: a file added, one changed, one removed."""
        root = Path(store.mount(layer_id))
        (root / "new-file").write_bytes(b"0123456789")
        (root / "etc" / "os-release").write_bytes(b"ID=other-and-longer\n")
        (root / "etc" / "passwd").unlink()
        store.umount(layer_id)

    # --- names ----------------------------------------------------------------------------

    def test_add_and_remove_names(self, store):
        # names that are not hex: a lookup falls back to an id prefix, and a random id
        # starts with "a" one time in sixteen
        layer = self.image(store, ["n-a"])
        assert store.add_names(layer, ["n-b", "n-c", "n-a"]) == ["n-a", "n-b", "n-c"]
        assert store.remove_names(layer, ["n-b", "nope"]) == ["n-a", "n-c"]
        assert store.lookup("n-c").id == layer
        store.set_names(layer, ["only"])
        assert store.lookup(layer).names == ["only"] and not store.exists("n-a")

    def test_a_name_another_layer_has_is_refused(self, store):
        self.image(store, ["taken"])
        other = store.create()
        self.refused(store, errors.NameInUse, store.add_names, other, ["taken"])
        self.refused(store, errors.InvalidArgument, store.add_names, other, ["no/slash"])

    def test_a_deleted_layers_name_still_finds_its_history(self, store):
        layer = self.image(store, ["gone-soon"])
        store.remove_names(layer, ["gone-soon"])
        store.delete(layer)
        assert resolve_layer(store, "gone-soon") == layer
        assert [e.type for e in history(store, layer)][-1] == "layer-deleted"

    # --- changes and sizes -------------------------------------------------------------------

    def test_a_base_layer_from_a_tar_has_every_entry_added(self, store):
        changes = store.changes(self.image(store))
        assert {c.kind for c in changes} == {ADD}
        assert {c.path for c in changes} == {"/etc", "/etc/os-release", "/etc/passwd", "/usr", "/usr/bin",
                                             "/usr/bin/tool", "/bin", "/usr/bin/tool-link", "/var",
                                             "/var/cache", "/var/cache/big"}

    def test_changes_of_a_container_list_what_it_wrote(self, store):
        container = store.create(parent=self.image(store), writable=True)
        assert store.changes(container) == []
        self.write_through_mount(store, container)
        assert store.changes(container) == [Change(MODIFY, "/etc"), Change(MODIFY, "/etc/os-release"),
                                            Change(DELETE, "/etc/passwd"), Change(ADD, "/new-file")]
        assert store.diff_size(container) == len(b"0123456789") + len(b"ID=other-and-longer\n")

    def test_changes_against_another_layer(self, store):
        image = self.image(store)
        a = store.create(parent=image, writable=True)
        b = store.create(parent=image, writable=True)
        self.write_through_mount(store, a)
        root = Path(store.mount(b))
        (root / "only-in-b").write_bytes(b"b")
        store.umount(b)
        assert store.changes(a, b) == [Change(MODIFY, "/etc"), Change(MODIFY, "/etc/os-release"),
                                       Change(DELETE, "/etc/passwd"), Change(ADD, "/new-file"),
                                       Change(DELETE, "/only-in-b")]
        assert store.changes(a, image) == store.changes(a)
        assert store.diff_size(a, b) == store.diff_size(a)
        assert store.changes(b, a)[-1] == Change(ADD, "/only-in-b")

    def test_a_diff_against_a_layer_applied_on_it_gives_the_layer(self, store):
        image = self.image(store)
        a = store.create(parent=image, writable=True)
        b = store.create(parent=image, writable=True)
        self.write_through_mount(store, a)
        tar = b"".join(store.diff(a, b))
        c = store.create(parent=b, writable=True)
        store.apply_diff(c, io.BytesIO(tar))
        with_a, with_c = Path(store.mount(a)), Path(store.mount(c))
        try:
            assert view(with_c) == view(with_a)
        finally:
            store.umount(a)
            store.umount(c)

    def test_a_writable_layers_json_size_is_measured(self, store):
        container = store.create(parent=self.image(store), writable=True)
        self.write_through_mount(store, container)
        assert store.lookup(container).diff_size == -1  # the log cannot know what a mount wrote
        assert store.diff_size(container) == 30

    # --- applydiff ------------------------------------------------------------------------------

    def test_applydiff_to_an_empty_layer_makes_it_that_tar(self, store):
        layer = store.create(writable=True)
        data = base_tar()
        rec = store.apply_diff(layer, io.BytesIO(data))
        assert rec.diff_digest == "sha256:" + hashlib.sha256(data).hexdigest() and rec.diff_size == len(data)
        assert rec.has_tarsplit and rec.applying is None
        assert b"".join(store.diff(layer)) == data  # byte for byte, as containers-storage gives it back
        assert [e.type for e in history(store, layer)][-2:] == ["diff-apply-started", "diff-applied"]

    def test_applydiff_on_content_applies_changes_and_whiteouts(self, store):
        layer = store.create(writable=True)
        store.apply_diff(layer, io.BytesIO(base_tar()))
        rec = store.apply_diff(layer, io.BytesIO(change_tar()))
        assert (rec.diff_digest, rec.diff_size, rec.has_tarsplit) == ("", -1, False)  # no longer one tar
        root = Path(store.mount(layer))
        try:
            assert (root / "etc" / "os-release").read_bytes() == b"ID=changed\nVERSION=2\n"
            assert not (root / "etc" / "passwd").exists()
            assert sorted(os.listdir(root / "var" / "cache")) == ["kept"]  # opaque: big is gone
            assert (root / "new-file").read_bytes() == b"fresh\n"
            assert (root / "usr" / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
        finally:
            store.umount(layer)
        members = tar_members(b"".join(store.diff(layer)))  # its changes: a base layer's are all its files
        assert "new-file" in members and "var/cache/kept" in members
        assert "etc/passwd" not in members and "var/cache/big" not in members

    def test_applydiff_is_refused_where_it_would_change_what_others_use(self, store):
        image = self.image(store)
        self.refused(store, errors.RuleViolation, store.apply_diff, image, io.BytesIO(change_tar()))  # read-only
        parent = store.create(writable=True)
        store.create(parent=parent)
        self.refused(store, errors.LayerInUse, store.apply_diff, parent, io.BytesIO(change_tar()))
        mounted = store.create(writable=True)
        store.mount(mounted)
        self.refused(store, errors.LayerInUse, store.apply_diff, mounted, io.BytesIO(change_tar()))
        store.umount(mounted)

    def test_applydiff_of_garbage_leaves_the_layer_as_it_was(self, store):
        layer = store.create(writable=True)
        store.apply_diff(layer, io.BytesIO(base_tar()))
        before = b"".join(store.diff(layer))
        with pytest.raises(errors.ContentRejected, match="not a tar archive"):
            store.apply_diff(layer, io.BytesIO(os.urandom(4096)))
        rec = store.lookup(layer)
        assert rec.applying is None and rec.has_tarsplit
        assert b"".join(store.diff(layer)) == before
        assert [e.type for e in history(store, layer)][-1] == "diff-apply-abandoned"
        assert not store.driver.staging_path(layer).exists()

    # --- layer data -----------------------------------------------------------------------------

    def test_layer_data_round_trips_and_goes_with_the_layer(self, store):
        layer = self.image(store)
        digest = store.set_layer_data(layer, "manifest", b'{"a": 1}')
        assert digest == "sha256:" + hashlib.sha256(b'{"a": 1}').hexdigest()
        store.set_layer_data(layer, "signature", b"sig")
        assert list(store.list_layer_data(layer)) == ["manifest", "signature"]
        assert store.layer_data(layer, "manifest") == b'{"a": 1}'
        store.set_layer_data(layer, "manifest", b"v2")  # replaced: the old blob goes
        blobs = sorted(os.listdir(store.root / "layer-data" / layer))
        assert blobs == sorted(h[7:] for h in (digest_of(b"v2"), digest_of(b"sig")))
        store.remove_layer_data(layer, "signature")
        assert list(store.list_layer_data(layer)) == ["manifest"]
        with pytest.raises(errors.LayerNotFound, match="signature"):
            store.layer_data(layer, "signature")
        store.delete(layer)
        assert not (store.root / "layer-data" / layer).exists()

    def test_layer_data_survives_a_reopen_and_a_damaged_blob_is_reported(self, store):
        layer = self.image(store)
        store.set_layer_data(layer, "k", b"value")
        store = reopened(store, self.driver_name)
        try:
            assert store.layer_data(layer, "k") == b"value"
            blob = store.root / "layer-data" / layer / digest_of(b"value")[7:]
            blob.write_bytes(b"other")
            with pytest.raises(errors.StorageError, match="damaged"):
                store.layer_data(layer, "k")
        finally:
            store.close()

    def test_bad_layer_data_keys_and_missing_items_are_refused(self, store):
        layer = self.image(store)
        self.refused(store, errors.InvalidArgument, store.set_layer_data, layer, "", b"x")
        self.refused(store, errors.InvalidArgument, store.set_layer_data, layer, "bad\nkey", b"x")
        self.refused(store, errors.LayerNotFound, store.remove_layer_data, layer, "missing")

    # --- mounts and status ---------------------------------------------------------------------

    def test_mounted_is_the_mount_count(self, store):
        layer = store.create(writable=True)
        assert store.mounted(layer) == 0
        store.mount(layer)
        store.mount(layer)
        assert store.mounted(layer) == 2
        store.umount(layer, force=True)
        assert store.mounted(layer) == 0

    def test_status_names_the_driver_and_counts(self, store):
        self.image(store)
        facts = dict(store.status())
        assert facts["Driver Name"] == self.driver_name and facts["Layers"] == "1"
        assert facts["Backing Filesystem"] and facts["Supports d_type"] in ("true", "false")
        assert int(facts["Log Size"]) > 0

    # --- ID-mapped layers --------------------------------------------------------------------------

    def test_an_id_mapped_layer_stores_host_ids_and_exports_the_original(self, store):
        tar = TarBuilder().dir("home", uid=1000, gid=1000).file("home/f", b"x", uid=1000, gid=1001).file("r").bytes()
        uid_map, gid_map = parse(["0:100000:65536"]), parse(["0:200000:65536"])
        layer = store.create(content=io.BytesIO(tar), uid_map=uid_map, gid_map=gid_map)
        data = store.driver.diff_path(layer)
        assert (os.stat(data / "home" / "f").st_uid, os.stat(data / "home" / "f").st_gid) == (101000, 201001)
        assert os.stat(data / "r").st_uid == 100000
        assert b"".join(store.diff(layer)) == tar
        assert store.lookup(layer).uid_map == uid_map
        store.delete(layer)
        assert not store.driver.exists(layer)

    def test_an_id_outside_the_mapping_is_refused(self, store):
        tar = TarBuilder().file("f", uid=70000).bytes()
        with pytest.raises(errors.ContentRejected, match="outside the layer's id mapping"):
            store.create(content=io.BytesIO(tar), uid_map=parse(["0:100000:65536"]), gid_map=parse(["0:100000:65536"]))
        assert store.layers() == []

    def test_a_mapped_containers_diff_shows_content_ids(self, store):
        maps = dict(uid_map=parse(["0:100000:65536"]), gid_map=parse(["0:100000:65536"]))
        image = store.create(content=io.BytesIO(base_tar()), **maps)
        container = store.create(parent=image, writable=True, **maps)
        root = Path(store.mount(container))
        (root / "made-inside").write_bytes(b"x")
        os.chown(root / "made-inside", 100005, 100007)  # what uid 5, gid 7 in the container writes
        store.umount(container)
        members = tar_members(b"".join(store.diff(container)))
        assert members["made-inside"][2:4] == (5, 7)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def reopened(store, driver: str):
    store.close()
    return open_store(store.root, driver)
