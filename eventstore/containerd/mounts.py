"""The mounts ``Prepare``, ``View`` and ``Mounts`` hand to containerd, which performs
them itself (docs/containerd.md, Mounts): the shapes of containerd's own overlayfs
snapshotter, built from the store driver's layout. Nothing here mounts anything, and
the store's mount counts are not involved.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from eventstore.drivers import Driver
from eventstore.errors import InvalidArgument

SUPPORTED_DRIVERS = ("overlay", "vfs")
#: characters overlay's option string cannot carry unescaped, and containerd does not escape
_OPTION_SEPARATORS = (",", ":", "\\")


class Mount(NamedTuple):
    type: str
    source: str
    options: list[str]


def check_driver(driver: Driver) -> None:
    """InvalidArgument unless containerd can be served from this driver and root."""
    if driver.name not in SUPPORTED_DRIVERS:
        raise InvalidArgument(f"driver {driver.name} cannot serve containerd (use {' or '.join(SUPPORTED_DRIVERS)})")
    if driver.name == "overlay" and any(c in str(driver.home) for c in _OPTION_SEPARATORS):
        raise InvalidArgument(f"store path {driver.home} has one of , : \\ which overlay mount options "
                              "cannot carry for containerd")


def _bind(path: os.PathLike, readonly: bool) -> list[Mount]:
    return [Mount("bind", os.fspath(path), ["ro" if readonly else "rw", "rbind"])]


def _index_off() -> list[str]:
    # containerd turns the overlay index off where the kernel has the option: with it
    # on, a lower dir once mounted with another upper refuses to mount again
    return ["index=off"] if os.path.exists("/sys/module/overlay/parameters/index") else []


def snapshot_mounts(driver: Driver, layer_id: str, parent_id: str | None, readonly: bool) -> list[Mount]:
    """What containerd mounts for the snapshot in layer ``layer_id`` (an active one when
    not ``readonly``, a view when it is)."""
    if driver.name == "vfs" or parent_id is None:
        return _bind(driver.diff_path(layer_id), readonly)
    from eventstore.drivers.overlay import OverlayDriver

    assert isinstance(driver, OverlayDriver), driver  # check_driver let nothing else through
    lowers = driver.lower_links(layer_id)
    if readonly and len(lowers) == 1:
        # overlay needs two lower dirs without an upper one: one parent is just bound
        return _bind(driver.diff_path(parent_id), True)
    options = _index_off()
    if not readonly:
        options += [f"workdir={driver.work_path(layer_id)}", f"upperdir={driver.diff_path(layer_id)}"]
    options.append("lowerdir=" + ":".join(os.fspath(p) for p in lowers))
    return [Mount("overlay", "overlay", options)]
