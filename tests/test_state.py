"""The pure fold (eventstore/state.py): rules from ``check``, results from ``apply``.

No disk, no clock, no kernel: events are built by hand and folded in memory.
"""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import errors
from eventstore import events as ev
from eventstore.events import Holder
from eventstore.state import State, apply, check, fold

CREATOR = Holder(pid=100, start=7, boot="boot-a")
PROCESS = Holder(pid=200, start=9, boot="boot-a")
LEASE = Holder(lease="build-cache")
BASE, CHILD, OTHER = "b" * 64, "c" * 64, "d" * 64
MISSING = "e" * 64


def created(layer: str, parent: str | None = None, names: tuple[str, ...] = (), time: int = 0,
            owner: Holder = CREATOR) -> ev.LayerCreated:
    return ev.LayerCreated(layer=layer, parent=parent, names=list(names), driver="vfs", owner=owner, time=time)


def completed(layer: str, **digests) -> ev.LayerCompleted:
    return ev.LayerCompleted(layer=layer, **digests)


def marked(layer: str) -> ev.LayerMarkedIncomplete:
    return ev.LayerMarkedIncomplete(layer=layer, reason="delete", owner=PROCESS)


def numbered(events: list[ev.Event], first_lsn: int = 1) -> list[tuple[int, ev.Event]]:
    return list(enumerate(events, start=first_lsn))


def state_of(*events: ev.Event) -> State:
    """The state after ``events``, each checked first: a test's setup must be legal."""
    state = State()
    for lsn, event in numbered(list(events)):
        check(state, event)
        apply(state, lsn, event)
        state.lsn = lsn
    return state


def dump(state: State) -> dict:
    """Everything a State holds, comparable with ==."""
    return {
        "layers": [msgspec.to_builtins(rec) for rec in state.layers.values()],
        "names": dict(sorted(state.names.items())),
        "children": {parent: sorted(kids) for parent, kids in sorted(state.children.items()) if kids},
        "lsn": state.lsn,
    }


def base_events() -> list[ev.Event]:
    """A complete base layer named "base"."""
    return [created(BASE, names=("base",)), completed(BASE)]


def base_and_child_events() -> list[ev.Event]:
    """``base_events`` and a complete child named "child"."""
    return [*base_events(), created(CHILD, parent=BASE, names=("child",)), completed(CHILD)]


def two_layers() -> State:
    return state_of(*base_and_child_events())


def refused(state: State, event: ev.Event, error: type[Exception]) -> None:
    """``check`` raises ``error`` and leaves ``state`` exactly as it was."""
    before = dump(state)
    with pytest.raises(error):
        check(state, event)
    assert dump(state) == before


# --- rules: check() --------------------------------------------------------------------------

class TestNames:
    def test_a_new_layer_cannot_take_a_name_another_layer_has(self):
        refused(two_layers(), created(OTHER, names=("base",)), errors.NameInUse)

    def test_renaming_to_another_layers_name_is_refused(self):
        refused(two_layers(), ev.NamesChanged(layer=CHILD, names=["child", "base"]), errors.NameInUse)

    def test_a_layer_may_keep_its_own_names(self):
        check(two_layers(), ev.NamesChanged(layer=BASE, names=["base", "more"]))

    def test_a_name_freed_by_a_rename_can_be_taken(self):
        state = two_layers()
        rename = ev.NamesChanged(layer=BASE, names=["renamed"])
        check(state, rename)
        apply(state, 5, rename)
        check(state, created(OTHER, names=("base",)))


