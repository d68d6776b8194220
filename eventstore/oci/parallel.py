"""create_chain: a chain of new layers filled side by side, each verified and crash-safe.

For a driver whose children do not start from their parent's data
(``Driver.stacks_layers``: overlay), the layers of an image are independent
directories once their ids are known, so their streams can be decompressed, hashed
and extracted at the same time. The order of what is recorded keeps every promise of
a sequential create (docs/content.md, "Importing a chain in parallel"):

1. One record holds every layer's intent (``LayerCreated``), base first; the rules let
   a layer name a parent that the same process is still creating. From here on a crash
   leaves incomplete layers of a dead owner, which recovery removes, children first.
2. The driver makes each layer's directories, base first (an overlay child names its
   parent's short link).
3. Worker threads fill the layers, the biggest blob first: stream, digests, extraction,
   tar-split, ``syncfs`` (``LayerStore.fill_content``, the step a sequential create runs).
4. Completions are appended in chain order, each with its hold, as soon as a layer and
   every layer below it are filled (those ready together share one record): a
   complete layer's parents are always complete.

When a layer fails, the layers above it are stopped (their streams raise at the next
read) and removed, the top first, then the failed layer; the layers below it finish
and complete. The lowest failure is raised, as ``ChainFailed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from eventstore import errors, faults
from eventstore import events as ev
from eventstore.events import Holder
from eventstore.idmap import Owners
from eventstore.names import check_id, check_names
from eventstore.state import require_usable

if TYPE_CHECKING:
    from eventstore.store import LayerStore


@dataclass
class NewLayer:
    """One layer of the chain: the parent of the next one."""

    id: str
    parent: str | None
    content: BinaryIO  # read from a worker thread; closed by the caller
    compressed_digest: str | None = None
    diff_digest: str | None = None
    names: list[str] = field(default_factory=list)
    size: int = 0  # the stream's length if known: the longest fills start first
    progress: Callable[[int], None] | None = None


class ChainFailed(Exception):
    """The layer at ``index`` failed with ``error``; it and the layers above it are
    removed, the layers below it are complete."""

    def __init__(self, index: int, error: BaseException):
        super().__init__(f"layer {index + 1}: {error}")
        self.index = index
        self.error = error


class Stopped(Exception):
    """A fill stopped because a layer below it failed."""


class _Stoppable:
    """A stream whose next read raises ``Stopped`` once ``stop`` is set."""

    def __init__(self, stream: BinaryIO, stop: threading.Event):
        self._stream = stream
        self._stop = stop

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise Stopped("stopped: a layer below failed")
        return self._stream.read(size)


@dataclass
class _Job:
    index: int
    layer: NewLayer
    stop: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    result: dict | None = None  # the completion event's fields, once filled
    error: BaseException | None = None


def create_chain(store: LayerStore, layers: list[NewLayer], *, workers: int, hold: Holder,
                 held: list[str], max_size: int | None = None) -> list[str]:
    """Create ``layers`` (each the parent of the next; the first's parent complete or
    None), filling up to ``workers`` at a time; their ids. Each is held by ``hold`` from
    its completion on and its id appended to ``held``. Raises ``ChainFailed``."""
    jobs = [_Job(i, layer) for i, layer in enumerate(layers)]
    _check_chain(store, layers)
    with store.writing() as w:  # the rules refuse the whole chain, or none of it
        if layers[0].parent is not None:  # what store.create checks of a parent
            store.check_parent_mapping(Owners(), require_usable(_existing(w, layers[0].parent)))
        w.append(*[ev.LayerCreated(layer=j.layer.id, parent=j.layer.parent, names=j.layer.names,
                                   driver=store.driver_name, owner=store.process) for j in jobs])
    try:
        faults.point("store.create.after-intent")
        _create_directories(store, jobs)
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="layer-fill") as pool:
            try:
                for job in sorted((j for j in jobs if j.error is None and not j.stop.is_set()),
                                  key=lambda j: -j.layer.size):
                    job.future = pool.submit(_fill, store, job, max_size)
                _complete_in_order(store, jobs, hold, held)
            except BaseException:
                _stop_above(jobs, -1)  # before the pool waits for its threads
                raise
    except BaseException as exc:  # the coordinator itself failed (an interrupt): undo the rest
        _claim_completed(store, jobs, held)  # a completion may be durable though its append raised
        _undo(store, [j for j in jobs if j.layer.id not in held], exc)
        raise
    failed = _first_failure(jobs)
    if failed is not None:
        _undo(store, jobs[failed.index:], Stopped("stopped: a layer below failed"))
        raise ChainFailed(failed.index, failed.error) from failed.error
    return [j.layer.id for j in jobs]


def _check_chain(store: LayerStore, layers: list[NewLayer]) -> None:
    """Ids and names as ``store.create`` takes them, each layer the parent of the next."""
    for n, layer in enumerate(layers):
        check_id(layer.id)
        check_names(layer.names)
        if n and layer.parent != layers[n - 1].id:
            raise errors.InvalidArgument(f"layer {n + 1} of the chain: its parent is {layer.parent}, "
                                         f"not the layer before it ({layers[n - 1].id})")


def _existing(w, layer_id: str):
    rec = w.layer(layer_id)
    if rec is None:
        raise errors.LayerNotFound(f"layer {layer_id}: not found")
    return rec


def _claim_completed(store: LayerStore, jobs: list[_Job], held: list[str]) -> None:
    """Count as held the layers whose completion (and hold) the log has: an error after
    their record became durable (a checkpoint that failed, an interrupt) must neither
    undo them nor keep their holds from being released."""
    for job in jobs:
        if job.layer.id in held:
            continue
        rec = store.index.layer(job.layer.id)
        if rec is not None and not rec.incomplete:
            held.append(job.layer.id)


def _create_directories(store: LayerStore, jobs: list[_Job]) -> None:
    """The driver's directories, base first; a failure ends the chain there."""
    for job in jobs:
        try:
            store.driver.create(job.layer.id, job.layer.parent, False)
        except Exception as exc:
            job.error = exc
            _stop_above(jobs, job.index)
            return
        faults.point("store.create.after-driver")


