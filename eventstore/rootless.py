"""Whether this process is rootless: not root in the initial user namespace.

``unshare --user --map-root-user`` makes a process root (uid 0) in a new user namespace
while the kernel still treats it as the user outside for everything that namespace does
not own: trusted.* xattrs, device nodes, mounts of most filesystems, files owned by ids
it has no mapping for. So uid 0 alone does not make a process privileged; uid 0 *and*
an identity mapping of uid 0 does (``/proc/self/uid_map`` says ``0 0 4294967295`` in the
initial namespace). This is how Podman tells rootless from rootful, and the store uses
it for the default root, the default driver, and how layer files are owned.
"""

from __future__ import annotations

import os

UID_MAP = "/proc/self/uid_map"


def in_initial_user_namespace(uid_map: str = UID_MAP) -> bool:
    """True when uid 0 here is uid 0 outside (the initial namespace, or one that maps root
    onto itself, which only root can make)."""
    try:
        with open(uid_map) as f:
            lines = f.read().split("\n")
    except OSError:
        return True  # no /proc/self/uid_map: a kernel without user namespaces
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and fields[0] == "0":
            return fields[1] == "0"
    return False  # uid 0 has no mapping at all


def is_rootless() -> bool:
    """True unless the process is root in the initial user namespace."""
    return os.geteuid() != 0 or not in_initial_user_namespace()