class TestCreate:
    def test_an_existing_id_is_layer_exists(self):
        refused(two_layers(), created(BASE), errors.LayerExists)

    def test_an_unknown_parent_is_layer_not_found(self):
        refused(two_layers(), created(OTHER, parent=MISSING), errors.LayerNotFound)

    def test_an_incomplete_parent_is_layer_incomplete(self):
        refused(state_of(created(BASE)), created(CHILD, parent=BASE, owner=PROCESS), errors.LayerIncomplete)

    def test_the_creator_of_an_incomplete_parent_may_build_on_it(self):
        # a chain's intents recorded together (eventstore/oci/parallel.py)
        state = state_of(created(BASE), created(CHILD, parent=BASE), created(OTHER, parent=CHILD))
        assert [state.get(i).incomplete for i in (BASE, CHILD, OTHER)] == [True, True, True]

    def test_nobody_builds_on_a_parent_its_creator_abandoned_to_a_delete(self):
        state = state_of(created(BASE), ev.LayerMarkedIncomplete(layer=BASE, reason="recovery", owner=CREATOR))
        refused(state, created(CHILD, parent=BASE), errors.LayerIncomplete)

    def test_a_child_completes_only_after_its_parent(self):
        state = state_of(created(BASE), created(CHILD, parent=BASE))
        refused(state, completed(CHILD), errors.RuleViolation)
        for event in (completed(BASE), completed(CHILD)):
            check(state, event)
            apply(state, 9, event)
        assert not state.get(CHILD).incomplete

    def test_a_parent_with_an_incomplete_child_is_deleted_after_it(self):
        state = state_of(created(BASE), created(CHILD, parent=BASE))
        refused(state, ev.LayerMarkedIncomplete(layer=BASE, reason="recovery", owner=PROCESS), errors.LayerInUse)
        state = state_of(created(BASE), created(CHILD, parent=BASE), ev.LayerDeleted(layer=CHILD),
                         ev.LayerDeleted(layer=BASE))
        assert state.layers == {}

    def test_a_parent_being_deleted_is_layer_incomplete(self):
        refused(state_of(created(BASE), completed(BASE), marked(BASE)), created(CHILD, parent=BASE),
                errors.LayerIncomplete)

    def test_completing_a_complete_layer_is_refused(self):
        refused(two_layers(), completed(BASE), errors.RuleViolation)

    def test_completing_a_layer_being_deleted_is_refused(self):
        refused(state_of(created(BASE), completed(BASE), marked(BASE)), completed(BASE), errors.RuleViolation)

    def test_completing_an_unknown_layer_is_layer_not_found(self):
        refused(State(), completed(MISSING), errors.LayerNotFound)


class TestHolds:
    def test_releasing_an_unheld_layer_is_not_held(self):
        refused(two_layers(), ev.HoldReleased(layer=BASE, holder=PROCESS), errors.NotHeld)

    def test_releasing_a_lease_not_held_is_not_held(self):
        state = state_of(*base_events(), ev.HoldAdded(layer=BASE, holder=PROCESS))
        refused(state, ev.HoldReleased(layer=BASE, holder=LEASE), errors.NotHeld)

    def test_releasing_another_process_hold_is_not_held(self):
        state = state_of(*base_events(), ev.HoldAdded(layer=BASE, holder=PROCESS))
        refused(state, ev.HoldReleased(layer=BASE, holder=CREATOR), errors.NotHeld)

    def test_holding_an_incomplete_layer_is_layer_incomplete(self):
        refused(state_of(created(BASE)), ev.HoldAdded(layer=BASE, holder=PROCESS), errors.LayerIncomplete)

    def test_holding_an_unknown_layer_is_layer_not_found(self):
        refused(State(), ev.HoldAdded(layer=MISSING, holder=PROCESS), errors.LayerNotFound)

    def test_releasing_on_an_unknown_layer_is_layer_not_found(self):
        refused(State(), ev.HoldReleased(layer=MISSING, holder=PROCESS), errors.LayerNotFound)

    def test_holding_a_quarantined_layer_is_refused(self):
        state = state_of(*base_events(), ev.LayerQuarantined(layer=BASE, reason="broken"))
        refused(state, ev.HoldAdded(layer=BASE, holder=PROCESS), errors.LayerQuarantined)


class TestMounts:
    def test_unmounting_an_unmounted_layer_is_not_mounted(self):
        refused(two_layers(), ev.LayerUnmounted(layer=BASE), errors.NotMounted)

    def test_a_forced_unmount_of_an_unmounted_layer_is_not_mounted(self):
        refused(two_layers(), ev.LayerUnmounted(layer=BASE, force=True), errors.NotMounted)

    def test_mounting_an_incomplete_layer_is_layer_incomplete(self):
        refused(state_of(created(BASE)), ev.LayerMounted(layer=BASE), errors.LayerIncomplete)

    def test_mounting_an_unknown_layer_is_layer_not_found(self):
        refused(State(), ev.LayerMounted(layer=MISSING), errors.LayerNotFound)

    def test_unmounting_an_unknown_layer_is_layer_not_found(self):
        refused(State(), ev.LayerUnmounted(layer=MISSING), errors.LayerNotFound)

    def test_reconciling_an_unknown_layer_is_layer_not_found(self):
        refused(State(), ev.MountsReconciled(layer=MISSING), errors.LayerNotFound)


