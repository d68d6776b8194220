"""The store and the reference model, side by side, on vfs and overlay (replay.stateful).

CI runs a few hundred examples; ``LAYERSTORE_STATEFUL_EXAMPLES=N`` runs N per driver
(``make crash-test`` runs thousands).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from replay.crash import scratch_space
from replay.stateful import StoreMachine

# per driver: overlay steps cost kernel mounts, so it gets fewer examples in CI
CI_EXAMPLES = {"vfs": 300, "overlay": 150}


def _overlay_reason() -> str | None:
    from pathlib import Path

    from eventstore.drivers.overlay import OverlayDriver

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return OverlayDriver.supported(Path(tmp) / "overlay")


@pytest.fixture(scope="module")
def scratch():
    with scratch_space() as base:
        yield str(base)


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_store_behaves_like_the_model(driver: str, scratch: str):
    if driver == "overlay" and (reason := _overlay_reason()):
        pytest.skip(reason)
    examples = int(os.environ.get("LAYERSTORE_STATEFUL_EXAMPLES", CI_EXAMPLES[driver]))

    class Machine(StoreMachine):
        pass

    Machine.driver = driver
    Machine.scratch = scratch
    run_state_machine_as_test(Machine, settings=settings(
        max_examples=examples, stateful_step_count=25, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]))
