"""Storage drivers, found by name. A user registers their own with ``register``."""

from __future__ import annotations

from pathlib import Path

from eventstore.drivers.base import Driver, FsInfo

_registry: dict[str, str | type[Driver]] = {
    "btrfs": "eventstore.drivers.btrfs:BtrfsDriver",
    "fuse-overlayfs": "eventstore.drivers.fuse_overlay:FuseOverlayDriver",
    "overlay": "eventstore.drivers.overlay:OverlayDriver",
    "vfs": "eventstore.drivers.vfs:VfsDriver",
}


def register(name: str, driver: type[Driver] | str) -> None:
    """Make ``driver`` (a class, or "module:Class") available under ``name``."""
    _registry[name] = driver


def names() -> list[str]:
    return sorted(_registry)


def driver_class(name: str) -> type[Driver]:
    from eventstore.errors import InvalidArgument

    try:
        entry = _registry[name]
    except KeyError:
        raise InvalidArgument(f"unknown driver {name!r} (known: {', '.join(names())})") from None
    if isinstance(entry, str):
        import importlib

        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _registry[name] = entry
    return entry


def open_driver(name: str, root: Path, check: bool = True, options: dict | None = None) -> Driver:
    """The driver ``name`` with its home under the store root; ``check`` first asks
    the driver whether it can run here (a test mount for overlay). ``options``: the
    driver's keyword arguments (from the config file's driver options)."""
    from eventstore.errors import DriverError, InvalidArgument

    cls = driver_class(name)
    # drivers sharing one layout share one home (fuse-overlayfs uses overlay's), so a
    # store moves between them by naming the other in <root>/driver
    home = Path(root) / (cls.home_name or name)
    reason = cls.supported(home) if check else None
    if reason:
        raise DriverError(f"driver {name} cannot run here: {reason}")
    try:
        return cls(home, **(options or {}))
    except TypeError as exc:
        raise InvalidArgument(f"driver {name}: unknown option ({exc})") from None


def default_driver(root: Path) -> str:
    """overlay where it can mount (DESIGN §8); else fuse-overlayfs where it can (a
    rootless user, as Podman's default); else vfs."""
    for name in ("overlay", "fuse-overlayfs"):
        cls = driver_class(name)
        if cls.supported(Path(root) / (cls.home_name or name)) is None:
            return name
    return "vfs"


__all__ = ["Driver", "FsInfo", "register", "names", "driver_class", "open_driver", "default_driver"]
