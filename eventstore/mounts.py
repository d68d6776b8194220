"""The kernel's mount table, as this process sees it: ``/proc/self/mountinfo``; and
letting go of a mount. One reader for the drivers, removal, the harnesses and the tests.

Three questions are asked of it: which paths are mount points (``mount_points``), what
is mounted at or below a path (``mounts_under``), and on which mount an open directory
lies (``mount_id_of``, from ``/proc/self/fdinfo``). The last is what tells a bind mount of
a directory of the same filesystem from the directory itself: both have the same
``st_dev``, never the same mount id. The kernel writes space, tab, newline and backslash
in a path as ``\\ooo`` octal escapes; they are undone here, so paths compare equal to
``os.path.realpath``.
"""

from __future__ import annotations

import ctypes
import os
import re
from typing import NamedTuple

from eventstore.errors import StorageError

MOUNTINFO = "/proc/self/mountinfo"
MNT_DETACH = 2        # umount2: detach now, let go when no longer busy
UMOUNT_NOFOLLOW = 8   # umount2: never follow a symlink at the target

_ESCAPE = re.compile(rb"\\([0-7]{3})")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class Mount(NamedTuple):
    """One line of mountinfo: the fields the store uses."""

    mount_id: int
    point: str  # where it is mounted, octal escapes undone
    fstype: str
    source: str


def _unescape(raw: bytes) -> str:
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), raw))


def mount_table(mountinfo: str = MOUNTINFO) -> list[Mount]:
    """Every mount of this process's mount namespace, in the kernel's order (a mount
    stacked on another comes after it, and a point with mounts stacked on it appears
    once for each)."""
    try:
        with open(mountinfo, "rb") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise StorageError(f"cannot read the mount table {mountinfo}: {err.strerror}") from None
    table = []
    for line in lines:
        fields = line.split(b" ")
        try:
            dash = fields.index(b"-", 6)
            table.append(Mount(int(fields[0]), _unescape(fields[4]), _unescape(fields[dash + 1]),
                               _unescape(fields[dash + 2])))
        except (ValueError, IndexError):
            continue  # not a mountinfo line
    return table


def real_path(path: str | os.PathLike) -> str:
    """``path`` with every symlink of its *parent* resolved, its last component kept:
    the path the mount table would show for it, without following a symlink that may
    sit in its place."""
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(head), tail)


def mounts_under(path: str | os.PathLike, table: list[Mount] | None = None) -> list[Mount]:
    """The mounts at ``path`` or anywhere below it, outermost first."""
    prefix = real_path(path)
    inside = [m for m in (table if table is not None else mount_table())
              if m.point == prefix or m.point.startswith(prefix.rstrip("/") + "/")]
    return sorted(inside, key=lambda m: m.point.count("/"))


def mount_points(under: str | os.PathLike | None = None, mountinfo: str = MOUNTINFO) -> set[str]:
    """The mount points of this namespace, or those at or below ``under``."""
    if under is None:
        return {m.point for m in mount_table(mountinfo)}
    return {m.point for m in mounts_under(under, mount_table(mountinfo))}


def mount_id_of(fd: int) -> int:
    """The id of the mount the open file ``fd`` lies on (``mnt_id`` in fdinfo)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except OSError as err:
        raise StorageError(f"cannot tell which mount a directory is on (/proc/self/fdinfo: "
                           f"{err.strerror}); refusing to remove anything") from None
    raise StorageError("cannot tell which mount a directory is on: no mnt_id in /proc/self/fdinfo")


def umount(target: str | os.PathLike | bytes, flags: int = 0) -> int:
    """umount2(2) ``target`` (never following a symlink); 0 or the errno."""
    if _libc.umount2(os.fsencode(target), flags | UMOUNT_NOFOLLOW) == 0:
        return 0
    return ctypes.get_errno()


def detach_all(under: str | os.PathLike, rounds: int = 16) -> None:
    """Detach every mount at or below ``under``, deepest first (mounts stacked on one
    point come off one per round)."""
    for _ in range(rounds):
        points = mount_points(under)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            umount(point, MNT_DETACH)
