"""Small regular files created and written by worker threads while the tar is read on.

On a busy ext4 file system, creating a file can wait on the journal for tenths of a
millisecond; a few threads creating files side by side overlap those waits, where one
thread would wait for each in turn. The extractor hands over only files it has proved
independent of everything else in flight (docs/content.md, "Files written side by
side"); the writers just run jobs, remember the first failure, and let the extractor
wait for all of them (``drain``) before anything that could depend on them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class DeferredFailure(Exception):
    """A job failed on a worker thread; ``where`` says which entry, ``error`` how."""

    def __init__(self, where: Any, error: BaseException):
        super().__init__(f"{where}: {error}")
        self.where = where
        self.error = error


class FileWriters:
    """Runs ``write(job)`` for submitted jobs on ``workers`` threads, ``batch`` jobs per
    hand-over, at most ``max_pending`` jobs in flight (each job holds a copy of its
    file's bytes)."""

    def __init__(self, write: Callable[[Any], None], *, workers: int = 2, batch: int = 16,
                 max_pending: int = 256):
        self._write = write
        self._batch_size = batch
        self._max_pending = max_pending
        self._batch: list[tuple[Any, Any]] = []  # (job, where), not yet handed over
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0  # handed over, not finished
        self._failure: DeferredFailure | None = None
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name="layer-write", daemon=True)
                         for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> bool:
        """True while a submitted job may not have finished."""
        return bool(self._batch) or self._in_flight > 0

    def submit(self, job: Any, where: Any) -> None:
        """Queue ``job``; ``where`` names it in a failure. Raises the first failure so
        far, if any (the import stops early)."""
        if self._failure is not None:
            raise self._failure
        self._batch.append((job, where))
        if len(self._batch) >= self._batch_size:
            self._hand_over()
            if self._in_flight >= self._max_pending:
                self._wait(self._max_pending // 2)

    def drain(self) -> None:
        """Wait until every submitted job has finished; raise the first failure."""
        if self._batch:
            self._hand_over()
        self._wait(0)
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Stop: jobs not started are dropped, running ones finish (so no file
        descriptor they use is closed under them), the threads end."""
        with self._lock:
            self._stopping = True
        self._batch.clear()
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        with self._lock:
            self._in_flight += len(batch)
        self._queue.put(batch)

    def _wait(self, at_most: int) -> None:
        with self._idle:
            while self._in_flight > at_most:
                self._idle.wait()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not _STOP:
            for job, where in batch:
                if not self._stopping and self._failure is None:
                    try:
                        self._write(job)
                    except Exception as exc:  # raised in the extractor's thread by drain/submit
                        with self._lock:
                            self._failure = self._failure or DeferredFailure(where, exc)
                with self._lock:
                    self._in_flight -= 1
                    if self._in_flight <= self._max_pending // 2:
                        self._idle.notify_all()
