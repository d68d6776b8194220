"""Fixtures of the security tests.

Stores (issue 12's cases): ``root`` and ``driver`` (vfs, and overlay where the kernel
allows), ``public_dir`` (a directory every user may traverse), and a teardown that
leaves no mount behind.

A sandbox for hostile archives: the layer's directory beside things to protect.

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

from tests.recovery.support import overlay_or_skip
from tests.store.support import unmount_everything_under

from ..archive.support import tree_listing


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(params=["vfs", "overlay"])
def driver(request, root: Path) -> str:
    if request.param == "overlay":
        overlay_or_skip(root)
    return request.param


@pytest.fixture
def made(root: Path, driver: str) -> Path:
    """A new, empty store at ``root`` using ``driver``."""
    from eventstore.store import LayerStore

    LayerStore.open(root, driver).close()
    return root


@pytest.fixture(autouse=True)
def _no_mount_outlives_a_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


@pytest.fixture
def public_dir():
    """A directory under /tmp that every user may traverse (pytest's own temp dirs are
    0700, which would keep another user out whatever the store did)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="layerstore-security-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        unmount_everything_under(path)
        shutil.rmtree(path, ignore_errors=True)


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
