"""Group commit: many threads append, one leader writes and syncs for all of them.

A thread that finds no leader becomes one: it takes every request queued so far, hands
them to ``write_group`` (one record, one fdatasync) and wakes the others with their
LSNs. While it writes, new requests queue up for the next leader. This is LevelDB's
write-batch grouping; it turns N concurrent appends into one fsync instead of N.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


class _Request:
    __slots__ = ("events", "first_lsn", "error", "done")

    def __init__(self, events: Sequence[Any]):
        self.events = events
        self.first_lsn = 0
        self.error: BaseException | None = None
        self.done = False


class GroupCommitter:
    """Serialises appends of one process and batches the concurrent ones."""

    def __init__(self, write_group: Callable[[list[Any]], int], max_group_events: int = 4096):
        self._write_group = write_group
        self._max = max_group_events
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Request] = []
        self._leader_active = False

    def submit(self, events: Sequence[Any]) -> int:
        """Append ``events`` as one atomic unit; the LSN of the first once durable."""
        req = _Request(events)
        with self._cond:
            self._queue.append(req)
            while not req.done:
                if self._leader_active:
                    self._cond.wait()
                    continue
                self._leader_active = True
                group = self._take_group()
                self._cond.release()
                try:
                    self._write(group)
                finally:
                    self._cond.acquire()
                    for r in group:
                        r.done = True
                    self._leader_active = False
                    self._cond.notify_all()
        if req.error is not None:
            raise req.error
        return req.first_lsn

    def _write(self, group: list[_Request]) -> None:
        try:
            lsn = self._write_group([e for r in group for e in r.events])
        except BaseException as exc:  # every request of the group sees the failure
            for r in group:
                r.error = exc
            return
        for r in group:
            r.first_lsn = lsn
            lsn += len(r.events)

    def _take_group(self) -> list[_Request]:
        group, count = [], 0
        while self._queue and (not group or count + len(self._queue[0].events) <= self._max):
            req = self._queue.pop(0)
            group.append(req)
            count += len(req.events)
        return group
