"""The events of the layer store: a msgspec tagged union, the log's payload.

Compatibility rule: an event type is never renamed and a field is never removed or
retyped; a new field always has a default, so every record ever written still decodes
(``tests/test_events.py`` keeps an old record to prove it). ``SCHEMA_VERSION`` counts
those additions; the log header records the version a segment was written with.
"""

from __future__ import annotations

import gc
import os
import sys
import time

import msgspec

SCHEMA_VERSION = 3


class Actor(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Who caused an event: a process, its user, its program."""

    pid: int
    uid: int
    program: str = ""


class Holder(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Who holds a layer: a live process (pid + start time + boot), or a named lease."""

    pid: int = 0
    start: int = 0
    boot: str = ""
    lease: str = ""

    def describe(self) -> str:
        return f"lease {self.lease}" if self.lease else f"pid {self.pid}"


# gc=False: events, actors and holders never take part in a reference cycle, so the
# garbage collector need not track them. Replaying a million events otherwise spends
# most of its time in collections walking the events just decoded (docs/benchmarks.md).
class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, gc=False):
    """Base of every event: when, and by whom."""

    time: int = 0  # UTC, nanoseconds since the epoch
    actor: Actor | None = None

    @property
    def type_name(self) -> str:
        return type(self).__struct_config__.tag


# --- layer lifecycle ---------------------------------------------------------------

