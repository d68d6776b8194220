"""ID-mapped layers: the ids a layer's content names, and the host ids its files have.

A layer created with ``--uidmap 0:100000:65536`` keeps its files owned by host ids
100000 and up: what the tar says is uid 0 is written as 100000. A container running in a
user namespace with the same mapping sees them as owned by 0, and no id of the host's
own users appears inside (docs/idmap.md). The mapping is recorded in the layer's
``layer-created`` event; extraction shifts owners (container -> host), and diffs and
change lists shift them back (host -> container), so a mapped layer exports the same tar
as an unmapped one.

The syntax is containers/storage's: ``CONTAINER:HOST:SIZE``, several triples joined by
``:`` or ``,`` or given in repeated options.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from eventstore.errors import ContentRejected, InvalidArgument
from eventstore.events import IDMapping

MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown
#: what an id with no mapping shows as, as the kernel shows unmapped ids in a namespace
OVERFLOW_ID = 65534


def parse(specs: Iterable[str], what: str = "uidmap") -> list[IDMapping]:
    """Mappings from ``CONTAINER:HOST:SIZE`` specs; InvalidArgument for a malformed or
    overlapping one."""
    numbers: list[str] = []
    for spec in specs:
        for part in spec.replace(",", ":").split(":"):
            if part.strip():
                numbers.append(part.strip())
    if len(numbers) % 3:
        raise InvalidArgument(f"--{what} {':'.join(numbers)!r}: want CONTAINER:HOST:SIZE triples")
    mappings = []
    for i in range(0, len(numbers), 3):
        try:
            container, host, size = (int(n, 10) for n in numbers[i:i + 3])
        except ValueError:
            raise InvalidArgument(f"--{what} {':'.join(numbers[i:i + 3])!r}: not numbers") from None
        if size < 1 or container < 0 or host < 0 or container + size - 1 > MAX_ID or host + size - 1 > MAX_ID:
            raise InvalidArgument(f"--{what} {container}:{host}:{size}: ids must lie in 0..{MAX_ID}, size >= 1")
        mappings.append(IDMapping(container_id=container, host_id=host, size=size))
    check(mappings, what)
    return mappings


def check(mappings: Sequence[IDMapping], what: str = "uidmap") -> None:
    """InvalidArgument when two ranges overlap on either side (an id would map twice)."""
    for side in ("container_id", "host_id"):
        spans = sorted((getattr(m, side), getattr(m, side) + m.size) for m in mappings)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:
                raise InvalidArgument(f"--{what}: {side.replace('_', ' ')} ranges overlap")


def to_host(mappings: Sequence[IDMapping], container_id: int) -> int | None:
    """The host id of ``container_id`` (itself when there is no mapping; None: unmapped)."""
    if not mappings:
        return container_id
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return None


def to_container(mappings: Sequence[IDMapping], host_id: int) -> int:
    """The id ``host_id`` has inside (itself when there is no mapping; the overflow id,
    65534, for an id the mapping does not reach)."""
    if not mappings:
        return host_id
    for m in mappings:
        if m.host_id <= host_id < m.host_id + m.size:
            return m.container_id + host_id - m.host_id
    return OVERFLOW_ID


def describe(mappings: Sequence[IDMapping]) -> str:
    """``0:100000:65536,...`` (the option syntax)."""
    return ",".join(f"{m.container_id}:{m.host_id}:{m.size}" for m in mappings)


class Owners:
    """Owner translation for one layer: content ids to host ids, and back."""

    def __init__(self, uid_map: Sequence[IDMapping] = (), gid_map: Sequence[IDMapping] = ()):
        self.uid_map = list(uid_map)
        self.gid_map = list(gid_map)

    def __bool__(self) -> bool:
        return bool(self.uid_map or self.gid_map)

    def host(self, uid: int, gid: int, where: str = "") -> tuple[int, int]:
        """The host owner of content owned by ``uid``:``gid``; ContentRejected when the
        layer's mapping does not reach it (it would land on an id of the host's)."""
        host_uid, host_gid = to_host(self.uid_map, uid), to_host(self.gid_map, gid)
        if host_uid is None or host_gid is None:
            which = f"uid {uid}" if host_uid is None else f"gid {gid}"
            raise ContentRejected(f"{where or 'an entry'}: {which} is outside the layer's id mapping")
        return host_uid, host_gid

    def container(self, uid: int, gid: int) -> tuple[int, int]:
        """The content owner of a file the host sees owned by ``uid``:``gid``."""
        return to_container(self.uid_map, uid), to_container(self.gid_map, gid)


def chown_root(path: Path, owners: Owners) -> None:
    """Give a new mapped layer's top directory to the mapped root (container 0:0), so
    that root inside the container owns ``/``."""
    if owners:
        uid, gid = owners.host(0, 0, "the layer's root directory")
        os.chown(path, uid, gid)


def shift_tree(path: Path, old: Owners, new: Owners) -> int:
    """Re-own every entry under ``path`` (a copy of a parent with mapping ``old``) for
    mapping ``new``: host id -> content id through ``old`` -> host id through ``new``.
    Symlinks are re-owned themselves, never followed; modes are put back (chown clears
    set-id bits). The number of entries changed."""
    changed = 0
    hardlinked: set[tuple[int, int]] = set()
    if not os.path.isdir(path) or os.path.islink(path):  # one entry, not a tree
        return _shift_one(os.fspath(path), old, new, ".")
    for dirpath, dirnames, filenames in os.walk(path):
        # each entry once: the top here, every other one in its parent's listing
        for name in ([None] if dirpath == os.fspath(path) else []) + dirnames + filenames:
            full = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(full)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in hardlinked:
                    continue  # re-owned through its first name already
                hardlinked.add((st.st_dev, st.st_ino))
            changed += _shift_one(full, old, new, os.path.relpath(full, path), st)
    return changed


def _shift_one(full: str, old: Owners, new: Owners, where: str, st: os.stat_result | None = None) -> int:
    st = st or os.lstat(full)
    uid, gid = new.host(*old.container(st.st_uid, st.st_gid), where=where)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return 0
    capability = _capability(full) if stat.S_ISREG(st.st_mode) else None
    os.chown(full, uid, gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o6000:
        os.chmod(full, stat.S_IMODE(st.st_mode))
    if capability is not None:  # chown drops file capabilities: put them back
        os.setxattr(full, "security.capability", capability, follow_symlinks=False)
    return 1


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return None
