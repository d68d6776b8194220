"""Sizes given by callers: ``--max-size 64G`` and the API's ``max_size``.

Units are binary, as containers/storage and docker read sizes of storage and memory
(go-units' ``RAMInBytes``): k = 1024, M = 1024², G = 1024³, T, P; case does not matter,
and a trailing ``b``/``B`` or ``iB`` changes nothing (``64M`` = ``64MB`` = ``64MiB``).
A size is at least one byte: 0 is refused, not read as "no limit" (leave the option
out for the default).
"""

from __future__ import annotations

import re

from eventstore.errors import InvalidArgument

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
MAX_SIZE = (1 << 63) - 1


def parse_size(text: str) -> int:
    """Bytes that ``text`` (``4096``, ``10k``, ``64M``, ``1.5G``) means; InvalidArgument
    for anything else, zero and negatives included."""
    found = _SIZE_RE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise InvalidArgument(f"invalid size {text!r}: want a positive number of bytes, optionally "
                              "with a k, M, G, T or P suffix (powers of 1024)")
    number, unit = found.groups()
    scale = 1024 ** _UNITS[unit.lower()]
    if "." in number:
        whole, fraction = number.split(".")
        size = int(whole) * scale + int(fraction) * scale // 10 ** len(fraction)
    else:
        size = int(number) * scale
    return check_size(size, f"size {text!r}")


def check_size(size: int, what: str = "max_size") -> int:
    """``size`` when it is a whole number of bytes from 1 to 2⁶³-1."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidArgument(f"{what} must be a whole number of bytes, not {size!r}")
    if size < 1:
        raise InvalidArgument(f"{what} must be at least 1 byte, not {size}")
    if size > MAX_SIZE:
        raise InvalidArgument(f"{what} is too large: at most {MAX_SIZE} bytes")
    return size


def size_argument(text: str) -> int:
    """``parse_size`` for argparse's ``type=``: a bad size is a usage error (exit 2)."""
    import argparse

    try:
        return parse_size(text)
    except InvalidArgument as err:
        raise argparse.ArgumentTypeError(str(err)) from None
