"""Verification: re-derive everything from the log and compare with what the store has.

- the read models (layers with their query columns, names, every history row) against
  a fold of the whole log;
- every complete layer's driver data (and tar-split) exists, and the driver's metadata
  lets it mount (overlay: links, lower files, work and merged dirs);
- no kernel mount of a layer that the log counts as unmounted;
- with ``content``: every layer made from a tar regenerates it exactly (diff digest),
  and a damaged layer is named with the first path whose bytes differ; no regular file
  the import did not store has been added to it.

``notes`` says what an operator should know that is not damage: quarantined layers,
LSNs a repair marked lost, what lost+found holds.
"""

from __future__ import annotations

import hashlib

import msgspec

from eventstore.index import history_row
from eventstore.state import State, apply


def check(store, content: bool = False) -> list[str]:
    """Every problem found, one line each (empty: all is well)."""
    problems: list[str] = []
    state = _fold_comparing_history(store, problems)
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
    problems.extend(_check_query_columns(store, state))
    names = dict(store.index.conn.execute("SELECT name, layer FROM names"))
    if names != state.names:
        problems.append(f"names: read model has {len(names)}, the log says {len(state.names)} "
                        f"(differing: {sorted(set(names.items()) ^ set(state.names.items()))[:3]})")
    for rec in state.layers.values():
        if rec.incomplete or rec.quarantined:
            continue
        if not store.driver.exists(rec.id):
            problems.append(f"layer {rec.id}: driver data missing")
            continue
        problems.extend(store.driver.check_layer(rec.id, _parents(state, rec)))
        if rec.has_tarsplit and not store.tarsplit_path(rec.id).exists():
            problems.append(f"layer {rec.id}: tar-split missing")
            continue
        if content and rec.has_tarsplit:
            problems.extend(filter(None, [_check_content(store, rec), _check_added_files(store, state, rec)]))
    for layer_id in sorted(store.driver.mounted()):
        rec = state.layers.get(layer_id)
        if rec is None or not rec.mount_count:
            problems.append(f"layer {layer_id}: mounted in the kernel, but the log counts no mount "
                            f"(run 'layerstore recover')")
    return problems


def notes(store) -> list[str]:
    """What is not damage but an operator should know, one line each."""
    from eventstore.lostfound import entries

    found = [f"layer {rec.id}: quarantined: {rec.quarantined}" for rec in store.index.layers() if rec.quarantined]
    lost = store.index.conn.execute("SELECT count(*), min(lsn) FROM history WHERE type = 'records-lost'").fetchone()
    if lost[0]:
        found.append(f"log: {lost[0]} records-lost marker(s) from a repair, the first at LSN {lost[1]} "
                     f"('layerstore history --type records-lost')")
    kept = entries(store.root)
    if kept:
        found.append(f"lost+found holds {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} "
                     f"('layerstore lost+found')")
    return found


def _parents(state: State, rec) -> list[str]:
    chain, parent = [], rec.parent
    while parent:
        chain.append(parent)
        parent_rec = state.layers.get(parent)
        parent = parent_rec.parent if parent_rec else None
    return chain


def _check_added_files(store, state: State, rec) -> str | None:
    """A regular file in the layer's own data that no import in its chain stored (and
    no hardlink of one): added behind the store's back."""
    import os

    from eventstore.archive import stored_files

    top = store.driver.diff_path(rec.id)
    # a copying driver's layer holds its parents' files too; an overlay layer only its own
    chain = [rec.id] if store.driver.whiteout_format == "overlay" else [rec.id, *_parents(state, rec)]
    known: set[tuple[int, int]] = set()
    for layer_id in chain:
        layer = state.layers.get(layer_id)
        if layer is None or not layer.has_tarsplit:
            return None  # a layer of the chain written otherwise: nothing to compare with
        try:
            paths = stored_files(store.tarsplit_path(layer_id))
        except Exception:
            return None  # reported by the content check
        for path in paths:
            try:
                st = os.lstat(os.path.join(os.fsencode(top), path))
            except OSError:
                continue
            known.add((st.st_dev, st.st_ino))
    device = os.lstat(top).st_dev
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == device]
        for name in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_mode & 0o170000) == 0o100000 and (st.st_dev, st.st_ino) not in known:
                added = os.path.relpath(os.path.join(dirpath, name), top)
                return f"layer {rec.id}: file {added} was added to the layer's data (no import stored it)"
    return None


def _fold_comparing_history(store, problems: list[str]) -> State:
    """The fold of the whole log; on the way, each history row against its event."""
    state = State()
    rows = iter(store.index.conn.execute("SELECT * FROM history ORDER BY lsn"))
    row = next(rows, None)
    differing, missing, extra = [], [], []
    for lsn, event in store.log.events():
        apply(state, lsn, event)
        state.lsn = lsn
        while row is not None and row[0] < lsn:
            extra.append(row[0])
            row = next(rows, None)
        if row is None or row[0] != lsn:
            missing.append(lsn)
            continue
        if tuple(row) != history_row(lsn, event):
            differing.append(lsn)
        row = next(rows, None)
    extra.extend(r[0] for r in ([row] if row is not None else []) + list(rows))
    for what, lsns in (("differ from the log", differing), ("are missing", missing),
                       ("have no event in the log", extra)):
        if lsns:
            problems.append(f"history: rows for {len(lsns)} LSN(s) {what} (first: {lsns[:5]})")
    return state


def _check_query_columns(store, state: State) -> list[str]:
    """The columns lookups and recovery query (digests, parent, counts) must say what
    the record in the same row says; ``needing_attention`` trusts them, not the record."""
    problems = []
    rows = store.index.conn.execute(
        "SELECT id, parent, created, compressed_digest, diff_digest, incomplete, mount_count, hold_refs, "
        "process_holds, created_lsn FROM layers")
    for row in rows:
        rec = state.layers.get(row[0])
        if rec is None:
            continue  # reported already
        want = (rec.id, rec.parent, rec.created, rec.compressed_digest, rec.diff_digest, int(rec.incomplete),
                rec.mount_count, rec.hold_refs, sum(1 for h in rec.holds if not h.lease), rec.created_lsn)
        if tuple(row) != want:
            columns = ["id", "parent", "created", "compressed_digest", "diff_digest", "incomplete", "mount_count",
                       "hold_refs", "process_holds", "created_lsn"]
            wrong = [c for c, have, expected in zip(columns, row, want) if have != expected]
            problems.append(f"layer {rec.id}: read model columns differ from the log in {', '.join(wrong)}")
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
