"""Who is running: this process as a hold owner, whether another is still alive, and
which boot this is. ``LAYERSTORE_BOOT_ID`` overrides the boot id (tests use it to
play a reboot)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI's fast read path asks is_alive without loading the events
    from eventstore.events import Holder

_boot_id: str | None = None


def boot_id() -> str:
    global _boot_id
    override = os.environ.get("LAYERSTORE_BOOT_ID")
    if override:
        return override
    if _boot_id is None:
        with open("/proc/sys/kernel/random/boot_id") as f:
            _boot_id = f.read().strip()
    return _boot_id


def start_time(pid: int) -> int | None:
    """The start time, in clock ticks since boot, of the process ``pid`` while it runs
    (None: no such process, or a zombie: it has exited and only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # dead: a parent that never reaps it must not keep it "alive"
        return None
    return int(fields[19])


def holder_for(pid: int) -> "Holder":
    """``pid`` as a hold owner: pid, start time and boot identify it for good."""
    from eventstore.events import Holder

    return Holder(pid=pid, start=start_time(pid) or 0, boot=boot_id())


def this_process() -> "Holder":
    return holder_for(os.getpid())


def is_alive(holder: "Holder") -> bool:
    """A lease is always alive; a process is alive while the same pid started at the
    same time in the same boot still runs (a zombie does not: it is dead, unreaped)."""
    if holder.lease:
        return True
    return alive(holder.pid, holder.start, holder.boot)


def alive(pid: int, start: int, boot: str) -> bool:
    """True while process ``pid``, started at ``start`` in boot ``boot``, runs."""
    if boot and boot != boot_id():
        return False
    return start_time(pid) == start
