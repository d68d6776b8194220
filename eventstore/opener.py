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
               segment_size: int = DEFAULT_SEGMENT_SIZE, driver_options: dict | None = None,
               history_retention: str | None = None, archive: bool | None = None) -> LayerStore:
    """Open (creating if needed) the store at ``root``, and unless ``readonly`` or
    ``recover=False``, recover what a crash left behind (DESIGN §4). ``driver_options``:
    keyword arguments of the driver (overlay: ``mountopt``, ``unmount_timeout``).

    The log's lifecycle (docs/lifecycle.md): ``history_retention`` (``90d``, ``5000000``;
    default ``$LAYERSTORE_HISTORY_RETENTION``, else keep everything) and ``archive``
    (default ``$LAYERSTORE_ARCHIVE`` != "0", i.e. on)."""
    from eventstore.lifecycle import parse_retention

    retention_text = history_retention if history_retention is not None else \
        os.environ.get("LAYERSTORE_HISTORY_RETENTION", "")
    retention = parse_retention(retention_text) if retention_text else None  # bad input: before anything opens
    store = LayerStore.open(root, driver, readonly=readonly, owner=owner, segment_size=segment_size,
                            driver_options=driver_options)
    store.history_retention = retention
    store.archive_segments = archive if archive is not None else os.environ.get("LAYERSTORE_ARCHIVE", "1") != "0"
    if recover and not readonly:
        try:
            recover_store(store)
        except BaseException:
            store.close()
            raise
    return store
