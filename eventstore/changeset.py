"""What a layer changed: the ``changes`` list (Add, Modify, Delete of paths) and its size.

Two ways to compute it, the two containers-storage uses, so that a list from either
store reads the same:

- ``tree_changes(new, old)`` compares two whole trees (a vfs layer and its parent, or
  any layer's view and another's). An entry is modified when its type, mode, owner or
  device differ, or — not for directories, whose size and time say nothing — its size
  or modification time, or its file capabilities. A directory with changes below it is
  listed as modified too. What only ``old`` has is deleted (its subtree is not listed).
- ``upper_changes(upper, lowers)`` walks an overlay layer's own directory: a 0:0
  character device deletes its path, an opaque directory deletes the lower one; an
  entry is added unless a lower dir has that path, then modified (a directory equal in
  size, mode and time to the lower one is skipped). The parent of an added or deleted
  path is listed as modified.

Owners are compared as the content sees them: an ID-mapped layer's host ids are mapped
back (``eventstore.idmap``). Paths are absolute within the layer, sorted by their
components (the order of a walk). Nothing here writes; directories are read through
file descriptors and symlinks are never followed, except where containers-storage
follows them too (looking a path up in the lower dirs).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from eventstore.idmap import Owners

ADD, MODIFY, DELETE = "add", "modify", "delete"
#: containers-storage's names for the kinds (text output) and numbers (its JSON)
KIND_WORDS = {ADD: "Add", MODIFY: "Modify", DELETE: "Delete"}
KIND_NUMBERS = {MODIFY: 0, ADD: 1, DELETE: 2}
_CAPABILITY = "security.capability"
_OPAQUE = "trusted.overlay.opaque"


class Change(NamedTuple):
    """One changed path: ``kind`` is add, modify or delete; ``path`` starts with '/'."""

    kind: str
    path: str


def sort_key(change: Change) -> tuple:
    return tuple(os.fsencode(change.path).split(b"/"))


# --- two whole trees --------------------------------------------------------------------

def tree_changes(new_root: Path, old_root: Path | None, new_owners: Owners | None = None,
                 old_owners: Owners | None = None) -> list[Change]:
    """The changes that make ``old_root`` into ``new_root`` (None: an empty tree)."""
    new_owners, old_owners = new_owners or Owners(), old_owners or Owners()
    new_base = os.fsencode(new_root)
    old_base = os.fsencode(old_root) if old_root is not None else None
    changes: list[Change] = []
    # (path relative to both roots, whether old has a directory there too)
    stack: list[tuple[bytes, bool]] = [(b"", old_base is not None)]
    while stack:
        rel, has_old = stack.pop()
        new_names = _names(_join(new_base, rel))
        old_names = _names(_join(old_base, rel)) if has_old else {}
        descend = []
        for name in sorted(new_names):
            path = _join(b"", rel, name)
            new_st, old_st = new_names[name], old_names.get(name)
            if old_st is None:
                changes.append(Change(ADD, _shown(path)))
            elif _differ(new_st, old_st, new_owners, old_owners) or \
                    _capability(new_base, path, new_st) != _capability(old_base, path, old_st):
                changes.append(Change(MODIFY, _shown(path)))
            old_is_dir = old_st is not None and stat.S_ISDIR(old_st.st_mode)
            if stat.S_ISDIR(new_st.st_mode):
                descend.append((path, old_is_dir))
            elif old_is_dir:  # a directory became something else: what it held is gone
                changes.extend(Change(DELETE, _shown(_join(b"", path, n))) for n in sorted(_names(_join(old_base, path))))
        for name in sorted(set(old_names) - set(new_names)):
            changes.append(Change(DELETE, _shown(_join(b"", rel, name))))
        stack.extend(reversed(descend))
    return _with_parents(changes)


def _join(base: bytes | None, *parts: bytes) -> bytes:
    return b"/".join(p for p in (base, *parts) if p)


def _shown(rel: bytes) -> str:
    return "/" + os.fsdecode(rel)


def _with_parents(changes: list[Change]) -> list[Change]:
    """Every directory with a change below it is listed as modified (when it is not
    listed already), as containers-storage does so that a diff restores its mode."""
    listed = {os.fsencode(c.path) for c in changes}
    extra = []
    for change in changes:
        parent = os.path.dirname(os.fsencode(change.path))
        while parent not in (b"/", b"") and parent not in listed:
            listed.add(parent)
            extra.append(Change(MODIFY, os.fsdecode(parent)))
            parent = os.path.dirname(parent)
    return sorted(changes + extra, key=sort_key)


def _names(directory: bytes) -> dict[bytes, os.stat_result]:
    """lstat of every entry of ``directory`` (empty when it is not one)."""
    try:
        with os.scandir(directory) as entries:
            return {os.fsencode(e.name): e.stat(follow_symlinks=False) for e in entries}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _same_time(a: int, b: int) -> bool:
    # a time without nanoseconds (from a tar, say) equals one with them in its second
    return a == b or (a // 10**9 == b // 10**9 and (a % 10**9 == 0 or b % 10**9 == 0))


def _differ(new: os.stat_result, old: os.stat_result, new_owners: Owners, old_owners: Owners) -> bool:
    if new.st_mode != old.st_mode or new.st_rdev != old.st_rdev:
        return True
    if new_owners.container(new.st_uid, new.st_gid) != old_owners.container(old.st_uid, old.st_gid):
        return True
    if stat.S_ISDIR(new.st_mode):
        return False
    return new.st_size != old.st_size or not _same_time(new.st_mtime_ns, old.st_mtime_ns)


def _capability(base: bytes | None, path: bytes, st: os.stat_result | None) -> bytes | None:
    if base is None or st is None or not stat.S_ISREG(st.st_mode):
        return None
    try:
        return os.getxattr(_join(base, path), _CAPABILITY, follow_symlinks=False)
    except OSError:
        return None


# --- an overlay upper dir ---------------------------------------------------------------

def upper_changes(upper: Path, lowers: list[Path]) -> list[Change]:
    """The changes of an overlay layer whose own dir is ``upper``, over ``lowers``."""
    root = os.fsencode(upper)
    changes: list[Change] = []
    changed_dirs: set[bytes] = set()
    stack = [b""]
    while stack:
        rel = stack.pop()
        entries = _names(_join(root, rel))
        stack.extend(_join(b"", rel, n) for n in sorted(entries, reverse=True) if stat.S_ISDIR(entries[n].st_mode))
        for name in sorted(entries):
            path = b"/" + _join(b"", rel, name)
            change = _upper_change(root, path, entries[name], lowers)
            if change is None:
                continue  # a directory only there because something below it changed
            if stat.S_ISDIR(entries[name].st_mode):
                changed_dirs.add(path)
            parent = os.path.dirname(path)
            if change.kind in (ADD, DELETE) and parent != b"/" and parent not in changed_dirs:
                changes.append(Change(MODIFY, os.fsdecode(parent)))
                changed_dirs.add(parent)
            changes.append(change)
    return sorted(set(changes), key=sort_key)


def _upper_change(root: bytes, path: bytes, st: os.stat_result, lowers: list[Path]) -> Change | None:
    text = os.fsdecode(path)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return Change(DELETE, text)
    in_lower = [s for s in (_stat_follow(lower, path) for lower in lowers) if s is not None]
    if stat.S_ISDIR(st.st_mode) and in_lower and _opaque(root + path):
        return Change(DELETE, text)
    if not in_lower:
        return Change(ADD, text)
    lower = in_lower[0]
    if stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(lower.st_mode) and st.st_size == lower.st_size \
            and st.st_mode == lower.st_mode and _same_time(st.st_mtime_ns, lower.st_mtime_ns):
        return None
    return Change(MODIFY, text)


def _stat_follow(lower: Path, path: bytes) -> os.stat_result | None:
    try:
        return os.stat(os.fsencode(lower) + path)
    except OSError:
        return None


def _opaque(path: bytes) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


# --- sizes --------------------------------------------------------------------------------

def changes_size(new_root: Path, changes: Iterable[Change]) -> int:
    """Bytes of what was added or modified: the sizes of the files (not directories)
    the changes name, a hardlinked file once."""
    size, inodes = 0, set()
    for change in changes:
        if change.kind == DELETE:
            continue
        try:
            st = os.lstat(os.fsencode(new_root) + os.fsencode(change.path))
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if st.st_nlink > 1:
            if st.st_ino in inodes:
                continue
            inodes.add(st.st_ino)
        size += st.st_size
    return size


def tree_size(root: Path) -> int:
    """Bytes of every non-directory under ``root``, each inode once (an overlay layer's
    own dir is exactly its changes)."""
    size, inodes = 0, set()
    stack = [os.fsencode(root)]
    while stack:
        directory = stack.pop()
        for name, st in _names(directory).items():
            if stat.S_ISDIR(st.st_mode):
                stack.append(_join(directory, name))
            elif st.st_ino not in inodes:
                inodes.add(st.st_ino)
                size += st.st_size
    return size


def go_quote(path: str) -> str:
    """``path`` in double quotes as Go's %q writes it (containers-storage's text output)."""
    if path.isascii() and path.isprintable() and '"' not in path and "\\" not in path:
        return f'"{path}"'  # the common case, without a loop per character
    out = ['"']
    for ch in path:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _mappings(maps) -> list:
    from eventstore.events import IDMapping

    return [m if isinstance(m, IDMapping) else IDMapping(**m) for m in maps or ()]


def own_changes_size(driver, layer_id: str, parent_id: str | None, uid_map=(), gid_map=(),
                     parent_uid_map=(), parent_gid_map=()) -> int:
    """``diffsize`` of a layer against its parent, from its driver's dirs alone (the
    CLI's fast path measures writable layers with it): an overlay layer's own dir, or
    what a copying driver's layer changed against its parent's copy."""
    root = driver.diff_path(layer_id)
    if driver.stacks_layers:
        return tree_size(root)
    parent = driver.diff_path(parent_id) if parent_id else None
    owners = Owners(_mappings(uid_map), _mappings(gid_map))
    parent_owners = Owners(_mappings(parent_uid_map), _mappings(parent_gid_map))
    return changes_size(root, tree_changes(root, parent, owners, parent_owners))
