"""``layerstore status``: facts about a store and its driver, as containers-storage's
``status`` gives them (driver, backing filesystem, d_type support), plus what only an
event-sourced store has (layer count, log size, last checkpoint)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

#: statfs f_type -> name, as containers-storage names them
_FILESYSTEMS = {
    0xEF53: "extfs", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs", 0x794C7630: "overlayfs",
    0x65735546: "fuse", 0x6969: "nfs", 0x2FC12FC1: "zfs", 0x5346544E: "ntfs", 0x4D44: "vfat",
    0xF15F: "ecryptfs", 0x73717368: "squashfs", 0x858458F6: "ramfs",
}
DT_UNKNOWN = 0


class _Statfs(ctypes.Structure):
    # struct statfs of 64-bit Linux: f_type comes first, as a long
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


class _Dirent(ctypes.Structure):
    # struct dirent64 of glibc: ino, off, reclen, type, name
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir64.restype = ctypes.POINTER(_Dirent)
_libc.readdir64.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]


def backing_filesystem(path: Path) -> str:
    """The name of the filesystem ``path`` is on (its magic number in hex if unknown)."""
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return "unknown"
    magic = buf.f_type & 0xFFFFFFFF
    return _FILESYSTEMS.get(magic, f"0x{magic:x}")


def supports_d_type(path: Path) -> bool:
    """True when directory listings on ``path``'s filesystem say each entry's type
    (overlay needs it to hide whiteouts fast). Read from ``path``'s own entries: a
    status is a read, and writes nothing."""
    handle = _libc.opendir(os.fsencode(path))
    if not handle:
        return False
    try:
        while True:
            entry = _libc.readdir64(handle)
            if not entry:
                return False  # nothing but . and ..: no entry to tell by
            if entry.contents.d_name not in (b".", b".."):
                return entry.contents.d_type != DT_UNKNOWN
    finally:
        _libc.closedir(handle)


def log_size(root: Path) -> int:
    """Bytes of the log's segment files."""
    from eventstore.log.format import segment_number

    try:
        with os.scandir(Path(root) / "log") as entries:
            return sum(e.stat().st_size for e in entries if segment_number(e.name) is not None)
    except FileNotFoundError:
        return 0


def last_checkpoint(root: Path) -> tuple[int, int] | None:
    """(LSN, mtime in ns) of the newest checkpoint file, None when there is none."""
    try:
        names = os.listdir(Path(root) / "checkpoints")
    except FileNotFoundError:
        return None
    lsns = [int(n[:-5]) for n in names if n.endswith(".ckpt") and n[:-5].isdigit()]
    if not lsns:
        return None
    newest = max(lsns)
    path = Path(root) / "checkpoints" / next(n for n in names if n.endswith(".ckpt") and n[:-5].isdigit()
                                             and int(n[:-5]) == newest)
    return newest, path.stat().st_mtime_ns


def status(store) -> list[tuple[str, str]]:
    """(name, value) pairs, in the order ``status`` prints them."""
    from eventstore.timefmt import rfc3339

    driver = store.driver
    home = driver.home if driver.home.is_dir() else store.root
    count = store.index.conn.execute("SELECT count(*) FROM layers").fetchone()[0]
    newest = last_checkpoint(store.root)
    facts = [
        ("Root", str(store.root)),
        ("Driver Name", driver.name),
        ("Driver Options", ",".join(f"{k}={v}" for k, v in sorted(getattr(store, "driver_options", {}).items()))
         or "none"),
        ("Backing Filesystem", backing_filesystem(home)),
        ("Supports d_type", "true" if supports_d_type(store.root) else "false"),
    ]
    if driver.stacks_layers:
        facts += [("New Mount API", "true" if getattr(driver, "new_mount_api", False) else "false"),
                  ("Max Layer Depth", str(getattr(driver, "max_depth", "")) or "unknown")]
    facts += [
        ("Layers", str(count)),
        ("Log Size", str(log_size(store.root))),
        ("Log Last LSN", str(store.log.last_lsn)),
        ("Last Checkpoint", f"LSN {newest[0]} at {rfc3339(newest[1])}" if newest else "none"),
    ]
    return facts