class TestDelete:
    def test_a_held_layer_is_in_use(self):
        state = state_of(*base_events(), ev.HoldAdded(layer=BASE, holder=LEASE))
        refused(state, marked(BASE), errors.LayerInUse)

    def test_a_mounted_layer_is_in_use(self):
        state = state_of(*base_events(), ev.LayerMounted(layer=BASE, mount_point="/m"))
        refused(state, marked(BASE), errors.LayerInUse)

    def test_a_parent_is_in_use(self):
        refused(two_layers(), marked(BASE), errors.LayerInUse)

    def test_a_parent_whose_child_is_incomplete_is_in_use(self):
        refused(state_of(*base_events(), created(CHILD, parent=BASE)), marked(BASE), errors.LayerInUse)

    def test_deleting_a_parent_is_in_use_even_when_marked(self):
        # a delete marked before the child appeared still cannot finish over it
        state = State()
        for lsn, event in numbered([*base_events(), marked(BASE)]):
            apply(state, lsn, event)
        apply(state, 4, created(CHILD, parent=BASE))
        refused(state, ev.LayerDeleted(layer=BASE), errors.LayerInUse)

    def test_deleting_without_a_begun_delete_is_refused(self):
        refused(two_layers(), ev.LayerDeleted(layer=CHILD), errors.RuleViolation)

    def test_marking_an_unknown_layer_is_layer_not_found(self):
        refused(State(), marked(MISSING), errors.LayerNotFound)

    def test_deleting_an_unknown_layer_is_layer_not_found(self):
        refused(State(), ev.LayerDeleted(layer=MISSING), errors.LayerNotFound)

    def test_an_unheld_unmounted_leaf_may_be_deleted(self):
        state = two_layers()
        check(state, marked(CHILD))
        apply(state, 5, marked(CHILD))
        check(state, ev.LayerDeleted(layer=CHILD))

    def test_a_layer_being_created_may_be_marked(self):
        # recovery removes half-made layers: mark, then delete
        state = state_of(created(BASE))
        check(state, marked(BASE))


def test_names_changed_on_an_unknown_layer_is_layer_not_found():
    refused(State(), ev.NamesChanged(layer=MISSING, names=["x"]), errors.LayerNotFound)


def test_names_changed_on_an_incomplete_layer_is_layer_incomplete():
    refused(state_of(created(BASE)), ev.NamesChanged(layer=BASE, names=["x"]), errors.LayerIncomplete)


@pytest.mark.parametrize("event", [
    ev.RecoveryStarted(boot="b"), ev.RecoveryFinished(actions=1), ev.ContentRejected(layer=MISSING, reason="x"),
])
def test_bookkeeping_events_are_always_allowed(event):
    check(State(), event)


# --- results: apply() -----------------------------------------------------------------------

def test_created_then_completed_is_a_complete_layer_with_its_fields():
    state = state_of(created(BASE, names=("base",), time=123), completed(
        BASE, compressed_digest="sha256:" + "1" * 64, compressed_size=10, diff_digest="sha256:" + "2" * 64,
        diff_size=20, compression="gzip", has_tarsplit=True))
    rec = state.get(BASE)
    assert rec is not None
    assert (rec.incomplete, rec.deleting, rec.owner) == (False, False, None)
    assert (rec.created, rec.created_lsn, rec.updated_lsn) == (123, 1, 2)
    assert (rec.compressed_digest, rec.compressed_size) == ("sha256:" + "1" * 64, 10)
    assert (rec.diff_digest, rec.diff_size, rec.compression, rec.has_tarsplit) == ("sha256:" + "2" * 64, 20, "gzip", True)
    assert rec.driver == "vfs" and rec.names == ["base"] and state.owner_of("base") == BASE


def test_an_intent_is_an_incomplete_layer_owned_by_its_creator():
    rec = state_of(created(BASE)).get(BASE)
    assert rec.incomplete and not rec.deleting and rec.owner == CREATOR


