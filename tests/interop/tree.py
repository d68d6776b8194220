"""A mounted tree as data, for comparing two of them entry by entry.

Each entry: type, permission bits, owner, size and sha256 (regular files), symlink
target, device numbers, xattrs, and mtime in nanoseconds. Hardlinks are compared as
groups of paths sharing an inode. Directory sizes and link counts are left out: they
depend on the filesystem's history of the directory, not on the image.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
         stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def entry(path: str, st: os.stat_result) -> dict:
    kind = KINDS[stat.S_IFMT(st.st_mode)]
    node = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid,
            "mtime": st.st_mtime_ns}
    if kind == "file":
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        node.update(size=st.st_size, sha256=digest.hexdigest())
    elif kind == "symlink":
        node["target"] = os.readlink(path)
    elif kind in ("chardev", "blockdev"):
        node["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    node["xattrs"] = {name: os.getxattr(path, name, follow_symlinks=False)
                      for name in sorted(os.listxattr(path, follow_symlinks=False))}
    return node


def walk(root: Path) -> tuple[dict[str, dict], list[list[str]]]:
    """Every entry under ``root`` by relative path ("." is the root itself), and the
    hardlink groups (sorted lists of paths that share an inode)."""
    root_str = os.fspath(root)
    tree = {".": entry(root_str, os.lstat(root_str))}
    inodes: dict[tuple[int, int], list[str]] = {}
    pending = [root_str]
    while pending:
        here = pending.pop()
        with os.scandir(here) as it:
            for item in it:
                st = item.stat(follow_symlinks=False)
                rel = os.path.relpath(item.path, root_str)
                tree[rel] = entry(item.path, st)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(item.path)
                elif st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    groups = sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1)
    return tree, groups


def differences(ours: dict[str, dict], theirs: dict[str, dict], skip_mtime: set[str] = frozenset(),
                skip: set[str] = frozenset()) -> list[str]:
    """What differs, one line an entry (empty: identical)."""
    lines = []
    for path in sorted(set(ours) | set(theirs)):
        if path in skip:
            continue
        a, b = ours.get(path), theirs.get(path)
        if a is None or b is None:
            lines.append(f"{path}: only in {'containers-storage' if a is None else 'layerstore'}")
            continue
        fields = sorted((set(a) | set(b)) - ({"mtime"} if path in skip_mtime else set()))
        for field in fields:
            if a.get(field) != b.get(field):
                lines.append(f"{path}: {field} layerstore={a.get(field)!r} containers-storage={b.get(field)!r}")
    return lines


def implicit_directories(layer_tars: list[bytes]) -> set[str]:
    """Directories of the merged tree whose attributes come from a layer that has no
    entry for them, only entries below them: every extractor makes those at extraction
    time, so their mtime is the moment of the import, different in every store."""
    topmost: dict[str, bool] = {}  # dir -> explicit in the topmost layer that has it
    for raw in layer_tars:
        explicit, present = set(), set()
        non_dirs = set()
        # umoci insert's tars stop inside the last padding: complete them for tarfile
        whole = raw + bytes(-len(raw) % 512) + bytes(1024)
        with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
            for member in tar:
                name = os.path.normpath(member.name).lstrip("/")
                if member.isdir():
                    explicit.add(name)
                elif not os.path.basename(name).startswith(".wh."):
                    non_dirs.add(name)
                parent = os.path.dirname(name)
                while parent:
                    present.add(parent)
                    parent = os.path.dirname(parent)
        for name in (present - non_dirs) | explicit:
            topmost[name] = name in explicit
    return {name for name, is_explicit in topmost.items() if not is_explicit}
