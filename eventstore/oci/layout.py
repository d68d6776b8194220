"""Reading an OCI image layout: the reference, index.json, manifests, configs, blobs.

Everything read from the layout is checked against the descriptor that named it
(digest and size) before it is parsed, and parsed into strict structs, so a
hand-edited or truncated layout fails here with a message naming the file, not later
with a KeyError. Media types follow the OCI image spec and Docker's schema 2.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import msgspec

from eventstore.errors import ContentRejected, InvalidArgument, LayerStoreError
from eventstore.names import check_tag, shown

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
# containers/image refuses manifests and configs over 4 MiB: nothing real comes close
MAX_JSON_SIZE = 4 << 20

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)

#: layer media type -> the compression it declares. The content's own magic bytes
#: decide how it is read (as containers/storage does); the type must only be known.
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar": "none",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
OCI_LAYER_TYPE = {"none": "application/vnd.oci.image.layer.v1.tar",
                  "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
                  "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ANY_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


class ImageNotFound(LayerStoreError):
    """No OCI layout at that path, or no image in it with that tag or platform."""

    exit_code = 1


class ImageRejected(ContentRejected):
    """The OCI layout is malformed, incomplete or does not match its own digests."""


# --- the JSON documents (only the fields we use; unknown ones are ignored) ------------

class Platform(msgspec.Struct, frozen=True):
    os: str = ""
    architecture: str = ""
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class Descriptor(msgspec.Struct, frozen=True, rename="camel"):
    media_type: str = ""
    digest: str = ""
    size: int = -1
    annotations: dict[str, str] = {}
    platform: Platform | None = None

    @property
    def ref_name(self) -> str | None:
        return self.annotations.get(REF_NAME)


class Index(msgspec.Struct, frozen=True, rename="camel"):
    schema_version: int = 0
    media_type: str = ""
    manifests: list[Descriptor] = []


class Manifest(msgspec.Struct, frozen=True, rename="camel"):
    schema_version: int = 0
    media_type: str = ""
    config: Descriptor = Descriptor()
    layers: list[Descriptor] = []


class RootFS(msgspec.Struct, frozen=True):
    type: str = ""
    diff_ids: list[str] = []


class ImageConfig(msgspec.Struct, frozen=True):
    architecture: str = ""
    os: str = ""
    variant: str = ""
    rootfs: RootFS = RootFS()


DEFAULT_PLATFORM = Platform(os="linux", architecture="amd64")


def parse_platform(text: str) -> Platform:
    """``OS/ARCH`` or ``OS/ARCH/VARIANT`` (as podman's ``--platform``)."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(re.fullmatch(r"[a-z0-9._-]+", p) for p in parts):
        raise InvalidArgument(f"invalid platform {text!r}: want OS/ARCH[/VARIANT], e.g. linux/arm64/v8")
    return Platform(*parts)


def parse_reference(text: str) -> tuple[Path, str | None]:
    """``DIR[:TAG]`` as skopeo's ``oci:`` transport reads it: split at the first
    colon, unless the whole text names an existing directory."""
    if not text:
        raise InvalidArgument("empty OCI layout reference: want DIR[:TAG]")
    if os.path.isdir(text) or ":" not in text:
        return Path(text), None
    path, _, tag = text.partition(":")
    if not path or not tag:
        raise InvalidArgument(f"invalid OCI layout reference {text!r}: want DIR[:TAG]")
    return Path(path), check_tag(tag)


# --- the layout on disk ----------------------------------------------------------------

class Layout:
    """An OCI image layout directory, opened for reading."""

    def __init__(self, path: Path):
        self.path = Path(path)
        marker = self.path / "oci-layout"
        if not self.path.is_dir():
            raise ImageNotFound(f"{self.path}: no such directory")
        try:
            version = msgspec.json.decode(_read_small(marker, MAX_JSON_SIZE)).get("imageLayoutVersion")
        except FileNotFoundError:
            raise ImageNotFound(f"{self.path}: not an OCI image layout (no oci-layout file)") from None
        except (msgspec.DecodeError, AttributeError):
            raise ImageRejected(f"{marker}: not a JSON object") from None
        if not isinstance(version, str) or not version.startswith("1."):
            raise ImageRejected(f"{marker}: unsupported image layout version {version!r}")

    def blob_path(self, digest: str) -> Path:
        algorithm, _, encoded = digest.partition(":")
        return self.path / "blobs" / algorithm / encoded

    def index(self) -> Index:
        where = self.path / "index.json"
        try:
            data = _read_small(where, MAX_JSON_SIZE)
        except FileNotFoundError:
            raise ImageRejected(f"{where}: missing") from None
        return _decode(data, Index, str(where))

    def read_json(self, desc: Descriptor, kind: type, what: str):
        """The blob ``desc`` names, checked against its digest and size, decoded."""
        check_descriptor(desc, what)
        if desc.size > MAX_JSON_SIZE:
            raise ImageRejected(f"{what} {desc.digest}: {desc.size} bytes, over the {MAX_JSON_SIZE} limit")
        path = self.blob_path(desc.digest)
        try:
            data = _read_small(path, desc.size + 1)
        except FileNotFoundError:
            raise ImageRejected(f"{what} {desc.digest}: blob missing from {self.path}") from None
        if len(data) != desc.size:
            raise ImageRejected(f"{what} {desc.digest}: blob is {len(data)} bytes, "
                                f"its descriptor says {desc.size}")
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != desc.digest:
            raise ImageRejected(f"{what} {desc.digest}: blob content has digest {got}")
        return _decode(data, kind, f"{what} {desc.digest}")


def check_descriptor(desc: Descriptor, what: str) -> None:
    if not _DIGEST_RE.match(desc.digest):
        if _ANY_DIGEST_RE.match(desc.digest):
            raise ImageRejected(f"{what} {desc.digest}: unsupported digest algorithm (sha256 only)")
        raise ImageRejected(f"{what}: invalid digest {desc.digest!r}")
    if desc.size < 0:
        raise ImageRejected(f"{what} {desc.digest}: descriptor has no size")


def _read_small(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def _decode(data: bytes, kind: type, what: str):
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as err:
        raise ImageRejected(f"{what}: not a valid {kind.__name__.lower()}: {err}") from None
    except msgspec.DecodeError as err:
        raise ImageRejected(f"{what}: not JSON ({err})") from None


# --- choosing the image ---------------------------------------------------------------

MAX_INDEX_DEPTH = 4


def select_manifest(layout: Layout, tag: str | None, platform: Platform | None) -> Descriptor:
    """The image manifest ``tag`` (or the only image) names, going through image
    indexes by ``platform`` (linux/amd64 unless given)."""
    candidates = layout.index().manifests
    if tag is not None:
        candidates = [d for d in candidates if d.ref_name == tag]
        if not candidates:
            tags = sorted({d.ref_name for d in layout.index().manifests if d.ref_name})
            # the layout's own tags, escaped: a hostile image must not write to the terminal
            known = f" (tags: {shown(', '.join(tags))})" if tags else " (it has no tags)"
            raise ImageNotFound(f"{layout.path}: no image tagged {tag!r}{known}")
    where = f"{layout.path}" + (f":{tag}" if tag else "")
    in_image_index = False
    for _ in range(MAX_INDEX_DEPTH):
        desc = _one(candidates, platform, where, in_image_index)
        if desc.media_type in MANIFEST_TYPES:
            return desc
        if desc.media_type in INDEX_TYPES:
            candidates = layout.read_json(desc, Index, "image index").manifests
            where, in_image_index = f"image index {desc.digest}", True
            continue
        if desc.media_type in DOCKER_SCHEMA1:
            raise ImageRejected(f"{where}: Docker schema 1 manifests are not supported")
        raise ImageRejected(f"{where}: unknown manifest media type {desc.media_type!r}")
    raise ImageRejected(f"{where}: image indexes nested more than {MAX_INDEX_DEPTH} deep")


def _one(candidates: list[Descriptor], platform: Platform | None, where: str, in_image_index: bool
         ) -> Descriptor:
    """The descriptor to follow: the only one index.json has, else the one for the
    platform. Inside an image index the platform must always match (an arm64-only
    image is not what a linux/amd64 pull wants)."""
    if not candidates:
        raise ImageNotFound(f"{where}: no images")
    if len(candidates) == 1 and not in_image_index:
        return candidates[0]  # a --platform is checked against its config
    wanted = platform or DEFAULT_PLATFORM
    matching = [d for d in candidates if d.platform is not None and _matches(d.platform, wanted)]
    if matching:
        # several variants of one architecture (arm/v6, arm/v7) and none asked for:
        # the first, as containers/image takes
        return matching[0]
    offered = sorted({str(d.platform) for d in candidates if d.platform is not None})
    if not offered and not in_image_index:
        names = sorted({d.ref_name for d in candidates if d.ref_name})
        hint = f": name one of {shown(', '.join(names))}" if names else ""
        raise ImageNotFound(f"{where}: holds {len(candidates)} images{hint}")
    raise ImageNotFound(f"{where}: no image for platform {shown(wanted)} "
                        f"(has {shown(', '.join(offered)) or 'none named'})")


def _matches(have: Platform, want: Platform) -> bool:
    return (have.os == want.os and have.architecture == want.architecture
            and (not want.variant or have.variant == want.variant))
