"""One progress line on a terminal for an image import, whether its layers are read one
after the other (``layer 2/3 9a3c5e0a1f2b [###  ] ...``) or side by side
(``layers 2,3,4/4 [####  ] ...``: the bytes of all of them against their total)."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, TextIO

from eventstore.progress import Progress

if TYPE_CHECKING:
    from eventstore.oci.importer import LayerStep


class ImageProgress:
    """A progress factory for ``import_oci``: called with each layer's step, it returns
    that layer's reporter (None for a layer the store has). Reporters may be called
    from several threads."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self._lock = threading.Lock()
        self._line: Progress | None = None
        self._read: dict[int, int] = {}  # layer number -> bytes read, for the layers of this line
        self._active: list[LayerStep] = []

    def __call__(self, step: LayerStep) -> "LayerReporter | None":
        if step.present:
            print(f"{_label([step])}: present", file=self.stream)
            return None
        with self._lock:
            if self._line is None:
                self._line = Progress(total=0, stream=self.stream)
                self._read.clear()
            self._line.total += step.blob.size
            self._read[step.number] = 0
            self._active.append(step)
            self._line.label = _label(self._active)
        return LayerReporter(self, step)

    def report_read(self, step: LayerStep, read: int) -> None:
        with self._lock:
            if self._line is not None:
                self._read[step.number] = read
                self._line(sum(self._read.values()))

    def layer_done(self, step: LayerStep) -> None:
        with self._lock:
            if step not in self._active or self._line is None:
                return
            self._active.remove(step)
            if self._active:
                self._line.label = _label(self._active)
                return
            self._line.done()  # the last layer of this line: end it
            self._line = None


class LayerReporter:
    """Takes one layer's compressed bytes read so far; ``done()`` once it ends."""

    def __init__(self, image: ImageProgress, step: LayerStep):
        self._image = image
        self._step = step

    def __call__(self, read: int) -> None:
        self._image.report_read(self._step, read)

    def done(self) -> None:
        self._image.layer_done(self._step)


def _label(steps: list[LayerStep]) -> str:
    if len(steps) == 1:
        step = steps[0]
        return f"layer {step.number}/{step.count} {step.blob.digest[7:19]}"
    return f"layers {','.join(str(s.number) for s in steps)}/{steps[0].count}"