def test_holds_count_each_hold_and_release_removes_exactly_one():
    state = state_of(*base_events(), *[ev.HoldAdded(layer=BASE, holder=h) for h in (PROCESS, LEASE, PROCESS)])
    assert state.get(BASE).hold_refs == 3
    apply(state, 6, ev.HoldReleased(layer=BASE, holder=PROCESS))
    assert state.get(BASE).holds == [LEASE, PROCESS]
    apply(state, 7, ev.HoldReleased(layer=BASE, holder=LEASE))
    assert state.get(BASE).holds == [PROCESS]
    apply(state, 8, ev.HoldReleased(layer=BASE, holder=PROCESS))
    assert state.get(BASE).hold_refs == 0


def test_apply_never_makes_hold_refs_negative():
    state = two_layers()
    apply(state, 5, ev.HoldReleased(layer=BASE, holder=PROCESS))  # replay of an unchecked event
    assert state.get(BASE).hold_refs == 0


def test_mount_counts_go_up_down_and_to_zero_when_forced():
    state = state_of(*base_events(), ev.LayerMounted(layer=BASE, mount_point="/m", boot="boot-a"),
                     ev.LayerMounted(layer=BASE, mount_point="/m", boot="boot-a"))
    rec = state.get(BASE)
    assert (rec.mount_count, rec.mount_point, rec.mount_boot) == (2, "/m", "boot-a")
    apply(state, 5, ev.LayerUnmounted(layer=BASE))
    assert (state.get(BASE).mount_count, state.get(BASE).mount_point) == (1, "/m")
    apply(state, 6, ev.LayerUnmounted(layer=BASE))
    assert (state.get(BASE).mount_count, state.get(BASE).mount_point) == (0, "")
    for lsn in (7, 8, 9):
        apply(state, lsn, ev.LayerMounted(layer=BASE, mount_point="/m"))
    apply(state, 10, ev.LayerUnmounted(layer=BASE, force=True))
    assert (state.get(BASE).mount_count, state.get(BASE).mount_point) == (0, "")


def test_reconciling_sets_the_mount_count():
    state = state_of(*base_events(), ev.LayerMounted(layer=BASE, mount_point="/m"),
                     ev.LayerMounted(layer=BASE, mount_point="/m"))
    apply(state, 5, ev.MountsReconciled(layer=BASE, count=0, reason="reboot"))
    assert (state.get(BASE).mount_count, state.get(BASE).mount_point) == (0, "")


def test_names_move_with_names_changed():
    state = two_layers()
    apply(state, 5, ev.NamesChanged(layer=BASE, names=["renamed", "alias"]))
    assert state.get(BASE).names == ["renamed", "alias"]
    assert state.owner_of("base") is None
    assert (state.owner_of("renamed"), state.owner_of("alias")) == (BASE, BASE)
    apply(state, 6, created(OTHER, names=("base",)))
    assert state.owner_of("base") == OTHER
    assert state.owner_of("child") == CHILD


def test_delete_drops_the_layer_its_names_and_its_child_link():
    state = state_of(*base_and_child_events(), ev.HoldAdded(layer=CHILD, holder=LEASE),
                     ev.HoldReleased(layer=CHILD, holder=LEASE), marked(CHILD))
    rec = state.get(CHILD)
    assert rec.incomplete and rec.deleting and rec.owner == PROCESS
    assert state.has_children(BASE)
    apply(state, 8, ev.LayerDeleted(layer=CHILD))
    assert state.get(CHILD) is None
    assert state.owner_of("child") is None
    assert not state.has_children(BASE)
    assert CHILD not in {r.id for r in state}
    check(state, marked(BASE))  # the base is deletable now


def test_quarantine_records_the_reason():
    state = state_of(*base_events(), ev.LayerQuarantined(layer=BASE, reason="recovery failed: EIO"))
    assert state.get(BASE).quarantined == "recovery failed: EIO"


def test_events_for_unknown_layers_change_nothing():
    state = two_layers()
    before = dump(state)
    for event in [ev.HoldAdded(layer=MISSING, holder=LEASE), ev.LayerMounted(layer=MISSING),
                  ev.LayerDeleted(layer=MISSING), ev.RecoveryStarted(), ev.ContentRejected(layer=MISSING)]:
        apply(state, 99, event)
    assert dump(state) == before


