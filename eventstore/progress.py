"""A progress line on a terminal for long imports: bytes read, rate. Only on a tty."""

from __future__ import annotations

import sys
import time


class Progress:
    """Callable with the bytes read so far; redraws at most ten times a second."""

    def __init__(self, total: int | None = None, label: str = "importing", stream=sys.stderr):
        self.total = total
        self.label = label
        self.stream = stream
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._done = 0

    def __call__(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self._done / max(now - self.start, 1e-6)
        if self.total:
            frac = min(1.0, self._done / self.total)
            bar = "#" * int(frac * 30)
            text = f"{self.label} [{bar:<30}] {_mib(self._done)}/{_mib(self.total)} {_mib(rate)}/s"
        else:
            text = f"{self.label} {_mib(self._done)} {_mib(rate)}/s"
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"
