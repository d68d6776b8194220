"""Validating what callers name things with: layer ids, names, leases, digests."""

from __future__ import annotations

import re

from eventstore.errors import InvalidArgument

ID_RE = re.compile(r"^[0-9a-f]{64}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_NAME = 255


def check_id(layer_id: str) -> str:
    """A layer id is 64 lowercase hex digits, like containers/storage's."""
    if not ID_RE.match(layer_id):
        raise InvalidArgument(f"invalid layer id {layer_id!r}: want 64 lowercase hex digits")
    return layer_id


def check_name(name: str, what: str = "name") -> str:
    """Names and leases: printable, at most 255 characters, no '/', no '..', no NUL or
    control characters (they end up in paths, logs and terminals)."""
    if not name or len(name) > MAX_NAME:
        raise InvalidArgument(f"invalid {what} {name!r}: must be 1 to {MAX_NAME} characters")
    if "/" in name or ".." in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidArgument(f"invalid {what} {name!r}: no '/', '..', NUL or control characters")
    return name


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 hex digits>")
    return digest
