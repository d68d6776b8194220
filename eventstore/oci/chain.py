"""Layer ids for images: containers/image's chain ids (DESIGN §1).

A base layer's id is its diff digest's hex; a child's is
``sha256(parent_id + "+" + diff_digest_hex)``. They come from the image config's
``rootfs.diff_ids`` alone, so every layer's id is known before any layer is read, and
the same image gets the same ids here and in containers/storage.
"""

from __future__ import annotations

import hashlib

from eventstore.names import DIGEST_RE


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The layer id of each prefix of ``diff_ids`` (sha256 digests), base first."""
    ids: list[str] = []
    for diff_id in diff_ids:
        if not DIGEST_RE.match(diff_id):
            raise ValueError(f"not a sha256 digest: {diff_id!r}")
        hex_digest = diff_id.removeprefix("sha256:")
        ids.append(hashlib.sha256(f"{ids[-1]}+{hex_digest}".encode()).hexdigest() if ids else hex_digest)
    return ids
