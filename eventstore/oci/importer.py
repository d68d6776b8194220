"""import_oci: an OCI image layout into the store, layer by layer, as chain ids.

First the whole image is read and checked without touching the store: index.json,
the manifest, the config (whose ``rootfs.diff_ids`` give every layer's id), each
layer's media type, and that every blob the store lacks is there with its size. Then
each layer is created in order with its descriptor's digest and its diff id, so the
store itself refuses content that does not match and removes the half-made layer.
Layers before a failure stay, complete.

Every layer of the chain is held for this process from the moment it is created (or
found present) until the import ends, so a concurrent delete cannot pull a parent
away; the holds go at the end, on failure too, and recovery drops them if this
process dies first.

With a driver whose layers are independent directories (overlay), the layers the
store lacks are filled side by side (``eventstore.oci.parallel``); otherwise (vfs),
or with ``jobs=1``, one after the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from eventstore import errors
from eventstore.names import check_name
from eventstore.oci.chain import chain_ids
from eventstore.oci.layout import (
    CONFIG_TYPES, LAYER_TYPES, Descriptor, ImageConfig, ImageNotFound,
    ImageRejected, Layout, Manifest, Platform, check_descriptor, select_manifest,
)
from eventstore.oci.parallel import ChainFailed, NewLayer, create_chain

if TYPE_CHECKING:
    from eventstore.store import LayerStore


class LayerStep(msgspec.Struct, frozen=True):
    """One layer of an image being imported."""

    number: int  # 1-based, base first
    count: int
    id: str  # the chain id
    parent: str | None
    diff_digest: str  # from the config's rootfs.diff_ids
    blob: Descriptor  # from the manifest
    present: bool  # the store had it when the import was planned


class ImagePlan(msgspec.Struct, frozen=True):
    """An image read and checked, before anything is imported."""

    layout: str
    manifest: Descriptor
    config: Descriptor
    image: ImageConfig
    layers: list[LayerStep]

    @property
    def top(self) -> str:
        return self.layers[-1].id


class ImportedLayer(msgspec.Struct, frozen=True):
    id: str
    parent: str | None
    diff_digest: str
    compressed_digest: str  # the blob's digest, as the manifest names it
    compressed_size: int
    media_type: str
    imported: bool  # False: the store had it already and it was not read


class ImportResult(msgspec.Struct, frozen=True):
    top: str
    manifest: str
    config: str
    layers: list[ImportedLayer]


#: given a step, a callable taking the bytes read so far (it may have ``done()``)
ProgressFactory = Callable[[LayerStep], "Callable[[int], None] | None"]


def plan_import(store: LayerStore, path: str | os.PathLike, tag: str | None = None,
                platform: Platform | None = None) -> ImagePlan:
    """Read and check the image ``tag`` in the layout at ``path``; nothing is imported."""
    layout = Layout(Path(path))
    manifest_desc = select_manifest(layout, tag, platform)
    manifest: Manifest = layout.read_json(manifest_desc, Manifest, "manifest")
    where = f"manifest {manifest_desc.digest}"
    if manifest.schema_version != 2:
        raise ImageRejected(f"{where}: schemaVersion {manifest.schema_version}, want 2")
    if manifest.media_type and manifest.media_type != manifest_desc.media_type:
        raise ImageRejected(f"{where}: says it is {manifest.media_type}, "
                            f"its descriptor says {manifest_desc.media_type}")
    if manifest.config.media_type not in CONFIG_TYPES:
        raise ImageRejected(f"{where}: config media type {manifest.config.media_type!r} "
                            "is not an image config (an artifact, not an image?)")
    image: ImageConfig = layout.read_json(manifest.config, ImageConfig, "config")
    if platform is not None and (image.os, image.architecture) != (platform.os, platform.architecture):
        raise ImageNotFound(f"{layout.path}: the image is for {image.os}/{image.architecture}, not {platform}")
    return ImagePlan(layout=str(layout.path), manifest=manifest_desc, config=manifest.config, image=image,
                     layers=_steps(store, layout, manifest, image, where))


def _steps(store: LayerStore, layout: Layout, manifest: Manifest, image: ImageConfig,
           where: str) -> list[LayerStep]:
    diff_ids = image.rootfs.diff_ids
    if image.rootfs.type != "layers":
        raise ImageRejected(f"config {manifest.config.digest}: rootfs type {image.rootfs.type!r}, want 'layers'")
    if len(diff_ids) != len(manifest.layers):
        raise ImageRejected(f"{where}: {len(manifest.layers)} layers, but its config lists "
                            f"{len(diff_ids)} diff ids")
    if not diff_ids:
        raise ImageRejected(f"{where}: the image has no layers")
    try:
        ids = chain_ids(diff_ids)
    except ValueError as err:
        raise ImageRejected(f"config {manifest.config.digest}: rootfs.diff_ids: {err}") from None
    steps = []
    parents = [None, *ids[:-1]]
    for number, (desc, diff_id, layer_id, parent) in enumerate(zip(manifest.layers, diff_ids, ids, parents), 1):
        what = f"layer {number}/{len(ids)}"
        if desc.media_type not in LAYER_TYPES:
            raise ImageRejected(f"{where}: {what} has unknown media type {desc.media_type!r}")
        check_descriptor(desc, f"{where}: {what}")
        present = store.index.layer(layer_id) is not None
        if not present:
            _check_blob(layout, desc, what)
        steps.append(LayerStep(number=number, count=len(ids), id=layer_id, parent=parent, diff_digest=diff_id,
                               blob=desc, present=present))
    return steps


def _check_blob(layout: Layout, desc: Descriptor, what: str) -> None:
    try:
        size = os.stat(layout.blob_path(desc.digest)).st_size
    except FileNotFoundError:
        raise ImageRejected(f"{what} {desc.digest}: blob missing from {layout.path}") from None
    if size != desc.size:
        raise ImageRejected(f"{what} {desc.digest}: blob is {size} bytes, its descriptor says {desc.size}")


def import_oci(store: LayerStore, path: str | os.PathLike, tag: str | None = None, *,
               name: str | None = None, platform: Platform | None = None,
               progress: ProgressFactory | None = None, max_size: int | None = None,
               jobs: int | None = None) -> ImportResult:
    """Import the image ``tag`` (or the only one) from the OCI layout at ``path``; the
    chain ids of its layers, base first. ``name`` names the top layer. ``jobs``: layers
    filled at once (default: one per CPU, at most 4; always 1 on a driver whose
    children copy their parent, vfs)."""
    if name is not None:
        check_name(name)
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise errors.InvalidArgument(f"jobs must be a whole number of at least 1, not {jobs!r}")
    plan = plan_import(store, path, tag, platform)
    if name is not None:
        owner = store.index.by_name(name)
        if owner is not None and owner != plan.top:
            raise errors.NameInUse(f"name {name!r} already belongs to layer {owner}")
    holder = store.process
    held: list[str] = []
    try:
        done = _import_layers(store, plan, holder, held, name, progress, max_size, _workers(store, jobs))
        names = store.lookup(plan.top).names
        if name is not None and name not in names:
            store.set_names(plan.top, [*names, name])
    except BaseException:
        _release(store, held, holder, quiet=True)
        raise
    _release(store, held, holder)
    return ImportResult(top=plan.top, manifest=plan.manifest.digest, config=plan.config.digest, layers=done)


def _workers(store: LayerStore, jobs: int | None) -> int:
    if not store.driver.stacks_layers:
        return 1
    return jobs if jobs is not None else max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


#: layers filled at once by default: past a few, the disk and the GIL are the limit
MAX_DEFAULT_JOBS = 4


def _import_layers(store: LayerStore, plan: ImagePlan, holder, held: list[str], name: str | None,
                   progress: ProgressFactory | None, max_size: int | None, workers: int) -> list[ImportedLayer]:
    """Every layer, base first: a layer the store has is held; a run of layers it lacks
    is filled side by side when ``workers`` > 1, else one after the other."""
    done: list[ImportedLayer] = []
    steps = plan.layers
    while len(done) < len(steps):
        run = _missing_run(store, steps[len(done):]) if workers > 1 else []
        if len(run) > 1:
            done += _import_in_parallel(store, plan, run, holder, held, name, progress, max_size, workers)
        else:
            done.append(_import_layer(store, plan, steps[len(done)], holder, held, name, progress, max_size))
    return done


def _missing_run(store: LayerStore, steps: list[LayerStep]) -> list[LayerStep]:
    """The steps from the first on whose layers the store does not have."""
    run = []
    for step in steps:
        if store.index.layer(step.id) is not None:
            break
        run.append(step)
    return run


def _import_in_parallel(store: LayerStore, plan: ImagePlan, run: list[LayerStep], holder, held: list[str],
                        name: str | None, progress: ProgressFactory | None, max_size: int | None,
                        workers: int) -> list[ImportedLayer]:
    readers = [BlobReader(Path(plan.layout), s.blob, f"{plan.layout}: layer {s.number}/{s.count}") for s in run]
    layers = [NewLayer(id=s.id, parent=s.parent, content=reader, compressed_digest=s.blob.digest,
                       diff_digest=s.diff_digest, names=[name] if name and s.number == s.count else [],
                       size=s.blob.size, progress=progress(s) if progress is not None else None)
              for s, reader in zip(run, readers)]
    try:
        create_chain(store, layers, workers=workers, hold=holder, held=held, max_size=max_size)
    except ChainFailed as failed:
        raise _rejected(plan, run[failed.index], failed.error) from failed.error
    finally:
        for reader in readers:
            reader.close()
    return [_imported(step, True) for step in run]


def _import_layer(store: LayerStore, plan: ImagePlan, step: LayerStep, holder, held: list[str],
                  name: str | None, progress: ProgressFactory | None, max_size: int | None) -> ImportedLayer:
    blob = BlobReader(Path(plan.layout), step.blob, f"{plan.layout}: layer {step.number}/{step.count}")
    report = progress(step) if progress is not None else None
    top = step.number == step.count
    try:
        layer_id = store.create(step.id, parent=step.parent, names=[name] if top and name else [],
                                content=blob, compressed_digest=step.blob.digest, diff_digest=step.diff_digest,
                                progress=report, max_size=max_size, hold=holder)
    except (errors.ContentRejected, errors.DigestMismatch) as err:  # the store removed the layer
        raise _rejected(plan, step, err) from err
    finally:
        blob.close()
        if report is not None and hasattr(report, "done"):
            report.done()
    held.append(layer_id)
    if not blob.opened:  # present already: check it is the layer the image means
        rec = store.lookup(layer_id)
        if rec.diff_digest and rec.diff_digest != step.diff_digest:
            raise errors.LayerExists(f"layer {layer_id}: in the store with diff digest {rec.diff_digest}, "
                                     f"the image has {step.diff_digest}")
    return _imported(step, blob.opened)


def _rejected(plan: ImagePlan, step: LayerStep, err: BaseException) -> BaseException:
    """The error to raise for a layer that failed: rejected content names the layer."""
    if isinstance(err, ImageRejected) or not isinstance(err, (errors.ContentRejected, errors.DigestMismatch)):
        return err
    return ImageRejected(f"{plan.layout}: layer {step.number}/{step.count} {step.blob.digest}: {err}")


def _imported(step: LayerStep, imported: bool) -> ImportedLayer:
    return ImportedLayer(id=step.id, parent=step.parent, diff_digest=step.diff_digest,
                         compressed_digest=step.blob.digest, compressed_size=step.blob.size,
                         media_type=step.blob.media_type, imported=imported)


def _release(store: LayerStore, held: list[str], holder, quiet: bool = False) -> None:
    """Drop the import's holds, top first; one failure does not keep the others (and
    never hides the error that ended an import: recovery drops what is left once this
    process exits)."""
    first: Exception | None = None
    for layer_id in reversed(held):
        try:
            store.release(layer_id, holder=holder)
        except errors.LayerStoreError as err:
            first = first or err
    if first is not None and not quiet:
        raise first


class BlobReader:
    """A layer blob, opened on the first read (a layer the store has is never read),
    that refuses to give more bytes than its descriptor's size."""

    def __init__(self, layout: Path, desc: Descriptor, what: str):
        self.path = layout / "blobs" / "sha256" / desc.digest.removeprefix("sha256:")
        self.desc = desc
        self.what = what
        self.opened = False
        self._file = None
        self._left = desc.size

    def read(self, size: int = -1) -> bytes:
        if self._file is None:
            self._open()
        if size < 0 or size > self._left:
            size = self._left
        data = self._file.read(size) if size else b""
        self._left -= len(data)
        if not data and size:
            raise ImageRejected(f"{self.what} {self.desc.digest}: blob ends before its "
                                f"descriptor's {self.desc.size} bytes")
        if self._left == 0 and not data and self._file.read(1):
            raise ImageRejected(f"{self.what} {self.desc.digest}: blob is longer than its "
                                f"descriptor's {self.desc.size} bytes")
        return data

    def _open(self) -> None:
        self.opened = True
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            raise ImageRejected(f"{self.what} {self.desc.digest}: blob missing") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


__all__ = ["ImagePlan", "ImportResult", "ImportedLayer", "LayerStep", "import_oci", "plan_import"]

