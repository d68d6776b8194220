"""Byte damage: the primitives every file-class case is made of."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class Skip(Exception):
    """The case cannot be made on this store (no older version of that file exists...)."""


def flip(path: Path, offset: int) -> str:
    """Invert every bit of the byte at ``offset``."""
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        if not old:
            raise Skip(f"{path.name} has no byte at offset {offset}")
        f.seek(offset)
        f.write(bytes([old[0] ^ 0xFF]))
    return f"flipped the byte at offset {offset}"


def truncate(path: Path, size: int) -> str:
    before = path.stat().st_size
    if size >= before:
        raise Skip(f"{path.name} is {before} bytes: nothing to cut at {size}")
    os.truncate(path, size)
    return f"cut from {before} to {size} bytes"


def delete(path: Path) -> str:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return "deleted"


def swap(path: Path, source: Path | None, what: str) -> str:
    """Put ``source``'s bytes where ``path`` is (``what``: "stale", "foreign"...)."""
    if source is None or not source.is_file():
        raise Skip(f"no {what} copy of {path.name}")
    if path.exists() and source.read_bytes() == path.read_bytes():
        raise Skip(f"the {what} copy of {path.name} is identical to it")
    shutil.copyfile(source, path)
    return f"replaced by a {what} copy ({source})"


def damage_pages(path: Path, seek: int = 3, count: int = 2) -> str:
    """Random bytes over whole 4 KiB pages, as ``dd`` does it to a real disk."""
    subprocess.run(["dd", "if=/dev/urandom", f"of={path}", "bs=4096", f"seek={seek}", f"count={count}",
                    "conv=notrunc", "status=none"], check=True)
    return f"pages {seek}..{seek + count - 1} overwritten with random bytes (dd bs=4096 seek={seek} count={count})"
