"""Verification: re-derive everything from the log and compare with what the store has.

- the read models (layers, names, history) against a fold of the whole log;
- every complete layer's driver data (and tar-split) exists;
- with ``content``: every layer made from a tar regenerates it exactly (diff digest),
  and a damaged layer is named with the first path whose bytes differ.
"""

from __future__ import annotations

import hashlib

import msgspec

from eventstore.state import fold


def check(store, content: bool = False) -> list[str]:
    """Every problem found, one line each (empty: all is well)."""
    problems: list[str] = []
    state = fold(store.log.events())
    indexed = {rec.id: rec for rec in store.index.layers()}
    for layer_id in sorted(set(indexed) | set(state.layers)):
        want, have = state.layers.get(layer_id), indexed.get(layer_id)
        if want is None:
            problems.append(f"layer {layer_id}: in the read models but not in the log")
        elif have is None:
            problems.append(f"layer {layer_id}: in the log but missing from the read models")
        elif msgspec.to_builtins(want) != msgspec.to_builtins(have):
            fields = [f for f in want.__struct_fields__ if getattr(want, f) != getattr(have, f)]
            problems.append(f"layer {layer_id}: read model differs from the log in {', '.join(fields)}")
    names = dict(store.index.conn.execute("SELECT name, layer FROM names"))
    if names != state.names:
        problems.append(f"names: read model has {len(names)}, the log says {len(state.names)} "
                        f"(differing: {sorted(set(names.items()) ^ set(state.names.items()))[:3]})")
    (history_rows,) = store.index.conn.execute("SELECT count(*) FROM history").fetchone()
    if history_rows != store.log.last_lsn:
        problems.append(f"history: {history_rows} rows for {store.log.last_lsn} events")
    for rec in state.layers.values():
        if rec.incomplete:
            continue
        if not store.driver.exists(rec.id):
            problems.append(f"layer {rec.id}: driver data missing")
            continue
        if rec.has_tarsplit and not store.tarsplit_path(rec.id).exists():
            problems.append(f"layer {rec.id}: tar-split missing")
            continue
        if content and rec.has_tarsplit:
            problem = _check_content(store, rec)
            if problem:
                problems.append(problem)
    return problems


def _check_content(store, rec) -> str | None:
    from eventstore.archive import export_layer

    digest = hashlib.sha256()
    try:
        for chunk in export_layer(store.driver.diff_path(rec.id), store.tarsplit_path(rec.id)):
            digest.update(chunk)
    except Exception as exc:
        return f"layer {rec.id}: content cannot be regenerated: {exc}"
    got = "sha256:" + digest.hexdigest()
    if got == rec.diff_digest:
        return None
    where = _first_bad_path(store, rec)
    return f"layer {rec.id}: content differs from its diff digest ({got} != {rec.diff_digest})" + (
        f"; first differing path: {where}" if where else "")


def _first_bad_path(store, rec) -> str | None:
    """Ask the archive module for a per-entry check, when it offers one."""
    try:
        from eventstore.archive import first_damaged_path
    except ImportError:
        return None
    return first_damaged_path(store.driver.diff_path(rec.id), store.tarsplit_path(rec.id))
