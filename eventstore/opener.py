"""Opening a store the way the seed's ``layer_store_init`` does: open, then recover.

This sits above both ``eventstore.store`` (the operations) and ``eventstore.recovery``
(which uses the store's public write session), so that neither imports the other back.
"""

from __future__ import annotations

import os

from eventstore.events import Holder
from eventstore.log import DEFAULT_SEGMENT_SIZE
from eventstore.recovery import recover_store
from eventstore.store import LayerStore


def open_store(root: str | os.PathLike, driver: str | None = None, *, readonly: bool = False,
               recover: bool = True, owner: Holder | None = None,
               segment_size: int = DEFAULT_SEGMENT_SIZE, driver_options: dict | None = None) -> LayerStore:
    """Open (creating if needed) the store at ``root``, and unless ``readonly`` or
    ``recover=False``, recover what a crash left behind (DESIGN §4). ``driver_options``:
    keyword arguments of the driver (overlay: ``mountopt``, ``unmount_timeout``)."""
    store = LayerStore.open(root, driver, readonly=readonly, owner=owner, segment_size=segment_size,
                            driver_options=driver_options)
    if recover and not readonly:
        try:
            recover_store(store)
        except BaseException:
            store.close()
            raise
    return store