def _fill(store: LayerStore, job: _Job, max_size: int | None) -> dict:
    layer = job.layer
    try:
        return store.fill_content(layer.id, _Stoppable(layer.content, job.stop),
                                  compressed_digest=layer.compressed_digest, diff_digest=layer.diff_digest,
                                  max_size=max_size, progress=layer.progress)
    finally:
        done = getattr(layer.progress, "done", None)
        if done is not None:
            done()


def _complete_in_order(store: LayerStore, jobs: list[_Job], hold: Holder, held: list[str]) -> None:
    """Wait for the fills; complete each layer once it and all below it are filled."""
    running = {j.future for j in jobs if j.future is not None}
    completed = 0
    while running:
        finished, running = wait(running, return_when=FIRST_COMPLETED)
        for job in jobs:
            if job.future in finished:
                _settle(job)
                if job.error is not None:
                    _stop_above(jobs, job.index)
        failed = _first_failure(jobs)
        limit = failed.index if failed is not None else len(jobs)
        ready = []
        while completed < limit and jobs[completed].result is not None:
            ready.append(jobs[completed])
            completed += 1
        if ready:
            with store.writing() as w:
                w.append(*[e for j in ready for e in (ev.LayerCompleted(layer=j.layer.id, **j.result),
                                                      ev.HoldAdded(layer=j.layer.id, holder=hold))])
            held.extend(j.layer.id for j in ready)


def _settle(job: _Job) -> None:
    if job.future.cancelled():
        job.error = Stopped("not started: a layer below failed")
        return
    error = job.future.exception()
    if error is None:
        job.result = job.future.result()
    else:
        job.error = error


def _stop_above(jobs: list[_Job], index: int) -> None:
    """Stop every fill above ``index``: not started ones never start, running ones end
    at their next read."""
    for job in jobs[index + 1:]:
        job.stop.set()
        if job.future is not None:
            job.future.cancel()


def _first_failure(jobs: list[_Job]) -> _Job | None:
    """The lowest failed layer, not counting layers stopped because of it."""
    return next((j for j in jobs if j.error is not None and not isinstance(j.error, Stopped)), None)


def _undo(store: LayerStore, jobs: list[_Job], reason: BaseException) -> None:
    """Remove the layers, top first (a parent goes after its children); each is recorded
    with its own error, or ``reason``."""
    for job in reversed(jobs):
        store.undo_create(job.layer.id, job.error if job.error is not None else reason)
