"""What the caller should know although the operation succeeded (a warning), kept apart
from errors: the store says it here, and whoever drives the store decides how it is shown.

By default a notice goes to the ``layerstore`` logger when the program configured
logging, else as one line on stderr. The CLI collects them instead (``collecting``) and
prints the first only when its command succeeds: a failed command prints its one error
line, and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

_sink: list[str] | None = None


def notice(message: str) -> None:
    if _sink is not None:
        _sink.append(message)
        return
    import logging

    logger = logging.getLogger("layerstore")
    if logger.hasHandlers():
        logger.warning(message)
    else:
        print(f"layerstore: warning: {message}", file=sys.stderr)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """Notices made inside the block are kept in the list it yields, not shown."""
    global _sink
    saved, _sink = _sink, []
    try:
        yield _sink
    finally:
        _sink = saved
