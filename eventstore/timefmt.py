"""Times as the CLI writes and reads them: RFC 3339 with every nanosecond, and relative
durations (``10m``, ``1h30m``, ``2d``) as podman's ``--since`` takes them."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
          "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")


def rfc3339(ns: int) -> str:
    """``2026-11-30T03:34:54.327691731Z``: every digit, so that a time copied into
    ``--since`` lands on the same side of each event as the event it came from."""
    return f"{datetime.fromtimestamp(ns // 10**9, tz=timezone.utc):%Y-%m-%dT%H:%M:%S}.{ns % 10**9:09d}Z"


def duration_ns(text: str) -> int | None:
    """Nanoseconds of a duration like ``90s``, ``10m``, ``1h30m``, ``2d`` (None: not one)."""
    text = text.strip()
    if not _DURATION.match(text):
        return None
    total = 0
    for number, unit in _PART.findall(text):
        whole, _, fraction = number.partition(".")
        total += int(whole) * _UNITS[unit] + (int(fraction.ljust(9, "0")[:9]) * _UNITS[unit]) // 10**9
    return total


def ago(text: str, now_ns: int | None = None) -> int | None:
    """The moment ``text`` (a duration) before now, in ns since the epoch; None when
    ``text`` is not a duration."""
    span = duration_ns(text)
    if span is None:
        return None
    return (time.time_ns() if now_ns is None else now_ns) - span
