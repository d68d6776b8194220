"""containers-storage's layer operations on the overlay driver, and what only a
stacking driver does (a child must map ids as its parent)."""

from __future__ import annotations

import io

import pytest

from eventstore import errors
from eventstore.idmap import parse

from .contract import ParityContract
from .support import base_tar


class TestOverlayParity(ParityContract):
    driver_name = "overlay"

    def test_a_child_must_map_ids_as_its_parent(self, store):
        image = store.create(content=io.BytesIO(base_tar()), uid_map=parse(["0:100000:65536"]),
                             gid_map=parse(["0:100000:65536"]))
        with pytest.raises(errors.InvalidArgument, match="maps ids as its parent"):
            store.create(parent=image, writable=True, uid_map=parse(["0:300000:65536"]),
                         gid_map=parse(["0:300000:65536"]))
        assert [r.id for r in store.layers()] == [image]
        assert store.driver.layers() == {image}
