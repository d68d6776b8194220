"""Failpoints cannot silently miss: one registry, unknown names and bad specs refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore import faults
from eventstore.errors import InvalidArgument

REPO = Path(__file__).resolve().parent.parent
POINT_CALL = re.compile(r"faults\.point\(\s*\"([^\"]+)\"")


def points_in_code() -> set[str]:
    found = set()
    for path in (REPO / "eventstore").rglob("*.py"):
        found.update(POINT_CALL.findall(path.read_text()))
    return found


def test_every_failpoint_in_the_code_is_declared_in_the_registry():
    assert points_in_code() - set(faults.POINTS) == set()


def test_every_declared_failpoint_is_in_the_code():
    builtin = {n for n in faults.POINTS if not n.startswith(("mydriver.", "leaky."))}
    assert builtin - points_in_code() == set()


@pytest.fixture
def disarmed():
    yield
    faults.disarm()


@pytest.mark.parametrize("name", ["store.create.after-intnet", "", "log.append"])
def test_arming_an_unknown_name_is_refused(disarmed, name):
    with pytest.raises(InvalidArgument, match="unknown failpoint"):
        faults.arm(name, "crash")


@pytest.mark.parametrize("action", ["boom", "crash@x", "crash@0", "crash@-1", "sleep:", "sleep:abc", "eio@"])
def test_a_malformed_action_is_refused(disarmed, action):
    with pytest.raises(InvalidArgument):
        faults.arm("store.create.after-intent", action)


@pytest.mark.parametrize("action", ["crash", "eio@2", "enospc", "sleep:0.01", "sleep:0@3"])
def test_well_formed_actions_are_accepted(disarmed, action):
    faults.arm("store.create.after-intent", action)


def test_an_armed_eio_fires_on_the_chosen_pass(disarmed):
    faults.arm("store.create.after-intent", "eio@2")
    faults.point("store.create.after-intent")
    with pytest.raises(OSError, match="injected EIO"):
        faults.point("store.create.after-intent")


def test_a_user_driver_can_declare_its_own_point(disarmed):
    faults.declare("userdriver.test-only", "a point of a user's driver")
    try:
        faults.arm("userdriver.test-only", "eio")
        with pytest.raises(OSError):
            faults.point("userdriver.test-only")
    finally:
        faults.POINTS.pop("userdriver.test-only")


def run_cli(tmp_path, failpoints: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LAYERSTORE_FAILPOINTS=failpoints)
    return subprocess.run([sys.executable, "-m", "eventstore.cli", "--root", str(tmp_path / "root"),
                           "--driver", "vfs", *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("spec, says", [
    ("store.create.after-intnet=crash", "unknown failpoint 'store.create.after-intnet'"),
    ("store.create.after-intent=boom", "want one of"),
    ("store.create.after-intent=crash@x", "must be a number"),
])
def test_a_bad_environment_spec_is_one_line_and_changes_nothing(tmp_path, spec, says):
    result = run_cli(tmp_path, spec, "create")
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "root" / "log").exists()


def test_an_armed_environment_crash_really_crashes(tmp_path):
    result = run_cli(tmp_path, "store.create.after-intent=crash", "create")
    assert result.returncode == faults.CRASH_EXIT_CODE
