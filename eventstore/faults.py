"""Failpoints: named places in the code where a test can crash, fail or slow the store.

Every failpoint is declared once, in ``POINTS`` below (a driver or tool of the user's
adds its own with ``declare``). Arming a name nobody declared, or a malformed spec, is
an error: a typo must not give a crash test that never crashes, and passes.

Disarmed (the normal case) ``point(name)`` is one truth test of an empty dict. Armed
from a test (``arm``) or from the environment (``LAYERSTORE_FAILPOINTS``), a failpoint can:

- ``crash``   end the process on the spot: no cleanup, no flush (``os._exit``);
- ``eio`` / ``enospc``  raise that OSError;
- ``sleep:SECONDS``  pause;
- any of these with ``@N`` appended fires only on the N-th pass (1-based).

``LAYERSTORE_FAILPOINTS="log.append.after-write=crash,driver.overlay.mount=eio@2"``.
``LAYERSTORE_FAILPOINT_TRACE=FILE`` appends every failpoint passed to FILE, one name a
line: the crash harness learns a workload's sequence of failpoints that way.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from eventstore.errors import InvalidArgument

#: how a process ended by a ``crash`` failpoint exits (what a SIGKILL'd shell child shows)
CRASH_EXIT_CODE = 137

#: every failpoint of layerstore, with what has happened when it fires
POINTS: dict[str, str] = {
    # eventstore/log/
    "log.append.before-write": "a record is about to be written",
    "log.append.after-write": "a record is written, not yet synced",
    "log.append.after-fsync": "a record is durable, not yet acknowledged",
    "log.segment.before-fsync": "a new segment's header is written, not synced",
    "log.segment.before-rename": "a new segment is synced under its temp name",
    "log.segment.after-rename": "a new segment is in place",
    "log.repair.before-truncate": "a torn tail is copied aside, not yet truncated",
    "log.seal.after-event": "segments a checkpoint covers are sealed, not yet archived",
    "log.archive.after-compress": "a sealed segment's archive is in place, not yet checked",
    "log.archive.before-unlink": "a sealed segment's archive is checked, the plain file not yet gone",
    "log.retention.after-event": "a history horizon is recorded, its file not yet written",
    "log.retention.after-horizon-file": "the horizon file is written, the old segments not yet dropped",
    "log.retention.before-drop": "an archived segment behind the horizon is about to be deleted",
    # eventstore/fsutil.py
    "fsutil.atomic-write.before-rename": "an atomic write's temp file is synced, not renamed",
    "fsutil.atomic-write.after-rename": "an atomic write is renamed, its directory not yet synced",
    # eventstore/index.py
    "index.before-commit": "a projection transaction is about to commit",
    "index.after-commit": "a projection transaction committed",
    # eventstore/checkpoint.py
    "checkpoint.before-write": "a checkpoint is about to be written",
    "checkpoint.after-write": "a checkpoint is in place, older ones not yet pruned",
    # eventstore/store.py
    "store.create.after-intent": "the intent event is durable, no driver work yet",
    "store.create.after-driver": "the driver created the layer, no content yet",
    "store.create.after-import": "the tar is extracted and its tar-split synced, the layer data not yet",
    "store.create.after-content": "content is extracted and synced, not yet completed",
    "store.delete.after-mark": "the delete is recorded as begun, data still there",
    "store.delete.after-remove": "the driver removed the data, delete not yet recorded",
    "store.mount.after-driver": "the kernel has the mount, the count is not yet recorded",
    "store.umount.after-driver": "the kernel dropped the mount, the count is not yet recorded",
    # eventstore/recovery.py
    "recovery.before-remove": "recovery is about to remove a half-made or half-deleted layer",
    "recovery.after-remove": "recovery removed a layer's data, not yet recorded",
    "recovery.before-orphan": "recovery is about to remove orphan driver data",
    # eventstore/containerd/
    "containerd.commit.before-event": "Commit: usage measured, data not yet synced nor recorded",
    "containerd.commit.after-event": "Commit: recorded durably, not yet answered",
    "recovery.before-apply": "recovery is about to finish or roll back an interrupted diff apply",
    # eventstore/applydiff.py
    "applydiff.after-intent": "diff-apply-started is durable, nothing staged yet",
    "applydiff.after-stage": "the staged copy has the diff and is synced, its result not yet recorded",
    "applydiff.before-swap": "the result and the staged tree's inode are recorded, not swapped in",
    "applydiff.after-swap": "the staged tree is the layer's data, the old data not yet removed or recorded",
    # eventstore/layerdata.py
    "layerdata.after-blob": "a layer data blob is durable, its layer-data-set event not yet appended",
    # eventstore/drivers/
    "driver.overlay.create.half-done": "overlay: directories made, short link not yet",
    "driver.overlay.mount": "overlay: about to mount(2)",
    "driver.overlay.unmount": "overlay: about to umount2(2)",
    "driver.overlay.remove.before-rmtree": "overlay: unmounted and unlinked, dir not deleted",
    "driver.vfs.create.after-copy": "vfs: the layer's directory is made, create not returned",
    "driver.vfs.remove.before-rmtree": "vfs: remove is about to delete the layer's directory",
    "driver.btrfs.create.after-subvolume": "btrfs: the subvolume is made, its read-only mark not yet",
    "driver.btrfs.remove.before-destroy": "btrfs: remove is about to delete the subvolume",
    "driver.btrfs.remove.after-destroy": "btrfs: the subvolume is deleted, its read-only mark not yet",
    "driver.fuse-overlayfs.mount": "fuse-overlayfs: about to start the mount program",
    "driver.fuse-overlayfs.unmount": "fuse-overlayfs: about to unmount",
}

ACTIONS = ("crash", "eio", "enospc", "sleep:SECONDS")

# name -> (action, fire_on_pass or 0 for every pass)
_armed: dict[str, tuple[str, int]] = {}
_passes: dict[str, int] = {}
_trace_fd: int | None = None
# from the environment, before their names could be checked (a user's driver declares
# its points when its module loads, which may be after this module)
_pending: dict[str, tuple[str, int]] = {}
_environment_errors: list[str] = []


def declare(name: str, doc: str) -> None:
    """Declare a failpoint of code outside layerstore (a user's driver)."""
    POINTS[name] = doc
    if name in _pending:
        _armed[name] = _pending.pop(name)


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
    time.sleep(float(action[len("sleep:"):]))


def parse_action(spec: str) -> tuple[str, int]:
    """``ACTION[@N]`` as (action, pass), or InvalidArgument saying what is wrong."""
    action, at, nth = spec.partition("@")
    if at and not (nth.isdigit() and int(nth) >= 1):
        raise InvalidArgument(f"failpoint action {spec!r}: the pass after '@' must be a number >= 1")
    if action.startswith("sleep:"):
        try:
            seconds = float(action[len("sleep:"):])
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < 3600:
            raise InvalidArgument(f"failpoint action {spec!r}: sleep wants seconds, e.g. sleep:0.5")
    elif action not in ("crash", "eio", "enospc"):
        raise InvalidArgument(f"failpoint action {spec!r}: want one of {', '.join(ACTIONS)}, optionally @N")
    return action, int(nth) if nth else 0


def _unknown(name: str) -> InvalidArgument:
    return InvalidArgument(f"unknown failpoint {name!r} (see 'layerstore failpoints')")


def arm(name: str, action: str) -> None:
    """Arm ``name`` with ``action`` (see the module docstring); ``@N`` picks a pass."""
    if name not in POINTS:
        raise _unknown(name)
    _armed[name] = parse_action(action)
    _passes.pop(name, None)


def disarm(name: str | None = None) -> None:
    """Disarm one failpoint, or all of them."""
    if name is None:
        _armed.clear()
        _passes.clear()
    else:
        _armed.pop(name, None)
        _passes.pop(name, None)


def check_environment() -> None:
    """Raise InvalidArgument when ``LAYERSTORE_FAILPOINTS`` is malformed or names a
    failpoint that nobody has declared (called when a store or a log opens)."""
    if _environment_errors:
        raise InvalidArgument(f"LAYERSTORE_FAILPOINTS: {_environment_errors[0]}")
    for name in _pending:
        raise InvalidArgument(f"LAYERSTORE_FAILPOINTS: {_unknown(name)}")


@contextmanager
def tracing_to(path: str | os.PathLike) -> Iterator[None]:
    """Append every failpoint passed inside the block to ``path``, one name a line."""
    global _trace_fd
    saved = _trace_fd
    _trace_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        yield
    finally:
        os.close(_trace_fd)
        _trace_fd = saved


def _from_environment() -> None:
    global _trace_fd
    spec = os.environ.get("LAYERSTORE_FAILPOINTS", "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, eq, action = item.partition("=")
        try:
            parsed = parse_action(action if eq else "crash")
        except InvalidArgument as exc:
            _environment_errors.append(f"{item!r}: {exc}")
            continue
        (_armed if name in POINTS else _pending)[name] = parsed
    trace = os.environ.get("LAYERSTORE_FAILPOINT_TRACE")
    if trace:
        _trace_fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


_from_environment()
