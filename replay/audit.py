"""Time travel and audit: who did what to a layer and when; the store as it was at an
LSN or a moment, deleted layers included."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone

import msgspec

from eventstore import checkpoint
from eventstore.errors import AmbiguousLayer, InvalidArgument, LayerNotFound
from eventstore.state import LayerRecord, State


class HistoryEntry(msgspec.Struct):
    lsn: int
    time: int
    type: str
    layer: str | None
    actor: dict
    details: dict


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_SECONDS = re.compile(r"^(\d+)(?:\.(\d+))?$")
_ISO_FRACTION = re.compile(r"^(.*\d{2}:\d{2}:\d{2})[.,](\d+)(.*)$")


def _nanoseconds(fraction: str) -> int:
    return int(fraction[:9].ljust(9, "0")) if fraction else 0


def parse_time(text: str) -> int:
    """An ISO 8601 time (UTC if no zone), seconds since the epoch, or a duration before
    now (``10m``, ``1h30m``, ``2d``), as nanoseconds.

    Exact: event times are nanoseconds, and a time copied from ``history`` must fall on
    the same side of every event as the event it was copied from (a float would not).
    """
    from eventstore.timefmt import ago

    text = text.strip()
    relative = ago(text)
    if relative is not None:
        return relative
    epoch = _EPOCH_SECONDS.match(text)
    if epoch:
        return int(epoch[1]) * 1_000_000_000 + _nanoseconds(epoch[2])
    fraction = _ISO_FRACTION.match(text)
    whole = fraction[1] + fraction[3] if fraction else text
    try:
        moment = datetime.fromisoformat(whole.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"invalid time {text!r}: want ISO 8601 (2026-11-27T10:00:00Z), epoch seconds "
                              f"or a duration ago (10m, 1h30m, 2d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds * 1_000_000_000 + _nanoseconds(fraction[2] if fraction else "")


def history(store, layer: str | None = None, since: int | None = None, until: int | None = None,
            types: list[str] | None = None) -> Iterator[HistoryEntry]:
    """Events from the history read model, oldest first, filtered."""
    import json

    clauses, params = [], []
    if layer is not None:
        clauses.append("layer = ?")
        params.append(layer)
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    if until is not None:
        clauses.append("time <= ?")
        params.append(until)
    if types:
        clauses.append(f"type IN ({', '.join('?' * len(types))})")
        params.extend(types)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = store.index.conn.execute(f"SELECT * FROM history {where} ORDER BY lsn", params)
    for lsn, time, layer_id, type_, pid, uid, program, details in rows:
        yield HistoryEntry(lsn, time, type_, layer_id, {"pid": pid, "uid": uid, "program": program},
                           json.loads(details))


def resolve_layer(store, ref: str) -> str:
    """The layer id ``ref`` names: a layer the store has (id, name or id prefix), else one
    the log once had (id, unique id prefix, or a name it had — the last layer to have
    it), so that a deleted layer keeps its history."""
    try:
        return store.lookup(ref).id
    except LayerNotFound:
        named = store.index.conn.execute(
            "SELECT layer FROM history WHERE type IN ('layer-created', 'names-changed') AND EXISTS "
            "(SELECT 1 FROM json_each(details, '$.names') WHERE value = ?) ORDER BY lsn DESC LIMIT 1",
            (ref,)).fetchone()
        if named is not None:
            return named[0]
        rows = store.index.conn.execute(
            "SELECT DISTINCT layer FROM history WHERE layer >= ? AND layer < ? ORDER BY layer LIMIT 2",
            (ref, ref + "\U0010ffff")).fetchall()
        if len(rows) == 1 and (rows[0][0] == ref or len(ref) < 64):
            return rows[0][0]
        if len(rows) > 1:
            raise AmbiguousLayer(f"layer prefix {ref!r} is ambiguous in the history") from None
        raise


def lsn_at_time(store, when: int) -> int:
    """The LSN of the last event at or before ``when`` (0 if none)."""
    row = store.index.conn.execute("SELECT max(lsn) FROM history WHERE time <= ?", (when,)).fetchone()
    return row[0] or 0


def state_at(store, lsn: int) -> State:
    """The fold's state right after ``lsn``: the newest checkpoint at or before it, then
    the events up to it."""
    first = store.log.first_position.lsn
    if lsn < first - 1 or lsn > store.log.last_lsn:
        horizon = f" (the history horizon: retention dropped LSNs before {first})" if first > 1 else ""
        raise InvalidArgument(f"LSN {lsn} is outside the log ({first}..{store.log.last_lsn}){horizon}")
    return checkpoint.load_state(store.root, store.log, at_most_lsn=lsn)


def deleted_layers(store, lsn: int, state: State) -> list[LayerRecord]:
    """Layers that existed at some point up to ``lsn`` but not in ``state``: their last
    known record is rebuilt from their own events."""
    rows = store.index.conn.execute(
        "SELECT DISTINCT layer FROM history WHERE type = 'layer-deleted' AND lsn <= ?", (lsn,))
    gone = [r[0] for r in rows if r[0] not in state.layers]
    if not gone:
        return []
    from eventstore.state import apply

    shadow = State()
    wanted = set(gone)
    records: dict[str, LayerRecord] = {}
    for event_lsn, event in store.log.events():
        if event_lsn > lsn:
            break
        layer_id = getattr(event, "layer", None)
        if layer_id not in wanted:
            continue
        if type(event).__name__ == "LayerDeleted":
            records[layer_id] = shadow.layers.get(layer_id, records.get(layer_id))
            shadow.layers.pop(layer_id, None)
            continue
        apply(shadow, event_lsn, event)
    return [r for r in records.values() if r is not None]
