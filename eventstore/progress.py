"""Progress on a terminal for long jobs: a tqdm bar on stderr — width-aware, with the
percentage, rate and time left when the total is known.

tqdm is imported only when a bar is drawn, and a bar is drawn only when stderr is a
terminal (``on_terminal``): scripts, pipes and CI logs never pay for it or see it.
"""

from __future__ import annotations

import sys


class Progress:
    """A bar. Call it with the amount done so far (a running total), or ``advance`` it;
    ``done()`` when finished."""

    def __init__(self, total: int | None = None, label: str = "importing", stream=None, unit: str = "B"):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=label, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
                         file=stream or sys.stderr, dynamic_ncols=True, mininterval=0.1, leave=True)
        self._done = 0

    def __call__(self, done: int) -> None:
        if done > self._done:
            self._bar.update(done - self._done)
            self._done = done

    def advance(self, amount: int = 1) -> None:
        self(self._done + amount)

    @property
    def total(self) -> int | None:
        return self._bar.total

    @total.setter
    def total(self, total: int | None) -> None:  # more work joined the bar
        self._bar.total = total
        self._bar.refresh()

    @property
    def label(self) -> str:
        return self._bar.desc

    @label.setter
    def label(self, label: str) -> None:
        self._bar.set_description_str(label)

    def done(self) -> None:
        self._bar.close()


def on_terminal(total: int | None = None, label: str = "importing", unit: str = "B") -> Progress | None:
    """A bar when stderr is a terminal, else None (and tqdm is not imported)."""
    if not sys.stderr.isatty():
        return None
    return Progress(total, label, unit=unit)
