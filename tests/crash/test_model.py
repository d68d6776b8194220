"""The reference model on its own: DESIGN §1 as the oracle states it (no disk, no store)."""

from __future__ import annotations

import pytest

from eventstore import errors
from replay.model import Content, Model, Op

A = "a" * 64
B = "ab" + "0" * 62
C = "c" * 64
TAR = Content("sha256:" + "1" * 64, "sha256:" + "2" * 64)


@pytest.fixture
def model() -> Model:
    m = Model()
    m.create(A, names=["base"])
    m.create(B, parent=A, writable=True)
    return m


def test_lookup_tries_id_then_name_then_a_unique_prefix(model: Model):
    model.create(C, names=["ab"])  # a name that is also a prefix of B
    assert model.lookup(A).id == A
    assert model.lookup("base").id == A
    assert model.lookup("ab").id == C
    assert model.lookup("c").id == C
    with pytest.raises(errors.AmbiguousLayer):
        model.lookup("a")
    for missing in ("", "nosuch", "f", A + "0"):
        with pytest.raises(errors.LayerNotFound):
            model.lookup(missing)
    assert not model.exists("a") and model.exists("base")


def test_creating_an_existing_id_holds_it_on_the_same_parent_only(model: Model):
    assert model.create(B, parent=A, actor="pid:other") == B
    assert model.hold_refs(B) == 1
    with pytest.raises(errors.LayerExists):
        model.create(B)


def test_arguments_are_checked_before_anything_is_looked_up(model: Model):
    for call in (lambda: model.create("A" * 64), lambda: model.create(C, names=["a/b"]),
                 lambda: model.hold("nosuch", lease=""), lambda: model.release("nosuch", lease="x\x00"),
                 lambda: model.set_names("nosuch", [".."]), lambda: model.by_digest("sha256:short")):
        with pytest.raises(errors.InvalidArgument):
            call()


def test_a_name_belongs_to_one_layer(model: Model):
    with pytest.raises(errors.NameInUse):
        model.create(C, names=["base"])
    with pytest.raises(errors.NameInUse):
        model.set_names(B, ["base"])
    model.set_names(A, ["other"])
    model.set_names(B, ["base"])
    assert model.lookup("base").id == B


def test_release_never_goes_below_zero_and_leases_are_named(model: Model):
    with pytest.raises(errors.NotHeld):
        model.release(A)
    model.hold(A, lease="build")
    with pytest.raises(errors.NotHeld):
        model.release(A)  # only a lease holds it: name it
    assert model.release(A, lease="build") == 0


def test_release_takes_the_callers_hold_else_the_newest_process_hold(model: Model):
    model.hold(A, actor="pid:1")
    model.hold(A, actor="pid:2")
    model.hold(A, actor="pid:me")
    model.release(A, actor="pid:me")
    assert model.layers[A].holds == ["pid:1", "pid:2"]
    model.release(A, actor="pid:me")
    assert model.layers[A].holds == ["pid:1"]


def test_delete_refuses_held_parent_and_mounted_layers(model: Model):
    with pytest.raises(errors.LayerInUse):
        model.delete(A)  # a parent
    model.hold(B, lease="x")
    with pytest.raises(errors.LayerInUse):
        model.delete(B, force=True)  # held: force does not help
    model.release(B, lease="x")
    model.mount(B)
    with pytest.raises(errors.LayerInUse):
        model.delete(B)
    model.delete(B, force=True)
    assert not model.exists(B)
    model.delete(A)
    assert model.list() == []


def test_mount_counts_and_force_unmounts(model: Model):
    assert [model.mount(A) for _ in range(3)] == [1, 2, 3]
    assert model.umount(A) == 2
    assert model.umount(A, force=True) == 0
    with pytest.raises(errors.NotMounted):
        model.umount(A)


def test_content_digests(model: Model):
    with pytest.raises(errors.DigestMismatch):
        model.create(C, content=TAR, diff_digest="sha256:" + "9" * 64)
    assert not model.exists(C)
    model.create(C, content=TAR, diff_digest=TAR.diff_digest)
    assert model.by_digest(TAR.diff_digest) == [C]
    assert model.by_digest(TAR.compressed_digest, compressed=True) == [C]
    assert model.by_digest("sha256:" + "3" * 64) == []


def test_a_crash_releases_dead_process_holds_and_a_power_loss_every_mount(model: Model):
    model.hold(A, actor="pid:me")
    model.hold(A, actor="pid:child")
    model.hold(A, lease="keep")
    model.mount(B)
    crashed = model.after_crash(alive=["pid:me"])
    assert crashed.layers[A].holds == ["pid:me", "lease:keep"] and crashed.layers[B].mount_count == 1
    rebooted = model.after_crash(alive=["pid:me"], reboot=True)
    assert rebooted.layers[A].holds == ["lease:keep"] and rebooted.layers[B].mount_count == 0
    assert model.layers[A].hold_refs == 3  # the model itself is untouched


def test_outcomes_of_an_operation_in_flight(model: Model):
    model.mount(B)
    labels = [label for label, _ in model.outcomes(Op.make("delete", ref=B, force=True))]
    assert labels == ["undone", "partial", "done"]
    refused = model.outcomes(Op.make("delete", ref=A))
    assert [label for label, _ in refused] == ["undone"]
    _, done = model.outcomes(Op.make("create", layer_id=C, parent=A))[-1]
    assert done.exists(C) and not model.exists(C)
