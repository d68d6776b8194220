"""export_oci: the chain ending at a layer, written as an OCI image layout.

Each layer's blob is ``store.diff`` of it (byte for byte the tar it was imported from,
when it has a tar-split), compressed or not; the config is the minimum an engine needs
(os, architecture, ``rootfs.diff_ids``), with no timestamps, so exporting the same
layers twice writes the same blobs. Blobs are written to a temporary name, synced and
renamed to their digest; index.json is replaced atomically last, so a crash leaves the
layout as it was (plus, at worst, unreferenced blobs).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as host
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from eventstore import errors
from eventstore.archive.compression import compressing
from eventstore.fsutil import fsync_dir, write_atomic
from eventstore.names import check_tag
from eventstore.oci.layout import (
    LAYOUT_VERSION, MAX_JSON_SIZE, OCI_CONFIG, OCI_LAYER_TYPE, OCI_MANIFEST, REF_NAME, ImageRejected, Platform,
)

if TYPE_CHECKING:
    from eventstore.state import LayerRecord
    from eventstore.store import LayerStore

COMPRESSIONS = tuple(OCI_LAYER_TYPE)
_MACHINES = {"x86_64": ("amd64", ""), "aarch64": ("arm64", ""), "armv7l": ("arm", "v7"),
             "armv6l": ("arm", "v6"), "i686": ("386", ""), "ppc64le": ("ppc64le", ""),
             "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}


class ExportedLayer(msgspec.Struct, frozen=True):
    id: str
    diff_digest: str  # sha256 of the uncompressed tar written
    digest: str  # the blob's digest
    size: int
    media_type: str


class ExportResult(msgspec.Struct, frozen=True):
    path: str
    tag: str
    manifest: str
    config: str
    layers: list[ExportedLayer]


def host_platform() -> Platform:
    arch, variant = _MACHINES.get(host.machine(), (host.machine(), ""))
    return Platform(os="linux", architecture=arch, variant=variant)


def export_oci(store: LayerStore, ref: str, path: str | os.PathLike, tag: str = "latest", *,
               compression: str = "gzip", platform: Platform | None = None, progress=None) -> ExportResult:
    """Write the chain ending at layer ``ref`` to the OCI layout at ``path`` (created if
    missing), tagged ``tag`` (an image with that tag already there is replaced).
    ``progress(rec)``, when given, returns for each layer a callable taking the bytes
    written so far (with ``done()``), or None."""
    if compression not in COMPRESSIONS:
        raise errors.InvalidArgument(f"compression {compression!r}: want one of {', '.join(COMPRESSIONS)}")
    check_tag(tag)
    platform = platform or host_platform()
    top = store.lookup(ref).id
    # a parent cannot be deleted while it has a child, so holding the top holds the chain
    store.hold(top, holder=store.process)
    try:
        chain = _chain(store, top)
        layout = _open_layout(Path(path))
        layers = [_write_layer(store, layout, rec, compression, progress(rec) if progress else None)
                  for rec in chain]
        config = {"architecture": platform.architecture, "os": platform.os,
                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_digest for layer in layers]}}
        if platform.variant:
            config["variant"] = platform.variant
        config_digest, config_size = _write_json_blob(layout, config)
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                       for layer in layers],
        }
        manifest_digest, manifest_size = _write_json_blob(layout, manifest)
        _set_tag(layout, tag, {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size,
                               "annotations": {REF_NAME: tag}})
    finally:
        store.release(top, holder=store.process)
    return ExportResult(path=str(path), tag=tag, manifest=manifest_digest, config=config_digest, layers=layers)


def _chain(store: LayerStore, top: str) -> list[LayerRecord]:
    chain = []
    layer_id: str | None = top
    while layer_id:
        rec = store.lookup(layer_id)
        if rec.incomplete:
            raise errors.LayerIncomplete(f"layer {rec.id}: incomplete (being created or deleted)")
        chain.append(rec)
        layer_id = rec.parent
    return chain[::-1]


def _open_layout(path: Path) -> Path:
    if (path / "oci-layout").exists():
        return path
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise errors.InvalidArgument(f"{path}: exists and is not an OCI image layout")
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    write_atomic(path / "oci-layout", json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode(), mode=0o644)
    fsync_dir(path.parent if path.parent != path else path)
    return path


def _write_layer(store: LayerStore, layout: Path, rec: LayerRecord, compression: str, progress=None
                 ) -> ExportedLayer:
    diff_hash = hashlib.sha256()
    written = 0
    try:
        with _BlobWriter(layout) as blob:
            with compressing(compression, blob) as sink:
                for chunk in store.diff(rec.id):
                    diff_hash.update(chunk)
                    sink.write(chunk)
                    if progress is not None:
                        written += len(chunk)
                        progress(written)
            digest, size = blob.commit()
    finally:
        if progress is not None:
            progress.done()
    return ExportedLayer(id=rec.id, diff_digest="sha256:" + diff_hash.hexdigest(), digest=digest, size=size,
                         media_type=OCI_LAYER_TYPE[compression])


def _write_json_blob(layout: Path, value: dict) -> tuple[str, int]:
    data = json.dumps(value, separators=(",", ":")).encode()
    with _BlobWriter(layout) as blob:
        blob.write(data)
        return blob.commit()


def _set_tag(layout: Path, tag: str, descriptor: dict) -> None:
    """index.json with ``descriptor`` under ``tag`` (any other image of that tag
    dropped; everything else in the file kept as it was)."""
    where = layout / "index.json"
    try:
        with open(where, "rb") as f:
            index = json.loads(f.read(MAX_JSON_SIZE))
    except FileNotFoundError:
        index = {"schemaVersion": 2, "manifests": []}
    except ValueError:
        raise ImageRejected(f"{where}: not JSON; not replacing it") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
        raise ImageRejected(f"{where}: not an image index; not replacing it")
    kept = [d for d in index.get("manifests", [])
            if not (isinstance(d, dict) and d.get("annotations", {}).get(REF_NAME) == tag)]
    index["manifests"] = [*kept, descriptor]
    write_atomic(where, json.dumps(index, separators=(",", ":")).encode(), mode=0o644)


class _BlobWriter:
    """A file in blobs/sha256 that gets its name from its content: written under a
    temporary name, hashed on the way, synced and renamed by ``commit``."""

    def __init__(self, layout: Path):
        self.dir = layout / "blobs" / "sha256"
        self.tmp = self.dir / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
        self._file = open(self.tmp, "xb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def commit(self) -> tuple[str, int]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        hex_digest = self._hash.hexdigest()
        os.rename(self.tmp, self.dir / hex_digest)  # same name, same bytes: replacing is harmless
        fsync_dir(self.dir)
        return "sha256:" + hex_digest, self.size

    def __enter__(self) -> "_BlobWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def terminal_progress(rec: LayerRecord):
    """A bar on stderr for each layer written (the CLI's, on a terminal)."""
    from eventstore.progress import on_terminal

    return on_terminal(rec.diff_size if rec.diff_size > 0 else None, f"layer {rec.id[:12]}")
