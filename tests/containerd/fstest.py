"""Filesystem changes to apply to a mounted snapshot, and trees to compare, after
containerd's ``continuity/fs/fstest`` (the vocabulary its snapshotter suite uses)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.interop.tree import walk

Applier = Callable[[Path], None]


def _at(root: Path, rel: str) -> Path:
    return root / rel.lstrip("/")


def create_file(rel: str, data: bytes, mode: int) -> Applier:
    def apply(root: Path) -> None:
        path = _at(root, rel)
        path.write_bytes(data)
        os.chmod(path, mode)
    return apply


def create_dir(rel: str, mode: int) -> Applier:
    def apply(root: Path) -> None:
        path = _at(root, rel)
        path.mkdir(exist_ok=True)
        os.chmod(path, mode)
    return apply


def remove_all(rel: str) -> Applier:
    def apply(root: Path) -> None:
        path = _at(root, rel)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return apply


def chown(rel: str, uid: int, gid: int) -> Applier:
    return lambda root: os.lchown(_at(root, rel), uid, gid)


def link(old: str, new: str) -> Applier:
    return lambda root: os.link(_at(root, old), _at(root, new))


def rename(old: str, new: str) -> Applier:
    """As ``mv`` does: a rename, or (overlay refuses to rename a lower directory without
    redirect_dir: EXDEV) a copy and a delete."""
    return lambda root: shutil.move(_at(root, old), _at(root, new))


def apply(*steps: Applier) -> Applier:
    def run(root: Path) -> None:
        for step in steps:
            step(root)
    return run


def tree(root: Path) -> tuple[dict, list]:
    """Every entry below ``root`` (type, mode, owner, size, content hash, link target,
    xattrs) and the hardlink groups; mtimes and the root itself left out."""
    entries, links = walk(root)
    entries.pop(".")
    for facts in entries.values():
        facts.pop("mtime")
    return entries, links
