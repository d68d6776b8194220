"""A sandbox for hostile archives: the layer's directory beside things to protect.

    sandbox/
      outside/            a sentinel tree an escape would change (secret, dir/, link)
      target/             the layer directory the archive is imported into
      target.tar-split

Every test compares a full listing of the sandbox — minus target/ and the tar-split —
before and after, inode numbers and contents included.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from eventstore.archive import import_layer
from eventstore.errors import ContentRejected

from ..archive.support import tree_listing


class Sandbox:
    def __init__(self, base: Path):
        self.base = base
        self.outside = base / "outside"
        (self.outside / "dir").mkdir(parents=True)
        (self.outside / "secret").write_bytes(b"secret")
        (self.outside / "dir/file").write_bytes(b"file")
        os.symlink("secret", self.outside / "link")
        (base / "sibling-file").write_bytes(b"sibling")
        self.target = base / "target"
        self.target.mkdir()
        self.tarsplit = base / "target.tar-split"
        self._before = self._outside_listing()

    def _outside_listing(self) -> dict:
        listing = tree_listing(self.base, skip=("target", "target.tar-split"))
        return {path: facts for path, facts in listing.items() if path != "."}

    def run(self, data: bytes, whiteout_format: str = "overlay", **options):
        return import_layer(io.BytesIO(data), self.target, self.tarsplit,
                            whiteout_format=whiteout_format, **options)

    def refused(self, data: bytes, match: str | None = None, **options) -> str:
        """Import must fail with ContentRejected, leaving no tar-split behind."""
        with pytest.raises(ContentRejected, match=match) as caught:
            self.run(data, **options)
        message = str(caught.value)
        assert "\n" not in message
        assert not self.tarsplit.exists()
        return message

    def contained(self, data: bytes, **options):
        """Import succeeds; what it wrote is inside the target."""
        return self.run(data, **options)

    def in_target(self, name: str | bytes) -> Path:
        return self.target / os.fsdecode(name).lstrip("/")

    def assert_outside_untouched(self) -> None:
        assert self._outside_listing() == self._before


@pytest.fixture
def sandbox(tmp_path: Path):
    box = Sandbox(tmp_path / "sandbox")
    yield box
    box.assert_outside_untouched()