def test_every_update_stamps_updated_lsn_and_keeps_created_lsn():
    state = state_of(*base_events(), ev.HoldAdded(layer=BASE, holder=LEASE))
    rec = state.get(BASE)
    assert (rec.created_lsn, rec.updated_lsn) == (1, 3)


def test_apply_does_not_mutate_records_it_replaced():
    # the index hands records out; apply must copy, not edit them in place
    state = two_layers()
    old = state.get(BASE)
    apply(state, 5, ev.HoldAdded(layer=BASE, holder=LEASE))
    assert old.hold_refs == 0 and state.get(BASE).hold_refs == 1


# --- fold -----------------------------------------------------------------------------------

def random_history(seed: int, steps: int) -> list[ev.Event]:
    """A legal history: random operations, kept only when ``check`` accepts them."""
    rng = random.Random(seed)
    state = State()
    history: list[ev.Event] = []
    ids = [f"{i:064x}" for i in range(1, 9)]
    holders = [PROCESS, CREATOR, LEASE, Holder(lease="other")]
    names = ["n0", "n1", "n2", "n3"]
    for _ in range(steps):
        layer = rng.choice(ids)
        kind = rng.randrange(10)
        live = [r.id for r in state if not r.incomplete]
        parent = rng.choice(live) if live and rng.random() < 0.6 else None
        event = [
            lambda: created(layer, parent=parent, names=tuple(rng.sample(names, rng.randrange(2)))),
            lambda: completed(layer),
            lambda: ev.HoldAdded(layer=layer, holder=rng.choice(holders)),
            lambda: ev.HoldReleased(layer=layer, holder=rng.choice(holders)),
            lambda: ev.LayerMounted(layer=layer, mount_point=f"/m/{layer[-1]}"),
            lambda: ev.LayerUnmounted(layer=layer, force=rng.random() < 0.3),
            lambda: marked(layer),
            lambda: ev.LayerDeleted(layer=layer),
            lambda: ev.NamesChanged(layer=layer, names=rng.sample(names, rng.randrange(3))),
            lambda: ev.MountsReconciled(layer=layer, count=0),
        ][kind]()
        try:
            check(state, event)
        except errors.LayerStoreError:
            continue
        apply(state, len(history) + 1, event)
        history.append(event)
    return history


def assert_invariants(state: State) -> None:
    for rec in state:
        assert rec.hold_refs >= 0 and rec.mount_count >= 0
        assert rec.parent is None or rec.parent in state.layers
        for name in rec.names:
            assert state.owner_of(name) == rec.id
    assert all(state.get(owner) is not None and name in state.get(owner).names
               for name, owner in state.names.items())
    for parent, kids in state.children.items():
        assert kids and all(state.get(k).parent == parent for k in kids)
    assert sum(len(k) for k in state.children.values()) == sum(1 for r in state if r.parent)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 120), cut=st.floats(0, 1))
def test_fold_equals_applying_step_by_step(seed, steps, cut):
    history = numbered(random_history(seed, steps))
    stepwise = State()
    for lsn, event in history:
        apply(stepwise, lsn, event)
        stepwise.lsn = lsn
        assert_invariants(stepwise)
    at_once = fold(history)
    assert dump(at_once) == dump(stepwise)
    # folding on from a state part-way gives the same as folding everything
    k = int(len(history) * cut)
    assert dump(fold(history[k:], fold(history[:k]))) == dump(at_once)


def test_random_histories_are_not_trivial():
    # guards the generator above: its histories must exercise every kind of event
    seen = {type(e) for seed in range(5) for e in random_history(seed, 300)}
    assert {ev.LayerCreated, ev.LayerCompleted, ev.HoldAdded, ev.HoldReleased, ev.LayerMounted,
            ev.LayerUnmounted, ev.LayerMarkedIncomplete, ev.LayerDeleted, ev.NamesChanged} <= seen


def test_fold_of_nothing_is_empty():
    state = fold([])
    assert dump(state) == {"layers": [], "names": {}, "children": {}, "lsn": 0}


def test_fold_records_the_last_lsn():
    assert fold(numbered(base_and_child_events(), first_lsn=10)).lsn == 13