class Snapshot(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """What containerd knows of a layer that is one of its snapshots (not an event).

    In an event, ``created``/``updated`` are left out: the fold takes the event's time.
    """

    key: str  # containerd's key (active, view) or name (committed), verbatim
    kind: str  # "active" | "view" | "committed"
    labels: dict[str, str] = {}
    created: int = 0  # ns since the epoch: Info.created_at
    updated: int = 0  # ns since the epoch: Info.updated_at
    size: int = -1  # committed: bytes of the layer's own data, measured at commit
    inodes: int = -1
class IDMapping(msgspec.Struct, frozen=True, omit_defaults=True):
    """``size`` ids from ``container_id`` on are ``host_id`` on in the host (schema 3)."""

    container_id: int = 0
    host_id: int = 0
    size: int = 0


class LayerCreated(Event, tag="layer-created"):
    """Intent: the layer exists, incomplete, owned by ``owner`` until completed.
    ``uid_map``/``gid_map`` (schema 3): the layer's files are owned by the host ids
    these map the content's ids to (empty: not mapped)."""

    layer: str
    parent: str | None = None
    names: list[str] = []
    writable: bool = False
    driver: str = ""
    owner: Holder | None = None
    mount_label: str = ""
    snapshot: Snapshot | None = None  # made by containerd through ``layerstore serve``
    uid_map: list[IDMapping] = []
    gid_map: list[IDMapping] = []


class LayerCompleted(Event, tag="layer-completed"):
    """The driver work (and any content) is durable: the layer is usable."""

    layer: str
    compressed_digest: str = ""
    compressed_size: int = -1
    diff_digest: str = ""
    diff_size: int = -1
    compression: str = ""
    has_tarsplit: bool = False


class LayerMarkedIncomplete(Event, tag="layer-marked-incomplete"):
    """A delete began: the layer is unusable from here on; ``owner`` finishes it."""

    layer: str
    reason: str = ""
    owner: Holder | None = None


class LayerDeleted(Event, tag="layer-deleted"):
    """The layer and all its data are gone."""

    layer: str


class NamesChanged(Event, tag="names-changed"):
    """The layer's names are now exactly ``names``."""

    layer: str
    names: list[str] = []


# --- holds and mounts ----------------------------------------------------------------

class HoldAdded(Event, tag="hold-added"):
    layer: str
    holder: Holder


class HoldReleased(Event, tag="hold-released"):
    layer: str
    holder: Holder


class LayerMounted(Event, tag="layer-mounted"):
    """Mount count +1; the first mount of a boot carries the path the kernel has."""

    layer: str
    mount_point: str = ""
    boot: str = ""


class LayerUnmounted(Event, tag="layer-unmounted"):
    """Mount count -1, or to zero when ``force``."""

    layer: str
    force: bool = False


class MountsReconciled(Event, tag="mounts-reconciled"):
    """The mount count was set to ``count`` to agree with the kernel."""

    layer: str
    count: int = 0
    reason: str = ""


# --- recovery --------------------------------------------------------------------------

class RecoveryStarted(Event, tag="recovery-started"):
    boot: str = ""


class RecoveryFinished(Event, tag="recovery-finished"):
    actions: int = 0


class LayerQuarantined(Event, tag="layer-quarantined"):
    layer: str
    reason: str = ""


class OrphanRemoved(Event, tag="orphan-removed"):
    """Recovery removed data no event accounted for (``what``: driver data, tar-split)."""

    layer: str
    what: str = ""


class ContentRejected(Event, tag="content-rejected"):
    """An import was refused; kept for the audit trail (the layer is removed)."""

    layer: str
    reason: str = ""


# --- integrity (schema 2) -----------------------------------------------------------

class RecordsLost(Event, tag="records-lost"):
    """Log repair replaced damaged or missing records: LSNs ``first_lsn`` to
    ``first_lsn + count - 1`` are gone. ``layers``: the layers the lost records may have
    changed, from what repair could salvage (ids in the damaged bytes, the old read
    models' rows); replaying the marker quarantines them, and every incomplete layer."""

    first_lsn: int = 0
    count: int = 0
    reason: str = ""
    layers: list[str] = []


class DataMovedAside(Event, tag="data-moved-aside"):
    """Data no event accounted for was moved to ``<root>/lost+found/<path>`` (never
    deleted). ``what``: driver data, tar-split, or stray (not named like a layer)."""

    layer: str = ""
    what: str = ""
    path: str = ""


class QuarantineLifted(Event, tag="quarantine-lifted"):
    """The operator lifted a layer's quarantine (``layerstore unquarantine``)."""

    layer: str
    reason: str = ""


class LostFoundPurged(Event, tag="lost-found-purged"):
    """The operator deleted ``<root>/lost+found/<name>`` for good."""

    name: str = ""


class OrphanKept(Event, tag="orphan-kept"):
    """Recovery found data no event accounts for and could not remove it safely (a
    filesystem someone mounted inside, a file the kernel refuses to unlink): it is left
    where it is, for the operator, with the reason."""

    layer: str
    what: str = ""
    reason: str = ""


# --- containerd snapshots (eventstore/containerd, docs/containerd.md) -------------------

class SnapshotCommitted(Event, tag="snapshot-committed"):
    """An active snapshot is now committed under ``key``: read-only, renamed to
    ``names``, its labels replaced; the data stays where it is."""

    layer: str
    key: str = ""
    names: list[str] = []
    labels: dict[str, str] = {}
    size: int = -1
    inodes: int = -1


class SnapshotLabelsChanged(Event, tag="snapshot-labels-changed"):
    """The snapshot's labels are now exactly ``labels``."""

    layer: str
    labels: dict[str, str] = {}


# --- the log's lifecycle (docs/lifecycle.md) ------------------------------------------

class SegmentSealed(Event, tag="segment-sealed"):
    """Segment ``segment`` (LSNs ``first_lsn``..``last_lsn``, ``size`` bytes with CRC32C
    ``crc``, its last event at ``last_time``) is covered by a checkpoint and never
    changes again: it may be archived, and dropped by retention."""

    segment: int = 0
    first_lsn: int = 0
    last_lsn: int = 0
    size: int = 0
    crc: int = 0
    last_time: int = 0


class HistoryHorizon(Event, tag="history-horizon"):
    """Retention dropped every segment before ``first_segment``: the log (and the
    history) now starts at ``first_lsn``; the state before it is carried by the
    checkpoint at ``checkpoint_lsn`` (its last record's ``fingerprint``)."""

    first_lsn: int = 0
    first_segment: int = 0
    checkpoint_lsn: int = 0
    fingerprint: list[int] = []
    policy: str = ""
# --- layer content and data (schema 3) -------------------------------------------------

class DiffApplyStarted(Event, tag="diff-apply-started"):
    """Intent: ``owner`` is applying a tar diff to the layer, into a staged copy
    (``eventstore.applydiff``); the layer is busy until ``diff-applied`` or
    ``diff-apply-abandoned``."""

    layer: str
    owner: Holder | None = None


class DiffApplied(Event, tag="diff-applied"):
    """The staged copy with the diff applied is the layer's data now; the digests and
    sizes are the applied tar's (``has_tarsplit``: it can be reproduced byte for byte)."""

    layer: str
    compressed_digest: str = ""
    compressed_size: int = -1
    diff_digest: str = ""
    diff_size: int = -1
    compression: str = ""
    has_tarsplit: bool = False


class DiffApplyAbandoned(Event, tag="diff-apply-abandoned"):
    """A diff apply ended without changing the layer (refused content, or its process
    died before the swap): the staged copy is gone, the data is as before."""

    layer: str
    reason: str = ""


class LayerDataSet(Event, tag="layer-data-set"):
    """The layer's data item ``key`` is now the blob ``digest`` (``size`` bytes) in
    ``<root>/layer-data/`` (``eventstore.layerdata``)."""

    layer: str
    key: str = ""
    digest: str = ""
    size: int = 0


class LayerDataRemoved(Event, tag="layer-data-removed"):
    """The layer's data item ``key`` is gone."""

    layer: str
    key: str = ""


AnyEvent = (
    LayerCreated
    | LayerCompleted
    | LayerMarkedIncomplete
    | LayerDeleted
    | NamesChanged
    | HoldAdded
    | HoldReleased
    | LayerMounted
    | LayerUnmounted
    | MountsReconciled
    | RecoveryStarted
    | RecoveryFinished
    | LayerQuarantined
    | OrphanRemoved
    | ContentRejected
    | RecordsLost
    | DataMovedAside
    | QuarantineLifted
    | LostFoundPurged
    | OrphanKept
    | SnapshotCommitted
    | SnapshotLabelsChanged
    | SegmentSealed
    | HistoryHorizon
    | DiffApplyStarted
    | DiffApplied
    | DiffApplyAbandoned
    | LayerDataSet
    | LayerDataRemoved
)

EVENT_TYPES: dict[str, type[Event]] = {
    t.__struct_config__.tag: t for t in AnyEvent.__args__  # type: ignore[attr-defined]
}

_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[AnyEvent])


