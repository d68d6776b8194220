"""Retrying the transient, and only the transient (never an fsync).

- a busy SQLite database (another process holds the write lock longer than the
  connection's own busy timeout);
- EBUSY from umount (something still has a file open in the mount for a moment).
"""

from __future__ import annotations

import errno
import sqlite3

from tenacity import retry, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential


def _is_busy_database(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


def _is_ebusy(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EBUSY


on_busy_database = retry(
    retry=retry_if_exception(_is_busy_database),
    wait=wait_exponential(multiplier=0.01, max=0.5),
    stop=stop_after_delay(60),
    reraise=True,
)


def on_ebusy(seconds: float = 2.0, attempts: int = 20):
    """Retry a call that fails with EBUSY for up to ``seconds`` / ``attempts``."""
    return retry(
        retry=retry_if_exception(_is_ebusy),
        wait=wait_exponential(multiplier=0.02, max=0.25),
        stop=stop_after_delay(seconds) | stop_after_attempt(attempts),
        reraise=True,
    )
