"""The test image, built with umoci, and variants of its layout.

Four layers, each made the way real images are:

1. ``umoci repack`` of a tree with every kind of entry: regular files (2 MiB of random
   bytes, so compression has work), a setuid file, a setgid directory and a sticky
   one, hardlinks, symlinks (relative, absolute, dangling, one with a 150-byte
   target), a character and a block device, a fifo, user.* and trusted.* xattrs, a
   non-root owner, a path over 100 bytes (PAX), a non-ASCII name, empty files and dirs.
2. ``umoci repack`` after deleting a file (whiteout), deleting a directory and making
   it again with new content (whiteouts of its old entries), replacing a directory by
   a file (umoci then also writes ``d2f/.wh.inner`` below the new *file*) and a file
   by a directory, adding a hardlink to a file of layer 1, changing a mode and an xattr.
3. ``umoci raw add-layer`` of a tar written here: an explicit opaque directory
   (``etc/.wh..wh..opq``) with a file carrying a PAX xattr, and a whiteout in a
   directory the tar has no entry for.
4. ``umoci insert --opaque`` of a directory over ``opq``. umoci 0.4.7 writes this tar
   without the last file's padding and without the end-of-archive blocks;
   containers-storage reads it, and so must we.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from random import Random
from dataclasses import dataclass
from pathlib import Path

TAG = "test"
LONG_DIR = "/".join(["long-directory-name-" + "x" * 30] * 2)  # 101 bytes: needs PAX
LONG_TARGET = "../" + "/".join(["t" * 40] * 4)  # a symlink target over 100 bytes


@dataclass(frozen=True)
class Image:
    layout: Path
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.layout}:{self.tag}"

    def manifest(self) -> dict:
        index = json.loads((self.layout / "index.json").read_text())
        (desc,) = [d for d in index["manifests"]
                   if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == self.tag]
        return json.loads(self.blob(desc["digest"]))

    def config(self) -> dict:
        return json.loads(self.blob(self.manifest()["config"]["digest"]))

    def blob(self, digest: str) -> bytes:
        return (self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()

    def layer_tars(self) -> list[bytes]:
        """Each layer's uncompressed tar, base first."""
        return [decompress(self.blob(d["digest"])) for d in self.manifest()["layers"]]


def decompress(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def build(work: Path) -> Image:
    layout, bundle = work / "layout", work / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{TAG}")
    umoci("unpack", "--image", f"{layout}:{TAG}", str(bundle))
    rootfs = bundle / "rootfs"
    _first_layer(rootfs)
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", str(bundle))
    _second_layer(rootfs)
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", str(bundle))
    opaque = work / "opaque.tar"
    opaque.write_bytes(_opaque_layer())
    umoci("raw", "add-layer", "--image", f"{layout}:{TAG}", str(opaque))
    inserted = work / "inserted"
    _write(inserted, "only-this", "inserted by umoci insert --opaque\n")
    umoci("insert", "--image", f"{layout}:{TAG}", "--opaque", str(inserted), "/opq")
    shutil.rmtree(bundle)
    return Image(layout, TAG)


def _write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


def _first_layer(root: Path) -> None:
    _write(root, "data/random.bin", Random(7).randbytes(2 << 20))  # incompressible
    _write(root, "data/text.txt", "a line of compressible text\n" * 20000)
    _write(root, "data/empty", b"")
    (root / "data/empty-dir").mkdir()
    _write(root, "etc/a", "a\n")
    os.chown(_write(root, "etc/keep", "keep\n", 0o600), 1000, 1001)
    _write(root, "etc/conf.d/x.conf", "x=1\n")
    _write(root, "bin/tool", "#!/bin/sh\necho tool\n", 0o4755)  # setuid
    (root / "shared").mkdir()
    os.chmod(root / "shared", 0o2775)  # setgid directory
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)  # sticky
    _write(root, "opq/old", "old\n")
    _write(root, "opq/sub/x", "x\n")
    _write(root, "d2f/inner/c", "c\n")
    _write(root, "f2d", "a file, later a directory\n")
    _write(root, "hl/orig", "linked\n")
    os.link(root / "hl/orig", root / "hl/link1")
    (root / "links").mkdir()
    os.symlink("../etc/keep", root / "links/rel")
    os.symlink("/etc/keep", root / "links/abs")
    os.symlink("nowhere", root / "links/dangling")
    os.symlink(LONG_TARGET, root / "links/long-target")
    (root / "dev").mkdir()
    os.mknod(root / "dev/null", 0o20666, os.makedev(1, 3))
    os.mknod(root / "dev/loop0", 0o60660, os.makedev(7, 0))
    os.mkfifo(root / "fifo")
    xa = _write(root, "xattrs/file", "has xattrs\n")
    os.setxattr(xa, "user.comment", b"hello")
    os.setxattr(xa, "trusted.layerstore", b"\x00binary\xff")
    os.setxattr(root / "xattrs", "user.dir", b"on a directory")
    long = _write(root, f"{LONG_DIR}/a-file-with-a-long-path-name.txt", "long\n")
    os.link(long, root / "hl/to-long")
    _write(root, "ünïcødé/名前.txt", "utf-8 names\n")


