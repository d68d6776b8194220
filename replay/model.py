"""The reference model of the layer store: DESIGN §1 as plain Python, no I/O.

It is the oracle of the crash harness (``replay.crash``) and of the hypothesis stateful
test (``tests/stateful``): both drive the real store and this model side by side and
compare what a caller can see. It is written from the contract, not from
``eventstore.state``, on purpose: two independent descriptions of one behaviour catch
each other's mistakes. Only the error classes (``eventstore.errors``) are shared,
because they *are* the contract's vocabulary.

What the model knows of a layer is what a caller sees once an operation returned: a
layer is complete or absent (half-made layers belong to crashes, which
``outcomes`` and ``after_crash`` describe). Content is described by its digests
(``Content``); the model never reads a byte.

Holders are plain strings: ``"pid:<anything>"`` for a process (released when that
process dies), ``"lease:<name>"`` for a named lease (kept until released).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from eventstore.errors import (AmbiguousLayer, DigestMismatch, InvalidArgument, LayerExists, LayerInUse,
                               LayerNotFound, NameInUse, NotHeld, NotMounted, RuleViolation)

_ID = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = frozenset("0123456789abcdef")
MAX_NAME = 255
MAX_DATA_KEY = 255
MAX_DATA_ITEM = 64 << 20


@dataclass(frozen=True)
class Content:
    """A tar stream as the model sees it: its digests and sizes."""

    compressed_digest: str
    diff_digest: str
    compressed_size: int = -1
    diff_size: int = -1


@dataclass
class Layer:
    id: str
    parent: str | None = None
    names: list[str] = field(default_factory=list)
    writable: bool = False
    content: Content | None = None
    holds: list[str] = field(default_factory=list)  # holder strings, oldest first
    mount_count: int = 0
    data: dict[str, bytes] = field(default_factory=dict)  # layer data items
    applied: bool = False  # a diff was applied: it has content of its own

    @property
    def hold_refs(self) -> int:
        return len(self.holds)


@dataclass(frozen=True)
class Op:
    """One operation, as the harness's workloads and the stateful test describe it.

    ``kind`` is one of create, hold, release, names, delete, mount, umount, checkpoint,
    reopen; ``args`` are the keyword arguments of the Model method of that name.
    """

    kind: str
    args: tuple[tuple[str, object], ...] = ()

    @classmethod
    def make(cls, kind: str, **args: object) -> "Op":
        return cls(kind, tuple(sorted(args.items())))

    @property
    def kwargs(self) -> dict[str, object]:
        return dict(self.args)


def process_holder(token: str) -> str:
    return f"pid:{token}"


def lease_holder(name: str) -> str:
    return f"lease:{name}"


def is_lease(holder: str) -> bool:
    return holder.startswith("lease:")


# --- argument rules (DESIGN §1: ids, names, digests) --------------------------------------

def _valid_id(layer_id: object) -> str:
    if not isinstance(layer_id, str) or not _ID.fullmatch(layer_id):
        raise InvalidArgument(f"invalid layer id {layer_id!r}")
    return layer_id


def _valid_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise InvalidArgument(f"invalid {what} {name!r}")
    if "/" in name or ".." in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidArgument(f"invalid {what} {name!r}")
    return name


def _valid_key(key: object) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_DATA_KEY or not key.isprintable():
        raise InvalidArgument(f"invalid layer data key {key!r}")
    return key


def _valid_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f"invalid digest {digest!r}")
    return digest


class Model:
    """The store's state and rules. Every operation either raises (changing nothing)
    or does all it says."""

    def __init__(self) -> None:
        self.layers: dict[str, Layer] = {}  # in creation order

    def copy(self) -> "Model":
        return copy.deepcopy(self)

    # --- lookups ---------------------------------------------------------------------------

    def _owner_of(self, name: str) -> str | None:
        for layer in self.layers.values():
            if name in layer.names:
                return layer.id
        return None

    def lookup(self, ref: str) -> Layer:
        """By id, else by name, else by a unique id prefix (hex, shorter than an id)."""
        if ref in self.layers:
            return self.layers[ref]
        owner = self._owner_of(ref)
        if owner is not None:
            return self.layers[owner]
        if ref and len(ref) < 64 and _HEX.issuperset(ref):
            matches = [i for i in self.layers if i.startswith(ref)]
            if len(matches) > 1:
                raise AmbiguousLayer(f"layer prefix {ref!r} is ambiguous")
            if matches:
                return self.layers[matches[0]]
        raise LayerNotFound(f"layer {ref}: not found")

    def exists(self, ref: str) -> bool:
        try:
            self.lookup(ref)
        except (LayerNotFound, AmbiguousLayer):
            return False
        return True

    def list(self) -> list[Layer]:
        return list(self.layers.values())

    def by_digest(self, digest: str, compressed: bool = False) -> list[str]:
        _valid_digest(digest)
        return [layer.id for layer in self.layers.values() if layer.content is not None and digest == (
            layer.content.compressed_digest if compressed else layer.content.diff_digest)]

    def hold_refs(self, ref: str) -> int:
        return self.lookup(ref).hold_refs

    def _has_children(self, layer_id: str) -> bool:
        return any(layer.parent == layer_id for layer in self.layers.values())

    def _check_names_free(self, layer_id: str, names: Iterable[str]) -> None:
        for name in names:
            owner = self._owner_of(name)
            if owner is not None and owner != layer_id:
                raise NameInUse(f"name {name!r} belongs to layer {owner}")

    # --- operations ------------------------------------------------------------------------

    def create(self, layer_id: str, *, parent: str | None = None, names: Iterable[str] = (),
               writable: bool = False, content: Content | None = None,
               compressed_digest: str | None = None, diff_digest: str | None = None,
               actor: str = "pid:me") -> str:
        """Create ``layer_id`` (the store picks random ids; give the one it picked).

        An existing id with the same parent gets a hold by ``actor`` and is returned;
        with another parent it is LayerExists (the seed's rule).
        """
        _valid_id(layer_id)
        names = [_valid_name(n) for n in names]
        for given in (compressed_digest, diff_digest):
            if given:
                _valid_digest(given)
        parent_id = self.lookup(parent).id if parent else None
        existing = self.layers.get(layer_id)
        if existing is not None:
            if existing.parent != parent_id:
                raise LayerExists(f"layer {layer_id}: exists with another parent")
            existing.holds.append(actor)
            return layer_id
        self._check_names_free(layer_id, names)
        if content is not None:
            if diff_digest and diff_digest != content.diff_digest:
                raise DigestMismatch(f"layer {layer_id}: diff digest mismatch")
            if compressed_digest and compressed_digest != content.compressed_digest:
                raise DigestMismatch(f"layer {layer_id}: compressed digest mismatch")
        self.layers[layer_id] = Layer(layer_id, parent_id, list(names), writable, content)
        return layer_id

    def set_names(self, ref: str, names: Iterable[str]) -> None:
        names = [_valid_name(n) for n in names]
        layer = self.lookup(ref)
        self._check_names_free(layer.id, names)
        layer.names = list(names)

    def add_names(self, ref: str, names: Iterable[str]) -> list[str]:
        """The layer's names with ``names`` added (in order, each once)."""
        names = [_valid_name(n) for n in names]
        layer = self.lookup(ref)
        wanted = list(dict.fromkeys([*layer.names, *names]))
        self._check_names_free(layer.id, wanted)
        layer.names = wanted
        return list(wanted)

    def remove_names(self, ref: str, names: Iterable[str]) -> list[str]:
        names = [_valid_name(n) for n in names]
        layer = self.lookup(ref)
        layer.names = [n for n in layer.names if n not in names]
        return list(layer.names)

    def apply_diff(self, ref: str, content: Content) -> Content | None:
        """Apply a tar to a writable layer nothing is built on or mounted from; the
        layer is that tar when it had no content of its own, else it has no digest."""
        layer = self.lookup(ref)
        if not layer.writable:
            raise RuleViolation(f"layer {layer.id}: read-only")
        if layer.mount_count or self._has_children(layer.id):
            raise LayerInUse(f"layer {layer.id}: mounted or a parent")
        layer.content = content if not layer.applied and layer.content is None else None
        layer.applied = True
        return layer.content

    def set_layer_data(self, ref: str, key: str, data: bytes) -> None:
        _valid_key(key)
        if len(data) > MAX_DATA_ITEM:
            raise InvalidArgument(f"layer data item {key!r} too big")
        self.lookup(ref).data[key] = bytes(data)

    def layer_data(self, ref: str, key: str) -> bytes:
        layer = self.lookup(ref)
        if key not in layer.data:
            raise LayerNotFound(f"layer {layer.id}: no data item {key!r}")
        return layer.data[key]

    def remove_layer_data(self, ref: str, key: str) -> None:
        layer = self.lookup(ref)
        if key not in layer.data:
            raise LayerNotFound(f"layer {layer.id}: no data item {key!r}")
        del layer.data[key]

    def hold(self, ref: str, *, lease: str | None = None, actor: str = "pid:me") -> int:
        holder = lease_holder(_valid_name(lease, "lease")) if lease is not None else actor
        layer = self.lookup(ref)
        layer.holds.append(holder)
        return layer.hold_refs

    def release(self, ref: str, *, lease: str | None = None, actor: str = "pid:me") -> int:
        """Without a lease: ``actor``'s own hold, else the newest process hold."""
        wanted = lease_holder(_valid_name(lease, "lease")) if lease is not None else None
        layer = self.lookup(ref)
        if wanted is None:
            if actor in layer.holds:
                wanted = actor
            else:
                wanted = next((h for h in reversed(layer.holds) if not is_lease(h)), None)
        if wanted is None or wanted not in layer.holds:
            raise NotHeld(f"layer {layer.id}: not held that way (hold refs {layer.hold_refs})")
        # the newest of equal holds goes first: which one is unobservable
        del layer.holds[len(layer.holds) - 1 - layer.holds[::-1].index(wanted)]
        return layer.hold_refs

    def delete(self, ref: str, *, force: bool = False) -> None:
        """Refused while held, mounted (unless ``force``: unmounted first) or a parent."""
        layer = self.lookup(ref)
        if layer.holds:
            raise LayerInUse(f"layer {layer.id}: held")
        if self._has_children(layer.id):
            raise LayerInUse(f"layer {layer.id}: is a parent")
        if layer.mount_count and not force:
            raise LayerInUse(f"layer {layer.id}: mounted")
        del self.layers[layer.id]

    def mount(self, ref: str) -> int:
        layer = self.lookup(ref)
        layer.mount_count += 1
        return layer.mount_count

    def umount(self, ref: str, *, force: bool = False) -> int:
        layer = self.lookup(ref)
        if layer.mount_count == 0:
            raise NotMounted(f"layer {layer.id}: not mounted")
        layer.mount_count = 0 if force else layer.mount_count - 1
        return layer.mount_count

    def checkpoint(self) -> None:
        """Changes nothing a caller can see."""

    def reopen(self) -> None:
        """Close and open again from a live process: changes nothing a caller can see."""

    # --- operations as values ------------------------------------------------------------

    def run(self, op: Op, actor: str = "pid:me") -> object:
        """Do ``op``; its result (or the error it raises)."""
        kwargs = op.kwargs
        method = {"names": self.set_names}.get(op.kind) or getattr(self, op.kind)
        if op.kind in ("create", "hold", "release"):
            kwargs["actor"] = actor
        return method(**kwargs)

    def outcomes(self, op: Op, actor: str = "pid:me") -> list[tuple[str, "Model"]]:
        """Every state a crash during ``op`` may leave (before ``after_crash``):
        ``undone``, ``done`` when the op succeeds, and ``partial`` where the contract
        lets one op be two steps (a forced delete of a mounted layer is an unmount,
        durable on its own, then a delete)."""
        found = [("undone", self.copy())]
        done = self.copy()
        try:
            done.run(op, actor)
        except Exception:
            return found
        if op.kind == "delete" and op.kwargs.get("force"):
            partial = self.copy()
            layer = partial.lookup(op.kwargs["ref"])  # type: ignore[arg-type]
            if layer.mount_count:
                layer.mount_count = 0
                found.append(("partial", partial))
        found.append(("done", done))
        return found

    def after_crash(self, *, alive: Iterable[str] = (), reboot: bool = False) -> "Model":
        """What recovery leaves: holds of processes not in ``alive`` are released; after
        a reboot (power loss) no mount survives and no process is alive."""
        keep = set() if reboot else set(alive)
        model = self.copy()
        for layer in model.layers.values():
            layer.holds = [h for h in layer.holds if is_lease(h) or h in keep]
            if reboot:
                layer.mount_count = 0
        return model

    # --- what a caller sees ------------------------------------------------------------------

    def observe(self) -> list[tuple]:
        """Every layer as a comparable tuple, in creation order (see ``observe_store``)."""
        return [_observation(layer.id, layer.parent, layer.names, layer.writable,
                             layer.content.diff_digest if layer.content else "",
                             layer.content.compressed_digest if layer.content else "",
                             sorted(h[6:] for h in layer.holds if is_lease(h)),
                             sum(1 for h in layer.holds if not is_lease(h)), layer.mount_count,
                             {key: _digest(value) for key, value in layer.data.items()})
                for layer in self.layers.values()]


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _observation(layer_id, parent, names, writable, diff_digest, compressed_digest, leases,
                 process_holds, mount_count, data=None) -> tuple:
    return (layer_id, parent, tuple(names), bool(writable), diff_digest or "", compressed_digest or "",
            tuple(leases), process_holds, mount_count, tuple(sorted((data or {}).items())))


def observe_store(store) -> list[tuple]:
    """The real store (an open ``LayerStore``) as ``Model.observe`` shows the model.

    Incomplete layers are included as they are, so that a half-made layer left
    visible makes the comparison fail.
    """
    found = []
    for rec in store.layers():
        leases = sorted(h.lease for h in rec.holds if h.lease)
        found.append(_observation(rec.id, rec.parent, rec.names, rec.writable, rec.diff_digest,
                                  rec.compressed_digest, leases, sum(1 for h in rec.holds if not h.lease),
                                  rec.mount_count, {key: item.digest for key, item in rec.data.items()}))
        if rec.incomplete or rec.quarantined:
            found[-1] += ("incomplete" if rec.incomplete else "quarantined",)
    return found


def describe_difference(want: list[tuple], have: list[tuple]) -> str:
    """One line naming the first layer where two observations differ."""
    fields = ("id", "parent", "names", "writable", "diff-digest", "compressed-digest", "leases",
              "process-holds", "mount-count", "layer-data", "state")
    wanted = {o[0]: o for o in want}
    had = {o[0]: o for o in have}
    for layer_id in list(wanted) + [i for i in had if i not in wanted]:
        w, h = wanted.get(layer_id), had.get(layer_id)
        if w is None:
            return f"layer {layer_id[:12]}: present, expected absent"
        if h is None:
            return f"layer {layer_id[:12]}: missing"
        if w != h:
            diffs = [f"{fields[i]} {h[i] if i < len(h) else None!r} (expected {w[i] if i < len(w) else None!r})"
                     for i in range(max(len(w), len(h)))
                     if (w[i] if i < len(w) else None) != (h[i] if i < len(h) else None)]
            return f"layer {layer_id[:12]}: " + ", ".join(diffs)
    if [o[0] for o in want] != [o[0] for o in have]:
        return "layers listed in another order"
    return "no difference"
