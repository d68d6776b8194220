"""Shared by the parity suites: drivers to run on, tars to apply, and trees to compare."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest

from eventstore.drivers import driver_class
from tests.archive.support import MTIME, TarBuilder

DRIVERS = ["vfs", "overlay"]


def overlay_unsupported() -> str | None:
    return driver_class("overlay").supported(Path(tempfile.gettempdir()) / "layerstore-probe" / "overlay")


def skip_unless_driver_runs(driver: str, home: Path | None = None) -> None:
    if driver == "overlay":
        reason = overlay_unsupported()
        if reason:
            pytest.skip(f"overlay cannot run here: {reason}")
    elif driver != "vfs":
        import tempfile

        from eventstore.drivers import driver_class

        with tempfile.TemporaryDirectory(dir=home) as tmp:
            reason = driver_class(driver).supported(Path(tmp) / driver)
        if reason:
            pytest.skip(f"{driver} cannot run here: {reason}")


def base_tar() -> bytes:
    """A small image layer: directories, files, a symlink, a hardlink."""
    return (TarBuilder().dir("etc").file("etc/os-release", b"ID=test\n").file("etc/passwd", b"root:x:0:0\n")
            .dir("usr").dir("usr/bin").file("usr/bin/tool", b"#!/bin/sh\n", mode=0o755)
            # a hardlink entry with its target's mode, as tar writers make them (given another
            # mode, containers-storage chmods the shared inode; layerstore keeps the target's)
            .symlink("bin", "usr/bin").hardlink("usr/bin/tool-link", "usr/bin/tool", mode=0o755)
            .dir("var").dir("var/cache").file("var/cache/big", b"x" * 5000).bytes())


def change_tar() -> bytes:
    """A diff on top of ``base_tar``: one file added, one modified, one deleted (a
    whiteout), a directory made opaque."""
    return (TarBuilder().dir("etc").file("etc/os-release", b"ID=changed\nVERSION=2\n").file("etc/.wh.passwd")
            .file("new-file", b"fresh\n").dir("var").dir("var/cache").file("var/cache/.wh..wh..opq")
            .file("var/cache/kept", b"k").bytes())


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name for m in tar.getmembers()]


def tar_members(data: bytes) -> dict[str, tuple]:
    """name -> (type, mode, uid, gid, content digest) of every entry."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            content = hashlib.sha256(tar.extractfile(m).read()).hexdigest() if m.isreg() else m.linkname
            found[m.name.rstrip("/")] = (m.type, m.mode, m.uid, m.gid, content)
    return found


def view(path: Path) -> dict[str, tuple]:
    """What a container sees under ``path``: relative path -> (kind, mode, uid, gid,
    content digest or link target). Overlay whiteouts are not entries."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if os.path.islink(full):
                what = ("link", os.readlink(full))
            elif os.path.isfile(full):
                with open(full, "rb") as f:
                    what = ("file", hashlib.sha256(f.read()).hexdigest())
            else:
                what = ("dir" if os.path.isdir(full) else "other", "")
            seen[os.path.relpath(full, path)] = (*what, st.st_mode & 0o7777, st.st_uid, st.st_gid)
    return seen


__all__ = ["DRIVERS", "MTIME", "TarBuilder", "base_tar", "change_tar", "skip_unless_driver_runs", "tar_members",
           "tar_names", "view"]
