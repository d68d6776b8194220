"""The image containerd runs in these tests, built with umoci from Debian's static
busybox, and saved as an OCI archive for ``ctr images import``. Four layers:

1. ``umoci repack`` of a busybox root: /bin/busybox, its applets as symlinks, /tmp.
2. ``umoci repack`` of every kind of entry: 1 MiB of random bytes, setuid and setgid
   files, setgid and sticky directories, hardlinks, symlinks (relative, absolute,
   dangling, a 160-byte target), character and block devices, a fifo, user.* and
   trusted.* xattrs, a non-root owner, a path over 100 bytes (PAX), non-ASCII names.
3. ``umoci repack`` after deleting a file and a directory (whiteouts), replacing a
   directory's content, turning a file into a directory, a new hardlink to a file of
   layer 2, a changed mode and xattr.
4. ``umoci raw add-layer`` of a tar written here: an opaque directory
   (``etc/.wh..wh..opq``) with a file carrying a PAX xattr, and a whiteout in a
   directory the tar has no entry for.

(containerd refuses umoci's tar for a directory replaced by a file: it puts a whiteout
below the new file. Both of containerd's snapshotters fail alike, so that case stays out.)
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from random import Random

NAME = "test.local/layerstore/busybox"
TAG = "latest"
REF = f"{NAME}:{TAG}"
APPLETS = ["sh", "echo", "cat", "ls", "mkdir", "rm", "sleep", "true", "find", "stat", "wc"]


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def _write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


def busybox_root(root: Path) -> None:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "bin" / applet)
    (root / "tmp").mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    _write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")


def _every_kind(root: Path) -> None:
    _write(root, "data/random.bin", Random(15).randbytes(1 << 20))
    _write(root, "data/text.txt", "compressible text\n" * 5000)
    _write(root, "data/empty", b"")
    (root / "data/empty-dir").mkdir()
    _write(root, "usr/bin/setuid", "#!/bin/sh\n", 0o4755)
    _write(root, "usr/bin/setgid", "#!/bin/sh\n", 0o2755)
    (root / "shared").mkdir()
    os.chmod(root / "shared", 0o2775)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    os.chown(_write(root, "home/user/own", "mine\n", 0o600), 1000, 1001)
    os.chown(root / "home/user", 1000, 1001)
    _write(root, "hl/orig", "linked\n")
    os.link(root / "hl/orig", root / "hl/link1")
    (root / "links").mkdir()
    os.symlink("../etc/passwd", root / "links/rel")
    os.symlink("/etc/passwd", root / "links/abs")
    os.symlink("nowhere", root / "links/dangling")
    os.symlink("../" + "/".join(["t" * 39] * 4), root / "links/long-target")
    (root / "dev").mkdir(exist_ok=True)
    os.mknod(root / "dev/null", 0o20666, os.makedev(1, 3))
    os.mknod(root / "dev/loop0", 0o60660, os.makedev(7, 0))
    os.mkfifo(root / "fifo")
    xattrs = _write(root, "xattrs/file", "has xattrs\n")
    os.setxattr(xattrs, "user.comment", b"hello")
    os.setxattr(xattrs, "trusted.layerstore", b"\x00binary\xff")
    os.setxattr(root / "xattrs", "user.dir", b"on a directory")
    _write(root, "/".join(["long-directory-name-" + "x" * 30] * 2) + "/file.txt", "long\n")
    _write(root, "ünïcødé/名前.txt", "utf-8 names\n")
    _write(root, "gone/file", "deleted in layer 3\n")
    _write(root, "replaced/old", "old\n")
    _write(root, "f2d", "a file, later a directory\n")


def _changes(root: Path) -> None:
    os.unlink(root / "data/text.txt")
    shutil.rmtree(root / "gone")
    shutil.rmtree(root / "replaced")
    _write(root, "replaced/new", "new\n")
    os.unlink(root / "f2d")
    _write(root, "f2d/inside", "inside\n")
    os.link(root / "hl/orig", root / "hl/link2")
    os.chmod(root / "usr/bin/setuid", 0o6755)
    os.setxattr(root / "xattrs/file", "user.comment", b"changed")


def _opaque_layer() -> bytes:
    """etc made opaque (only etc/fresh survives from below: /etc/passwd is hidden) and a
    whiteout in a directory the tar does not list."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
                pax: dict | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.size = kind, mode, 1_700_000_000, len(data)
            info.pax_headers = pax or {}
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/.wh..wh..opq", mode=0)
        add("etc/fresh", data=b"fresh\n", pax={"SCHILY.xattr.user.layer": "four"})
        add("data/.wh.empty", mode=0)
    return out.getvalue()


def build(work: Path) -> Path:
    """The image as an OCI archive (a tar of the layout); its path."""
    layout, bundle = work / "layout", work / "bundle"
    image = f"{layout}:{TAG}"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", image)
    umoci("unpack", "--image", image, str(bundle))
    rootfs = bundle / "rootfs"
    for step in (busybox_root, _every_kind, _changes):
        step(rootfs)
        umoci("repack", "--refresh-bundle", "--image", image, str(bundle))
    opaque = work / "opaque.tar"
    opaque.write_bytes(_opaque_layer())
    umoci("raw", "add-layer", "--image", image, str(opaque))
    umoci("config", "--image", image, "--config.cmd", "/bin/sh")
    shutil.rmtree(bundle)
    archive = work / "image.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(layout), "."], check=True)
    return archive
