"""containerd's snapshotter calls as store operations (docs/containerd.md, The calls).

A snapshot is a layer whose record carries ``snapshot`` (key, kind, labels, times);
``Snapshotter`` finds it by the name its key maps to (``keys.name_for``) and changes
it only through the store's operations, so every change is logged, recovered and
audited. Errors are LayerStoreError subclasses; ``service`` turns them into the gRPC
codes containerd expects. Calls run one at a time: the store handle and its SQLite
connection are shared by the server's threads.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple

from eventstore import errors, faults
from eventstore.containerd import filters, keys
from eventstore.containerd.mounts import Mount, check_driver, snapshot_mounts
from eventstore.events import Holder, Snapshot
from eventstore.state import LayerRecord


#: the named lease that holds every snapshot layer while containerd has it
LEASE = "containerd"
#: containerd's limit for one label, key and value together
MAX_LABEL_BYTES = 4096
#: ours for all of a snapshot's labels: they are written into its events and its record
#: (containerd passes a snapshotter only its containerd.io/snapshot/ labels: a few)
MAX_LABELS_BYTES = 64 * 1024


class SnapshotNotFound(errors.LayerNotFound):
    """No snapshot has that key (or it is being created or deleted)."""


class SnapshotExists(errors.RuleViolation):
    """The key (or the commit's name) is taken."""


class NotActive(errors.RuleViolation):
    """The call needs an active snapshot (Commit) or an active one or a view (Mounts)."""


class ShuttingDown(errors.StorageError):
    """The server is stopping: the call came after the last one it finishes."""


class Info(NamedTuple):
    """containerd's ``snapshots.Info``; times in ns since the epoch."""

    name: str
    parent: str
    kind: str
    labels: dict[str, str]
    created: int
    updated: int


class Usage(NamedTuple):
    size: int
    inodes: int


def clean_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels as stored: empty values dropped (containerd's rule), sorted, each checked."""
    total = 0
    for key, value in labels.items():
        if not key:
            raise errors.InvalidArgument("a label has an empty key")
        size = len(key.encode()) + len(value.encode())
        if size > MAX_LABEL_BYTES:
            raise errors.InvalidArgument(f"label {key[:64]!r}: key and value are over {MAX_LABEL_BYTES} bytes")
        total += size
    if total > MAX_LABELS_BYTES:
        raise errors.InvalidArgument(f"labels: {total} bytes in all, at most {MAX_LABELS_BYTES}")
    return {key: labels[key] for key in sorted(labels) if labels[key]}


def _serialized(method: Callable) -> Callable:
    @functools.wraps(method)
    def call(self: "Snapshotter", *args, **kwargs):
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            return method(self, *args, **kwargs)
    return call


class Snapshotter:
    """containerd's snapshotter interface on an open LayerStore."""

    def __init__(self, store):
        check_driver(store.driver)
        self.store = store
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Wait for the call in progress, then refuse every later one."""
        with self._lock:
            self._closed = True

    # --- finding snapshots ---------------------------------------------------------------

    def _find(self, key: str, what: str = "snapshot", deleting: bool = False) -> LayerRecord:
        """The layer of snapshot ``key``; one being created or deleted is none (but a
        Remove finds one whose delete failed half-way, to finish it)."""
        keys.check_key(key)
        try:
            rec = self.store.lookup(keys.name_for(key))
        except errors.LayerNotFound:
            rec = None
        if rec is None or rec.snapshot is None or rec.snapshot.key != key or \
                (rec.incomplete and not (deleting and rec.deleting)):
            raise SnapshotNotFound(f"{what} {key!r}: not found")
        return rec

    def _parent_key(self, rec: LayerRecord) -> str:
        parent = self.store.index.layer(rec.parent) if rec.parent else None
        return parent.snapshot.key if parent is not None and parent.snapshot is not None else ""

    def _info(self, rec: LayerRecord, parent_key: str | None = None) -> Info:
        snap = rec.snapshot
        assert snap is not None
        parent = self._parent_key(rec) if parent_key is None else parent_key
        return Info(snap.key, parent, snap.kind, dict(snap.labels), snap.created, snap.updated)

    def _mounts(self, rec: LayerRecord) -> list[Mount]:
        return snapshot_mounts(self.store.driver, rec.id, rec.parent, readonly=rec.snapshot.kind == "view")

    # --- the calls ---------------------------------------------------------------------------

    @_serialized
    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] = {}) -> list[Mount]:
        """A new active snapshot on ``parent`` (a committed one, or none); its mounts."""
        return self._create("active", key, parent, labels)

    @_serialized
    def view(self, key: str, parent: str = "", labels: Mapping[str, str] = {}) -> list[Mount]:
        """A new read-only view of ``parent``; its mounts."""
        return self._create("view", key, parent, labels)

    def _create(self, kind: str, key: str, parent: str, labels: Mapping[str, str]) -> list[Mount]:
        keys.check_key(key)
        labels = clean_labels(labels)
        parent_rec = self._find(parent, "parent") if parent else None
        if parent_rec is not None and parent_rec.snapshot.kind != "committed":
            raise errors.InvalidArgument(f"parent {parent!r} is not a committed snapshot")
        try:
            layer_id = self.store.create(
                parent=parent_rec.id if parent_rec else None, names=[keys.name_for(key)],
                writable=kind == "active", snapshot=Snapshot(key=key, kind=kind, labels=labels),
                hold=Holder(lease=LEASE))
        except errors.NameInUse:
            raise SnapshotExists(f"snapshot {key!r}: already exists") from None
        return self._mounts(self.store.index.layer(layer_id))

    @_serialized
    def mounts(self, key: str) -> list[Mount]:
        rec = self._find(key)
        if rec.snapshot.kind == "committed":
            raise NotActive(f"snapshot {key!r}: is committed, not active or a view")
        return self._mounts(rec)

    @_serialized
    def commit(self, name: str, key: str, labels: Mapping[str, str] = {}, parent: str = "") -> None:
        """Make the active snapshot ``key`` the committed snapshot ``name``: the same
        layer, synced, frozen and renamed; its labels replaced by ``labels``."""
        keys.check_key(name, "name")
        labels = clean_labels(labels)
        rec = self._find(key)
        if rec.snapshot.kind != "active":
            raise NotActive(f"snapshot {key!r}: is not active")
        if parent and parent != self._parent_key(rec):
            raise errors.InvalidArgument(f"commit of {key!r} onto another parent {parent!r}: rebase is not supported")
        if self.store.exists(keys.name_for(name)):
            raise SnapshotExists(f"snapshot {name!r}: already exists")
        usage = self.store.fs_info(rec.id)
        faults.point("containerd.commit.before-event")
        try:
            self.store.commit_snapshot(rec.id, key=name, names=[keys.name_for(name)], labels=labels,
                                       size=usage.used_bytes, inodes=usage.inodes_used)
        except errors.NameInUse:
            raise SnapshotExists(f"snapshot {name!r}: already exists") from None
        faults.point("containerd.commit.after-event")

    @_serialized
    def remove(self, key: str) -> None:
        """Delete the snapshot and its data; refused while it has children."""
        layer_id = self._find(key, deleting=True).id
        try:
            self.store.delete(layer_id, lease=LEASE)
        except errors.LayerInUse as exc:
            raise errors.LayerInUse(f"snapshot {key!r}: cannot be removed: {exc}") from None

    @_serialized
    def stat(self, key: str) -> Info:
        return self._info(self._find(key))

    @_serialized
    def update(self, key: str, labels: Mapping[str, str], paths: list[str]) -> Info:
        """Change the labels as the field paths say (``labels``: all; ``labels.K``: one,
        removed when ``labels`` has no value for it; no paths: all)."""
        rec = self._find(key)
        new = dict(rec.snapshot.labels)
        for path in paths or ["labels"]:
            if path == "labels":
                new = dict(labels)
            elif path.startswith("labels."):
                new[path[len("labels."):]] = labels.get(path[len("labels."):], "")
            else:
                raise errors.InvalidArgument(f"cannot update {path!r} of snapshot {key!r}: only labels change")
        self.store.set_snapshot_labels(rec.id, clean_labels(new))
        return self._info(self._find(key))

    @_serialized
    def list(self, filter_texts: list[str] = ()) -> list[Info]:
        """Every snapshot that any of the filters matches (all without filters)."""
        match = filters.matcher(list(filter_texts))
        recs = [r for r in self.store.layers() if r.snapshot is not None and not r.incomplete]
        key_of = {r.id: r.snapshot.key for r in recs}
        infos = [self._info(r, key_of.get(r.parent, "") if r.parent else "") for r in recs]
        return [info for info in infos if match(_fields(info))]

    @_serialized
    def usage(self, key: str) -> Usage:
        """Bytes and inodes of the snapshot's own data (measured at commit for a committed one)."""
        rec = self._find(key)
        if rec.snapshot.kind == "committed" and rec.snapshot.size >= 0:
            return Usage(rec.snapshot.size, rec.snapshot.inodes)
        info = self.store.fs_info(rec.id)
        return Usage(info.used_bytes, info.inodes_used)

    @_serialized
    def cleanup(self) -> list[str]:
        """Remove what no snapshot accounts for; what it did. Calls run one at a time, so
        a layer this server still owns as incomplete is a create or a delete that failed
        half-way (recovery leaves it: its owner lives): the delete is finished. Then
        recovery with its orphan sweep, for what dead processes left."""
        from eventstore.recovery import recover_store

        actions = []
        for rec in self.store.index.needing_attention():
            if rec.incomplete and rec.owner == self.store.process and not rec.quarantined:
                what = "half-deleted" if rec.deleting else "half-made"
                try:
                    self.store.delete(rec.id)
                    actions.append(f"removed {what} layer {rec.id}")
                except errors.LayerStoreError as exc:  # the rest goes on; the next Cleanup tries again
                    actions.append(f"could not remove {what} layer {rec.id}: {exc}")
        return actions + recover_store(self.store, sweep=True)


def _fields(info: Info) -> filters.Fields:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if path == ("kind",):
            return info.kind, True
        if path == ("name",):
            return info.name, True
        if path == ("parent",):
            return info.parent, True
        if path[0] == "labels" and len(path) > 1:
            label = ".".join(path[1:])
            return info.labels.get(label, ""), label in info.labels
        return "", False
    return field
