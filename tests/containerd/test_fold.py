"""The fold's part (pure, no disk): a snapshot's facts arrive with its layer, a commit
freezes and renames it, labels are replaced; the rules refuse a commit of anything but
an active snapshot, a name in use, and labels on a layer containerd did not make."""

from __future__ import annotations

import pytest

from eventstore import errors
from eventstore import events as ev
from eventstore.events import Snapshot
from eventstore.state import State, apply, check

A, B = "a" * 64, "b" * 64


def folded(*events: ev.Event) -> State:
    state = State()
    for lsn, event in enumerate(events, 1):
        check(state, event)
        apply(state, lsn, event)
    return state


def made(layer: str, key: str, kind: str = "active", time: int = 100, **fields) -> list[ev.Event]:
    return [ev.LayerCreated(layer=layer, names=[f"containerd:{key}"], writable=kind == "active",
                            snapshot=Snapshot(key=key, kind=kind, labels={"l": "1"}), time=time, **fields),
            ev.LayerCompleted(layer=layer)]


def test_the_snapshot_arrives_with_its_layer_and_takes_the_events_time():
    rec = folded(*made(A, "k")).layers[A]
    assert rec.snapshot == Snapshot(key="k", kind="active", labels={"l": "1"}, created=100, updated=100)


def test_a_commit_freezes_renames_and_replaces_the_labels():
    state = folded(*made(A, "k"), ev.SnapshotCommitted(layer=A, key="n", names=["containerd:n"],
                                                       labels={"m": "2"}, size=4096, inodes=3, time=200))
    rec = state.layers[A]
    assert not rec.writable and rec.names == ["containerd:n"]
    assert rec.snapshot == Snapshot(key="n", kind="committed", labels={"m": "2"}, created=200, updated=200,
                                    size=4096, inodes=3)
    assert state.names == {"containerd:n": A}


def test_labels_are_replaced_and_the_update_time_moves():
    rec = folded(*made(A, "k"), ev.SnapshotLabelsChanged(layer=A, labels={"x": "y"}, time=300)).layers[A]
    assert rec.snapshot.labels == {"x": "y"} and (rec.snapshot.created, rec.snapshot.updated) == (100, 300)


@pytest.mark.parametrize("what,events,event,error", [
    ("a view", made(A, "v", kind="view"), ev.SnapshotCommitted(layer=A, key="n", names=["containerd:n"]),
     errors.RuleViolation),
    ("a committed snapshot", [*made(A, "k"), ev.SnapshotCommitted(layer=A, key="c", names=["containerd:c"])],
     ev.SnapshotCommitted(layer=A, key="n", names=["containerd:n"]), errors.RuleViolation),
    ("a layer containerd did not make", [ev.LayerCreated(layer=A, writable=True), ev.LayerCompleted(layer=A)],
     ev.SnapshotCommitted(layer=A, key="n", names=["containerd:n"]), errors.RuleViolation),
    ("an incomplete snapshot", made(A, "k")[:1], ev.SnapshotCommitted(layer=A, key="n", names=["containerd:n"]),
     errors.LayerIncomplete),
    ("a name in use", [*made(A, "k"), *made(B, "other")],
     ev.SnapshotCommitted(layer=A, key="other", names=["containerd:other"]), errors.NameInUse),
    ("labels of a layer containerd did not make", [ev.LayerCreated(layer=A), ev.LayerCompleted(layer=A)],
     ev.SnapshotLabelsChanged(layer=A, labels={"x": "y"}), errors.RuleViolation),
    ("labels of no layer", [], ev.SnapshotLabelsChanged(layer=A), errors.LayerNotFound),
])
def test_refused(what, events, event, error):
    state = folded(*events)
    with pytest.raises(error):
        check(state, event)
