"""The kernel's mount table as drivers need it: which paths are mount points."""

from __future__ import annotations

import os
import re

_MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Every mount point of this process's mount namespace, as ``mountinfo`` lists them.

    The kernel writes space, tab, newline and backslash in a path as ``\\ooo`` octal
    escapes; they are undone here so the paths compare equal to ``os.path.realpath``.
    """
    with open(mountinfo, "rb") as f:
        lines = f.read().splitlines()
    found = set()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            raw = _MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), fields[4])
            found.add(os.fsdecode(raw))
    return found


def mounts_at_or_below(path: str | os.PathLike) -> list[str]:
    """Mount points at ``path`` or inside it (``path`` resolved), shallowest first."""
    top = os.path.realpath(path)
    inside = [p for p in mount_points() if p == top or p.startswith(top.rstrip("/") + "/")]
    return sorted(inside, key=len)
