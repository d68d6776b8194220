"""Where the CLI's store, driver and driver options come from, in the spirit of
containers-storage's ``storage.conf``.

First match wins, option by option:

1. the command line (``--root``, ``--driver``, ``--history-retention``);
2. the environment (``LAYERSTORE_ROOT``, ``LAYERSTORE_DRIVER``,
   ``LAYERSTORE_HISTORY_RETENTION``, ``LAYERSTORE_ARCHIVE``);
3. the user's file, ``$XDG_CONFIG_HOME/layerstore/layerstore.toml``
   (``~/.config/...``), then the system's, ``/etc/layerstore/layerstore.toml``
   (``LAYERSTORE_CONFIG`` names one file instead of both);
4. the defaults (``/var/lib/layerstore`` for root, else ``$XDG_DATA_HOME/layerstore``;
   overlay where it can mount, else fuse-overlayfs, else vfs; keep all history; archive
   sealed segments).

The file::

    [storage]
    root = "/var/lib/layerstore"
    driver = "overlay"
    history-retention = "90d"       # or an event count, "5000000" (docs/lifecycle.md)
    log-archive = true              # compress sealed log segments

    [storage.options.overlay]       # keyword arguments of that driver
    mountopt = "nodev,nosuid"
    unmount_timeout = 5.0

The files are read with the standard library's ``tomllib``, imported only when a file
exists: most calls find none and pay two ``stat`` calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from eventstore.errors import InvalidArgument

SYSTEM_FILE = "/etc/layerstore/layerstore.toml"
_STORAGE_KEYS = {"root", "driver", "options", "history-retention", "log-archive"}


class Settings(NamedTuple):
    root: str
    driver: str | None
    driver_options: dict  # of the driver chosen (empty when the file names none)
    files: list[str]  # the files read, system first
    history_retention: str | None = None  # a policy (checked), None: keep everything
    archive: bool = True  # compress sealed segments


def config_files(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The config files that exist, least specific first (a later one wins)."""
    if environ.get("LAYERSTORE_CONFIG"):
        return [environ["LAYERSTORE_CONFIG"]]
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [path for path in (SYSTEM_FILE, os.path.join(base, "layerstore", "layerstore.toml"))
            if os.path.exists(path)]


def default_root(environ: Mapping[str, str] = os.environ) -> str:
    from eventstore.rootless import is_rootless

    if not is_rootless():  # root in a user namespace is still a user: its own data home
        return "/var/lib/layerstore"
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "layerstore")


def read_file(path: str) -> dict:
    """The ``[storage]`` table of one file, checked; InvalidArgument naming the file."""
    import tomllib

    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"config file {path}: {exc}") from None
    except OSError as exc:
        raise InvalidArgument(f"config file {path}: {exc.strerror}") from None
    unknown = set(document) - {"storage"}
    storage = document.get("storage", {})
    if unknown or not isinstance(storage, dict) or set(storage) - _STORAGE_KEYS:
        keys = sorted(unknown | (set(storage) - _STORAGE_KEYS if isinstance(storage, dict) else set()))
        raise InvalidArgument(f"config file {path}: unknown key(s) {', '.join(keys) or 'storage'}; "
                              f"want [storage] root, driver, history-retention, log-archive, "
                              f"[storage.options.DRIVER]")
    for key in ("root", "driver"):
        if key in storage and not (isinstance(storage[key], str) and storage[key]):
            raise InvalidArgument(f"config file {path}: storage.{key} must be a non-empty string")
    if "history-retention" in storage:
        _check_retention(storage["history-retention"], f"config file {path}: storage.history-retention")
    if "log-archive" in storage and not isinstance(storage["log-archive"], bool):
        raise InvalidArgument(f"config file {path}: storage.log-archive must be true or false")
    options = storage.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise InvalidArgument(f"config file {path}: [storage.options.DRIVER] tables of driver options")
    return storage


def _check_retention(value, where: str) -> str:
    from eventstore.lifecycle import parse_retention

    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: want a string such as \"90d\" or \"5000000\"")
    try:
        parse_retention(value)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc}") from None
    return value


def settings(root: str | None, driver: str | None, environ: Mapping[str, str] = os.environ,
             history_retention: str | None = None) -> Settings:
    """The root, driver and driver options a command uses (see the module docstring)."""
    files = config_files(environ)
    merged: dict = {"options": {}}
    for path in files:  # the system's first, the user's over it
        table = read_file(path)
        merged.update({k: v for k, v in table.items() if k != "options"})
        for name, options in table.get("options", {}).items():
            merged["options"][name] = {**merged["options"].get(name, {}), **options}
    root = root or environ.get("LAYERSTORE_ROOT") or merged.get("root") or default_root(environ)
    driver = driver or environ.get("LAYERSTORE_DRIVER") or merged.get("driver")
    options = merged["options"].get(driver or _recorded_driver(root), {}) if merged["options"] else {}
    retention = history_retention or environ.get("LAYERSTORE_HISTORY_RETENTION") or merged.get("history-retention")
    if retention is not None:
        where = ("--history-retention" if history_retention else "LAYERSTORE_HISTORY_RETENTION"
                 if environ.get("LAYERSTORE_HISTORY_RETENTION") else "storage.history-retention")
        retention = _check_retention(retention, where)
    archive = environ["LAYERSTORE_ARCHIVE"] != "0" if environ.get("LAYERSTORE_ARCHIVE") else \
        merged.get("log-archive", True)
    return Settings(root, driver, dict(options), files, retention, archive)


def _recorded_driver(root: str) -> str | None:
    """The driver an existing store was made with (its options apply), else None."""
    try:
        with open(os.path.join(root, "driver")) as f:
            return f.read().strip() or None
    except OSError:
        return None
