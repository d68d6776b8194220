"""layerstore: an event-sourced, crash-safe store of OCI image layers.

``open_store(root)`` opens a store and recovers it (the seed's ``layer_store_init``);
the operations are methods of the ``LayerStore`` it returns. Loaded on first use, so
that importing a submodule costs nothing more.
"""

__version__ = "0.1.0"
__all__ = ["open_store", "LayerStore"]


def __getattr__(name: str):
    if name == "open_store":
        from eventstore.opener import open_store

        return open_store
    if name == "LayerStore":
        from eventstore.store import LayerStore

        return LayerStore
    raise AttributeError(f"module 'eventstore' has no attribute {name!r}")
