"""No test of damage may leave a mount or an immutable file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recovery.support import clear_immutable_under, unmount_everything_under


@pytest.fixture(autouse=True)
def _leave_nothing_behind(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)
    clear_immutable_under(tmp_path)
