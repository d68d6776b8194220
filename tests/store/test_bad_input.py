"""Bad input to the store: each is a clear error, and the store is left exactly as it was
(read models, log, driver data, mounts). Driver-independent, so it runs on vfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import errors
from eventstore.opener import open_store
from eventstore.store import LayerStore

from .support import snapshot

HOSTILE = [
    "../x", "..", "a/b", "/etc", "x\x00y", "\x00", "tab\there", "new\nline", "esc\x1b[31m", "del\x7f",
    "",
]
HOSTILE_IDS = HOSTILE + ["0" * 65, "0" * 63, "A" * 64, "g" * 64, "0" * 63 + "\n", " " + "0" * 63]
HOSTILE_NAMES = HOSTILE + ["n" * 256, "a..b"]

BASE_ID = "ab" + "0" * 62


@pytest.fixture
def store(tmp_path: Path):
    """A store with a base (held by a lease, named "base"), a mounted child and two
    layers sharing a prefix."""
    store = open_store(tmp_path / "store", "vfs")
    store.create(BASE_ID, names=["base"])
    child = store.create("ac" + "0" * 62, parent=BASE_ID, names=["child"], writable=True)
    store.hold(BASE_ID, lease="keep")
    store.mount(child)
    store.create("ad1" + "0" * 61)
    store.create("ad2" + "0" * 61)
    yield store
    store.close()


def refused(store: LayerStore, error: type[Exception], call, *args, **kwargs) -> Exception:
    before = snapshot(store)
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    assert snapshot(store) == before
    # one printable line: no newline, and no terminal escapes copied from the input
    assert str(info.value).isprintable()
    return info.value


@pytest.mark.parametrize("bad", HOSTILE_IDS, ids=repr)
def test_a_hostile_id_is_invalid_argument(store: LayerStore, bad: str):
    refused(store, errors.InvalidArgument, store.create, bad)
    refused(store, errors.InvalidArgument, store.create, bad, parent=BASE_ID)


@pytest.mark.parametrize("bad", HOSTILE_NAMES, ids=repr)
def test_a_hostile_name_is_invalid_argument(store: LayerStore, bad: str):
    refused(store, errors.InvalidArgument, store.create, names=[bad])
    refused(store, errors.InvalidArgument, store.create, names=["fine", bad])
    refused(store, errors.InvalidArgument, store.set_names, BASE_ID, ["base", bad])


@pytest.mark.parametrize("bad", HOSTILE_NAMES, ids=repr)
def test_a_hostile_lease_is_invalid_argument(store: LayerStore, bad: str):
    refused(store, errors.InvalidArgument, store.hold, BASE_ID, lease=bad)
    refused(store, errors.InvalidArgument, store.release, BASE_ID, lease=bad)


@pytest.mark.parametrize("bad", HOSTILE_IDS + ["ae", "nothing"], ids=repr)
def test_a_hostile_or_unknown_ref_is_layer_not_found(store: LayerStore, bad: str):
    assert not store.exists(bad)
    for call in (store.lookup, store.hold, store.release, store.hold_refs, store.delete, store.mount,
                 store.umount, store.fs_info, store.metadata):
        refused(store, errors.LayerNotFound, call, bad)
    if bad:  # parent="" means no parent (the JSON output writes no parent as "")
        refused(store, errors.LayerNotFound, store.create, parent=bad)
    refused(store, errors.LayerNotFound, store.set_names, bad, ["x"])


def test_an_ambiguous_prefix_is_ambiguous_layer_everywhere(store: LayerStore):
    for call in (store.lookup, store.hold, store.release, store.hold_refs, store.delete, store.mount,
                 store.umount, store.fs_info, store.metadata):
        error = refused(store, errors.AmbiguousLayer, call, "ad")
        assert "ad" in str(error)
    refused(store, errors.AmbiguousLayer, store.create, parent="ad")


def test_release_at_zero_is_not_held(store: LayerStore):
    error = refused(store, errors.NotHeld, store.release, "child")
    assert store.lookup("child").id in str(error)
    assert store.hold_refs("child") == 0


def test_release_of_a_lease_not_held_is_not_held(store: LayerStore):
    refused(store, errors.NotHeld, store.release, BASE_ID, lease="other")
    assert store.hold_refs(BASE_ID) == 1


@pytest.mark.parametrize("force", [False, True])
def test_delete_of_a_held_layer_is_layer_in_use(store: LayerStore, force: bool):
    store.create("ae" + "0" * 62)
    store.hold("ae", lease="x")
    error = refused(store, errors.LayerInUse, store.delete, "ae", force=force)
    assert "ae" + "0" * 62 in str(error) and "held" in str(error)


def test_delete_of_a_mounted_layer_is_layer_in_use(store: LayerStore):
    error = refused(store, errors.LayerInUse, store.delete, "child")
    assert "mounted" in str(error)


@pytest.mark.parametrize("force", [False, True])
def test_delete_of_a_parent_is_layer_in_use(store: LayerStore, force: bool):
    store.release(BASE_ID, lease="keep")
    error = refused(store, errors.LayerInUse, store.delete, BASE_ID, force=force)
    assert "parent" in str(error)


def test_a_taken_name_is_name_in_use(store: LayerStore):
    error = refused(store, errors.NameInUse, store.create, names=["base"])
    assert "base" in str(error)
    refused(store, errors.NameInUse, store.set_names, "child", ["child", "base"])


def test_unmount_of_an_unmounted_layer_is_not_mounted(store: LayerStore):
    refused(store, errors.NotMounted, store.umount, BASE_ID)


def test_creating_an_existing_id_on_another_parent_is_layer_exists(store: LayerStore):
    refused(store, errors.LayerExists, store.create, "ac" + "0" * 62)
    refused(store, errors.LayerExists, store.create, BASE_ID, parent="ad1")


@pytest.mark.parametrize("digest", ["", "sha256:zz", "sha512:" + "0" * 128, "sha256:" + "0" * 64 + "/../x"])
def test_a_malformed_digest_is_invalid_argument(store: LayerStore, digest: str):
    refused(store, errors.InvalidArgument, store.by_diff_digest, digest)
    refused(store, errors.InvalidArgument, store.by_compressed_digest, digest)
    refused(store, errors.InvalidArgument, store.create, diff_digest=digest or "x")


def test_an_unknown_driver_is_invalid_argument(tmp_path: Path):
    with pytest.raises(errors.InvalidArgument):
        open_store(tmp_path / "other", "no-such-driver")


def test_reopening_with_another_driver_is_invalid_argument(store: LayerStore):
    store.close()
    with pytest.raises(errors.InvalidArgument, match="vfs"):
        open_store(store.root, "overlay")
    open_store(store.root).close()  # no driver given: the recorded one
