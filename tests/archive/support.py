"""Building tars in memory and importing them, for the archive and security tests."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from eventstore.archive import ImportResult, export_layer, import_layer

MTIME = 1_700_000_000


class TarBuilder:
    """A tar written with Python's tarfile, entry by entry."""

    def __init__(self, format: int = tarfile.PAX_FORMAT):
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=format,
                                 encoding="utf-8", errors="surrogateescape")

    def _add(self, name, kind, data: bytes | None = None, **fields) -> "TarBuilder":
        info = tarfile.TarInfo(os.fsdecode(name))
        info.type = kind
        info.mtime = fields.pop("mtime", MTIME)
        info.mode = fields.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
        info.uid = fields.pop("uid", 0)
        info.gid = fields.pop("gid", 0)
        for key, value in fields.items():
            setattr(info, key, value)
        if data is not None:
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        else:
            self._tar.addfile(info)
        return self

    def file(self, name, data: bytes = b"", **fields) -> "TarBuilder":
        return self._add(name, tarfile.REGTYPE, data, **fields)

    def dir(self, name, **fields) -> "TarBuilder":
        return self._add(name, tarfile.DIRTYPE, **fields)

    def symlink(self, name, target, **fields) -> "TarBuilder":
        return self._add(name, tarfile.SYMTYPE, linkname=os.fsdecode(target), **fields)

    def hardlink(self, name, target, **fields) -> "TarBuilder":
        return self._add(name, tarfile.LNKTYPE, linkname=os.fsdecode(target), **fields)

    def chardev(self, name, major: int, minor: int, **fields) -> "TarBuilder":
        return self._add(name, tarfile.CHRTYPE, devmajor=major, devminor=minor, **fields)

    def blockdev(self, name, major: int, minor: int, **fields) -> "TarBuilder":
        return self._add(name, tarfile.BLKTYPE, devmajor=major, devminor=minor, **fields)

    def fifo(self, name, **fields) -> "TarBuilder":
        return self._add(name, tarfile.FIFOTYPE, **fields)

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layer:
    """One imported layer: its tree, tar-split and result."""

    def __init__(self, base: Path, name: str = "layer"):
        self.target = base / name
        self.target.mkdir(parents=True, exist_ok=True)
        self.tarsplit = base / f"{name}.tar-split"
        self.result: ImportResult | None = None

    def import_bytes(self, data: bytes, whiteout_format: str = "overlay", **options
                     ) -> ImportResult:
        self.result = import_layer(io.BytesIO(data), self.target, self.tarsplit,
                                   whiteout_format=whiteout_format, **options)
        return self.result

    def export(self) -> bytes:
        return b"".join(export_layer(self.target, self.tarsplit))

    def path(self, name) -> Path:
        return self.target / os.fsdecode(name)


def tree_listing(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every entry under root (root included, top-level names in ``skip`` left out),
    with what matters about it."""
    listing = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in [""] + dirnames + filenames:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            content = None
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            listing[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid,
                                                   st.st_size, st.st_mtime_ns, st.st_ino,
                                                   content)
    return listing
