"""Bugs the crash harness and the stateful test found, kept found."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import errors, faults
from eventstore.opener import open_store
from eventstore.store import LayerStore
from replay.verify import check

LAYER = "a" * 64


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(tmp_path / "store", "vfs")
    yield store
    faults.disarm()
    store.close()


@pytest.mark.parametrize("failpoint", ["index.before-commit", "index.after-commit"])
def test_a_failed_projection_is_caught_up_not_skipped(store: LayerStore, failpoint: str, caplog):
    """``--fault eio``: the events of a hold were durable but their projection failed;
    the next projection moved the read models past them, for good (reopen included).
    And (issue #11, case 6) the hold is reported as done — it is in the log — with a
    warning, not as failed."""
    store.create(LAYER)
    faults.arm(failpoint, "eio@1")
    assert store.hold(LAYER, lease="one") == 1
    assert "the log has it" in caplog.text
    faults.disarm()
    assert store.hold(LAYER, lease="two") == 2
    assert check(store) == []
    store.close()
    with open_store(store.root, "vfs") as reopened:
        assert reopened.hold_refs(LAYER) == 2 and check(reopened) == []


def test_a_checkpoint_of_an_empty_store(store: LayerStore):
    """The stateful test: ``checkpoint`` on a new store failed on an assertion."""
    path = store.checkpoint()
    assert path.exists() and store.layers() == []


def test_a_hostile_lease_is_a_usage_error_even_for_an_unknown_layer(store: LayerStore):
    """The stateful test: the lease was checked after the lookup, so the same bad call
    was InvalidArgument (exit 2) or LayerNotFound (exit 1) by the layer's existence."""
    for call in (store.hold, store.release):
        with pytest.raises(errors.InvalidArgument):
            call("nosuch", lease="")
