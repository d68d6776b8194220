"""The store contract on the vfs driver."""

from __future__ import annotations

from .contract import StoreContract


class TestVfsStore(StoreContract):
    driver_name = "vfs"
    metadata_keys = {"Dir"}
    real_mounts = False

    def test_metadata_names_the_layers_directory(self, store):
        layer_id = store.create()
        assert store.metadata(layer_id) == {"Dir": str(store.driver.diff_path(layer_id))}
