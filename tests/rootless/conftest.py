"""The session's unprivileged user, its home, and /dev/fuse as distributions ship it
(0666; machines without udev leave it 0600). Everything is put back afterwards: mounts
under the home undone, the home removed, the user deleted if we made it, /dev/fuse's
mode restored."""

from __future__ import annotations

import dataclasses
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.support import unmount_everything_under

from .support import User, can_run_as_users, find_python, make_user, remove_user, with_home

FUSE = "/dev/fuse"


@pytest.fixture(scope="session")
def test_user() -> Iterator[User]:
    reason = can_run_as_users()
    if reason:
        pytest.skip(f"cannot run as an unprivileged user: {reason}")
    user, made = make_user()
    try:
        python = find_python(user)
        if python is None:
            pytest.skip("no Python interpreter the test user may run (with the project's packages)")
        yield dataclasses.replace(user, python=python)
    finally:
        if made:
            remove_user(user)


@pytest.fixture(scope="session")
def fuse_for_users() -> Iterator[None]:
    """/dev/fuse at 0666 for the session, as distributions ship it."""
    try:
        mode = stat.S_IMODE(os.stat(FUSE).st_mode)
    except FileNotFoundError:
        pytest.skip(f"no {FUSE} on this machine")
    os.chmod(FUSE, mode | 0o666)
    try:
        yield
    finally:
        os.chmod(FUSE, mode)


@pytest.fixture
def user(test_user: User, fuse_for_users) -> Iterator[User]:
    """The test user with a fresh home of its own (on a path any user may traverse)."""
    base = Path(tempfile.mkdtemp(prefix="layerstore-rootless-"))
    try:
        base.chmod(0o755)
        yield with_home(test_user, base)
    finally:
        unmount_everything_under(base)  # FUSE mounts of the plain user live in our namespace
        import shutil

        shutil.rmtree(base, ignore_errors=True)
