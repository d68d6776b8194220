"""containers-storage's layer operations on the vfs driver, and what only a copying
driver does (a child with another id mapping is a re-owned copy)."""

from __future__ import annotations

import io
import os

from eventstore.idmap import parse

from .contract import ParityContract
from .support import base_tar


class TestVfsParity(ParityContract):
    driver_name = "vfs"

    def test_a_child_with_another_mapping_is_a_reowned_copy(self, store):
        image = store.create(content=io.BytesIO(base_tar()), uid_map=parse(["0:100000:65536"]),
                             gid_map=parse(["0:100000:65536"]))
        child = store.create(parent=image, writable=True, uid_map=parse(["0:300000:65536"]),
                             gid_map=parse(["0:300000:65536"]))
        data = store.driver.diff_path(child)
        assert os.stat(data / "etc" / "passwd").st_uid == 300000
        assert os.stat(store.driver.diff_path(image) / "etc" / "passwd").st_uid == 100000
        assert store.changes(child) == []  # the same content, seen through each mapping