def _second_layer(root: Path) -> None:
    os.unlink(root / "etc/a")  # a whiteout
    shutil.rmtree(root / "opq")  # deleted, then made again
    _write(root, "opq/new", "new\n")
    shutil.rmtree(root / "d2f")  # a directory replaced by a file
    _write(root, "d2f", "now a file\n")
    os.unlink(root / "f2d")  # a file replaced by a directory
    _write(root, "f2d/inside", "inside\n")
    os.link(root / "hl/orig", root / "hl/link2")  # a new link to a layer-1 file
    os.chmod(root / "bin/tool", 0o6755)  # setgid added
    os.setxattr(root / "xattrs/file", "user.comment", b"changed")
    _write(root, "data/more.txt", "more\n" * 1000)
    shutil.rmtree(root / "data/empty-dir")


def _opaque_layer() -> bytes:
    """etc made opaque: only etc/fresh (and the directory itself) survive from below."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
                pax: dict | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.size = kind, mode, 1_700_000_000, len(data)
            info.uname = info.gname = "root"
            info.pax_headers = pax or {}
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/.wh..wh..opq", mode=0)
        add("etc/fresh", data=b"fresh\n", pax={"SCHILY.xattr.user.layer": "three"})
        add("data/.wh.text.txt", mode=0)  # a whiteout in a directory the tar does not list
    return out.getvalue()


# --- variants of a layout -----------------------------------------------------------

def with_media_types(image: Image, dest: Path, encodings: list[tuple[str, str]]) -> Image:
    """A copy of ``image`` whose layer i is re-encoded as ``encodings[i]``:
    (compression "gzip"|"zstd"|"none", media type). Diff ids (so layer ids) do not change."""
    import zstandard

    shutil.copytree(image.layout, dest)
    variant = Image(dest, image.tag)
    manifest = image.manifest()
    for desc, raw, (compression, media_type) in zip(manifest["layers"], image.layer_tars(), encodings):
        if compression == "zstd":
            blob = zstandard.ZstdCompressor().compress(raw)
        elif compression == "gzip":
            blob = gzip.compress(raw, mtime=0)
        else:
            blob = raw
        desc.update(mediaType=media_type, digest=_put(dest, blob), size=len(blob))
    data = json.dumps(manifest).encode()
    index = json.loads((dest / "index.json").read_text())
    index["manifests"] = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _put(dest, data),
                           "size": len(data), "annotations": {"org.opencontainers.image.ref.name": image.tag}}]
    (dest / "index.json").write_text(json.dumps(index))
    return variant


def _put(layout: Path, blob: bytes) -> str:
    digest = hashlib.sha256(blob).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(blob)
    return "sha256:" + digest
