"""Following the log as it grows (``layerstore events --follow``), as ``podman events``
streams a fleet's events into a log pipeline.

A reader opens the log read-only (it takes no lock and changes nothing), hands every
event from a starting LSN to the caller, then waits: inotify on ``<root>/log`` wakes it
when a segment is written or a new one appears, and it reads on from where it stopped.
A record another process is still writing is not read until it is whole (the reader
sees a torn tail and leaves it; it never cuts anything). The LSN of each event is the
resume cursor: a consumer that stored the last LSN it shipped starts again at the next.
"""

from __future__ import annotations

import ctypes
import os
import select
import time
from collections.abc import Callable
from pathlib import Path

from eventstore.errors import NoStore

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
#: wake at least this often even if inotify said nothing (a lost wakeup costs one
#: period, never an event)
POLL_SECONDS = 1.0


class _Wakeup:
    """Blocks until the log directory changes (inotify), or ``timeout`` passes."""

    def __init__(self, directory: Path):
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(directory),
                                                  IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) >= 0:
                self.fd = fd
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError):
            self.fd = -1

    def wait(self, timeout: float) -> None:
        if self.fd < 0:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def first_lsn_at(root: Path, when_ns: int) -> int:
    """The LSN of the first event at or after ``when_ns`` (one past the end if none)."""
    from eventstore.log import EventLog

    with EventLog.open(root, writer=False, create=False) as log:
        for lsn, event in log.events():
            if event.time >= when_ns:
                return lsn
        return log.last_lsn + 1


def stream(root: str | os.PathLike, since_lsn: int, on_event: Callable, *, follow: bool = False,
           seen_lsn: int = 0, keep_going: Callable[[], bool] = lambda: True,
           poll_seconds: float = POLL_SECONDS) -> int:
    """Call ``on_event(lsn, event)`` for every event from ``since_lsn`` on; with
    ``follow``, then for every event appended, until ``keep_going()`` says stop. The
    last LSN handed out (``since_lsn - 1`` if none)."""
    from eventstore.log import EventLog

    root = Path(root)
    if not (root / "log").is_dir():
        raise NoStore(f"no layer store at {root}")
    last = since_lsn - 1
    with EventLog.open(root, writer=False, create=False, seen_lsn=seen_lsn) as log:
        for lsn, event in log.events(max(since_lsn, 1)):
            on_event(lsn, event)
            last = lsn
        if not follow:
            return last
        arrived: list = []
        log.listener = arrived.append
        wakeup = _Wakeup(root / "log")
        try:
            while keep_going():
                log.catch_up()
                for record in arrived:
                    for i, event in enumerate(record.events):
                        if record.lsn + i >= since_lsn:
                            on_event(record.lsn + i, event)
                            last = record.lsn + i
                arrived.clear()
                wakeup.wait(poll_seconds)
        finally:
            wakeup.close()
    return last