_lost_decoder = msgspec.msgpack.Decoder(RecordsLost)


def encode_lost(event: RecordsLost) -> bytes:
    """What a records-lost marker carries about its loss."""
    return _encoder.encode(event)


def decode_lost(info: bytes, first_lsn: int, count: int) -> RecordsLost:
    """The event a records-lost marker stands for; its LSN range is the marker's own."""
    try:
        event = _lost_decoder.decode(info) if info else RecordsLost()
    except msgspec.DecodeError:
        event = RecordsLost(reason="(the marker's details are unreadable)")
    event.first_lsn, event.count = first_lsn, count
    return event


def encode_batch(events: list[Event]) -> bytes:
    """The payload of one log record: the events, in order."""
    return _encoder.encode(events)


def decode_batch(payload: bytes) -> list[Event]:
    """Inverse of ``encode_batch``; raises ``msgspec.DecodeError`` on bad bytes.

    The cyclic GC is paused while a record decodes: its thousands of new objects (an
    event's lists of names and mappings are GC-tracked, even where the structs are not)
    would otherwise trigger collections that walk everything alive, and nothing decoded
    can form a cycle. Replay of 1,000,000 events: ~550k events/s with the GC on, ~800k
    paused (docs/benchmarks.md, "Log")."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _batch_decoder.decode(payload)
    finally:
        if paused:
            gc.enable()


_actor: Actor | None = None


def current_actor() -> Actor:
    """This process as an Actor (cached: a process does not change its pid)."""
    global _actor
    if _actor is None or _actor.pid != os.getpid():
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        _actor = Actor(pid=os.getpid(), uid=os.getuid(), program=program)
    return _actor


def stamp(event: Event) -> Event:
    """Fill in ``time`` and ``actor`` where the caller left them empty."""
    if not event.time:
        event.time = time.time_ns()
    if event.actor is None:
        event.actor = current_actor()
    return event


def to_builtins(event: Event) -> dict:
    """A JSON-ready dict of the event, its type included."""
    return msgspec.to_builtins(event)
