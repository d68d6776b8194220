"""Group commit: many threads append, one leader writes and syncs for all of them.

A thread that finds no leader becomes one: it takes every request queued so far, hands
them to ``write_group`` (one record, one fdatasync) and wakes the others with their
LSNs; the oldest request still queued leads next. This is LevelDB's write-batch
grouping; it turns N concurrent appends into one fsync instead of N.

Two refinements, both measured (docs/benchmarks.md, "Log"):
- each waiter has its own wakeup, so a finished group wakes exactly its members and
  the next leader, never every waiting thread;
- a leader briefly waits for the threads of the last groups to queue again, so that
  concurrent appenders share one sync instead of splitting into two alternating half
  groups. The wait is bounded by half a sync, and never happens for a lone appender.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

# The longest a leader waits for stragglers, whatever the disk's sync time.
MAX_GATHER_SECONDS = 0.0005


class _Request:
    __slots__ = ("events", "thread", "first_lsn", "error", "done", "leads", "wakeup")

    def __init__(self, events: Sequence[Any]):
        self.events = events
        self.thread = threading.get_ident()
        self.first_lsn = 0
        self.error: BaseException | None = None
        self.done = False   # written (or failed); set under the committer's lock
        self.leads = False  # handed the leadership; set under the committer's lock
        # Released exactly once, by the leader that sets ``done`` or ``leads``.
        self.wakeup = threading.Lock()
        self.wakeup.acquire()


class GroupCommitter:
    """Serialises appends of one process and batches the concurrent ones."""

    def __init__(self, write_group: Callable[[list[Any]], int], max_group_events: int = 4096):
        self._write_group = write_group
        self._max = max_group_events
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[_Request] = deque()
        self._leader_active = False
        self._awaited = 0                      # queue length a gathering leader waits for
        self._recent: set[int] = set()         # threads of the last two groups
        self._last_group: set[int] = set()
        self._write_seconds = 0.0              # moving average of one group's write + sync

    def submit(self, events: Sequence[Any]) -> int:
        """Append ``events`` as one atomic unit; the LSN of the first once durable."""
        req = _Request(events)
        with self._lock:
            self._queue.append(req)
            follow = self._leader_active
            self._leader_active = True
            if self._awaited and len(self._queue) >= self._awaited:
                self._arrived.notify()
        if follow:
            try:
                req.wakeup.acquire()  # until done, or handed the leadership
            except BaseException:
                self._abandon(req)
                raise
        if not req.done:
            self._lead(req)
        if req.error is not None:
            raise req.error
        return req.first_lsn

    def _abandon(self, req: _Request) -> None:
        # The waiting thread was interrupted (KeyboardInterrupt): leave the queue, or,
        # if the leadership was already handed over, exercise it so nobody waits forever.
        with self._lock:
            if req.done:
                return
            if not req.leads:
                self._queue.remove(req)
                return
        self._lead(req)

    def _lead(self, req: _Request) -> None:
        # The leader's own request heads the queue: a thread leads only when it found
        # the queue empty, or when it was handed the leadership as the queue's head.
        group: list[_Request] = []
        try:
            with self._lock:
                self._gather()
                group = self._take_group()
            started = time.perf_counter()
            self._write(group)
            self._write_seconds += (time.perf_counter() - started - self._write_seconds) / 8
        finally:
            with self._lock:
                for r in group:
                    r.done = True
                if not group:  # interrupted before taking a group: our request goes too
                    self._queue.remove(req)
                threads = {r.thread for r in group}
                self._recent, self._last_group = self._last_group | threads, threads
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.leads = True
                self._leader_active = successor is not None
            for r in group:
                if r is not req:
                    r.wakeup.release()
            if successor is not None:
                successor.wakeup.release()

    def _gather(self) -> None:
        # Called with the lock held. The threads of the group that just finished are
        # still waking up; without them this group would hold only those that queued
        # during the last sync. Wait for them a fraction of a sync, never longer.
        expected = len(self._recent)
        if len(self._queue) >= expected:
            return
        self._awaited = expected
        try:
            self._arrived.wait(timeout=min(self._write_seconds / 2, MAX_GATHER_SECONDS))
        finally:
            self._awaited = 0

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
            req = self._queue.popleft()
            group.append(req)
            count += len(req.events)
        return group
