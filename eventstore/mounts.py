"""The kernel's mount table as the store reads it, and letting go of a mount.

One reader of ``/proc/self/mountinfo`` for the drivers, the crash harness and the tests.
The kernel writes space, tab, newline and backslash in a path as ``\\ooo`` octal
escapes; they are undone here so the paths compare equal to ``os.path.realpath``.
"""

from __future__ import annotations

import ctypes
import os
import re

MNT_DETACH = 2        # umount2: detach now, let go when no longer busy
UMOUNT_NOFOLLOW = 8   # umount2: never follow a symlink at the target

_ESCAPE = re.compile(rb"\\([0-7]{3})")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount_table(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount point of every mount of this process's mount namespace, in the
    kernel's order; a point with mounts stacked on it appears once for each."""
    with open(mountinfo, "rb") as f:
        lines = f.read().splitlines()
    found = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            found.append(os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), fields[4])))
    return found


def mount_points(under: str | os.PathLike | None = None, mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """The mount points of this namespace, or those at or below ``under`` (resolved
    with realpath)."""
    found = set(mount_table(mountinfo))
    if under is None:
        return found
    prefix = os.path.realpath(under)
    return {p for p in found if p == prefix or p.startswith(prefix.rstrip("/") + "/")}


def umount(target: str | os.PathLike, flags: int = 0) -> int:
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
