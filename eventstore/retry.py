"""Retrying the transient, and only the transient (never an fsync).

- a busy SQLite database (another process holds the write lock longer than the
  connection's own busy timeout);
- EBUSY from umount (something still has a file open in the mount for a moment).

tenacity is imported when a retry policy is first built, not at import time: it costs
~20 ms, and most CLI calls never retry anything.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def is_busy_database(exc: BaseException) -> bool:
    """SQLite's own word for it (SQLITE_BUSY, SQLITE_LOCKED and their extended codes),
    not the message text, which changes between SQLite versions."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, sqlite3.OperationalError) and name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _is_ebusy(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EBUSY


def on_busy_database(func: F) -> F:
    """``func`` retried with backoff while SQLite says the database is busy (60 s at most)."""
    from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

    return retry(
        retry=retry_if_exception(is_busy_database),
        wait=wait_exponential(multiplier=0.01, max=0.5),
        stop=stop_after_delay(60),
        reraise=True,
    )(func)


def on_ebusy(seconds: float = 2.0, attempts: int = 20) -> Callable[[F], F]:
    """A decorator: retry a call that fails with EBUSY for up to ``seconds`` / ``attempts``."""

    def decorate(func: F) -> F:
        from tenacity import retry, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

        return retry(
            retry=retry_if_exception(_is_ebusy),
            wait=wait_exponential(multiplier=0.02, max=0.25),
            stop=stop_after_delay(seconds) | stop_after_attempt(attempts),
            reraise=True,
        )(func)

    return decorate
