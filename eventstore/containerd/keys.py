"""containerd's snapshot keys as layer names, one to one (docs/containerd.md, Keys).

A key is any string (``default/12/sha256:...``, absolute paths in containerd's test
suite); a layer name has no ``/``, no ``..``, no control characters and at most 255
characters (DESIGN §1). ``name_for`` is a function of the key alone, so every call
finds its layer by one indexed name lookup:

- ``containerd:`` + the key, percent-escaped, when that fits;
- ``containerd@`` + the key's SHA-256 in hex otherwise.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

from eventstore.errors import InvalidArgument
from eventstore.names import MAX_NAME

ESCAPED_PREFIX = "containerd:"
DIGEST_PREFIX = "containerd@"
#: containerd's own keys stay under 300 bytes; a key is written into every event about it
MAX_KEY_BYTES = 4096


def check_key(key: str, what: str = "key") -> str:
    """``key`` when containerd may use it here, else InvalidArgument."""
    if not key:
        raise InvalidArgument(f"snapshot {what} is empty")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"snapshot {what} {key[:64]!r}: not valid unicode") from None
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(f"snapshot {what} is {size} bytes, at most {MAX_KEY_BYTES}")
    return key


def _escaped(char: str, previous: str) -> str:
    if char == "%" or char == "/" or not char.isprintable() or (char == "." and previous == "."):
        return "".join(f"%{byte:02X}" for byte in char.encode())
    return char


def escape(key: str) -> str:
    """``key`` with ``%``, ``/``, unprintable characters and a ``.`` after a ``.`` as
    ``%XX`` (UTF-8 bytes): a valid name body that ``unescape`` turns back into the key."""
    out = []
    previous = ""
    for char in key:
        piece = _escaped(char, previous)
        out.append(piece)
        previous = piece[-1]
    return "".join(out)


def unescape(body: str) -> str:
    return unquote(body, errors="strict")


def name_for(key: str) -> str:
    """The layer name that stands for ``key``."""
    escaped = ESCAPED_PREFIX + escape(key)
    if len(escaped) <= MAX_NAME:
        return escaped
    return DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def key_from_name(name: str) -> str | None:
    """The key an escaped-form name stands for (None for the digest form, whose key
    only the layer record holds, and for names that are no snapshot's)."""
    if name.startswith(ESCAPED_PREFIX):
        return unescape(name[len(ESCAPED_PREFIX):])
    return None
