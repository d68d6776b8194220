"""Failpoints: named places in the code where a test can crash, fail or slow the store.

Disarmed (the normal case) ``point(name)`` is one dict lookup on an empty dict. Armed
from a test (``arm``) or from the environment (``LAYERSTORE_FAILPOINTS``), a failpoint can:

- ``crash``   end the process on the spot: no cleanup, no flush (``os._exit``);
- ``eio`` / ``enospc``  raise that OSError;
- ``sleep:SECONDS``  pause;
- any of these with ``@N`` appended fires only on the N-th pass (1-based).

``LAYERSTORE_FAILPOINTS="log.append.before-fsync=crash,driver.mount=eio@2"``.
``LAYERSTORE_FAILPOINT_TRACE=FILE`` appends every failpoint passed to FILE, one name a
line: the crash harness learns a workload's sequence of failpoints that way.
"""

from __future__ import annotations

import errno
import os
import time

CRASH_EXIT_CODE = 137

# name -> (action, fire_on_pass or 0 for every pass)
_armed: dict[str, tuple[str, int]] = {}
_passes: dict[str, int] = {}
_trace_fd: int | None = None
#: every failpoint name the code has declared (filled by ``declare``) for ``layerstore failpoints``
KNOWN: dict[str, str] = {}


def declare(name: str, doc: str) -> None:
    KNOWN[name] = doc


def point(name: str) -> None:
    """A failpoint. Does nothing unless armed or tracing."""
    if _armed or _trace_fd is not None:
        _fire(name)


def _fire(name: str) -> None:
    if _trace_fd is not None:
        os.write(_trace_fd, name.encode() + b"\n")
    armed = _armed.get(name)
    if armed is None:
        return
    action, on_pass = armed
    count = _passes.get(name, 0) + 1
    _passes[name] = count
    if on_pass and count != on_pass:
        return
    if action == "crash":
        os._exit(CRASH_EXIT_CODE)
    if action == "eio":
        raise OSError(errno.EIO, f"injected EIO at failpoint {name}")
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"injected ENOSPC at failpoint {name}")
    if action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
        return
    raise ValueError(f"unknown failpoint action {action!r} for {name}")


def arm(name: str, action: str) -> None:
    """Arm ``name`` with ``action`` (see the module docstring); ``@N`` picks a pass."""
    action, _, nth = action.partition("@")
    _armed[name] = (action, int(nth) if nth else 0)
    _passes.pop(name, None)


def disarm(name: str | None = None) -> None:
    """Disarm one failpoint, or all of them."""
    if name is None:
        _armed.clear()
        _passes.clear()
    else:
        _armed.pop(name, None)
        _passes.pop(name, None)


def _from_environment() -> None:
    global _trace_fd
    spec = os.environ.get("LAYERSTORE_FAILPOINTS", "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        arm(name, action or "crash")
    trace = os.environ.get("LAYERSTORE_FAILPOINT_TRACE")
    if trace:
        _trace_fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


_from_environment()
