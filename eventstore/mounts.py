"""The kernel's mount table, as this process sees it: ``/proc/self/mountinfo``.

Two questions are asked of it: what is mounted at or below a path (``mounts_under``),
and on which mount an open directory lies (``mount_id_of``, from
``/proc/self/fdinfo``). The second is what tells a bind mount of a directory of the
same filesystem from the directory itself: both have the same ``st_dev``, never the
same mount id.
"""

from __future__ import annotations

import os
import re

import msgspec

from eventstore.errors import StorageError

MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(rb"\\([0-7]{3})")


class Mount(msgspec.Struct, frozen=True):
    """One line of mountinfo: the fields the store uses."""

    mount_id: int
    point: str  # where it is mounted, octal escapes undone
    fstype: str
    source: str


def _unescape(raw: bytes) -> str:
    # the kernel writes space, tab, newline and backslash in a path as \ooo
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), raw))


def mount_table(mountinfo: str = MOUNTINFO) -> list[Mount]:
    """Every mount of this process's mount namespace, in the kernel's order (a mount
    stacked on another comes after it)."""
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
            table.append(Mount(mount_id=int(fields[0]), point=_unescape(fields[4]),
                               fstype=_unescape(fields[dash + 1]), source=_unescape(fields[dash + 2])))
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
