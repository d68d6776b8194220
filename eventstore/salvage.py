"""Repairing a store whose log is corrupt (``layerstore log repair [--dry-run]``).

The log-level work — find every damaged range, keep every valid record, mark what is
lost — is ``eventstore.log.repair``. This adds what only the store knows: the evidence
of what existed (the read models and checkpoints have seen LSNs the log may no longer
have; the old read models' history names the layers lost records touched), and what
becomes stale once the log changed (the read models and the checkpoints past the first
loss are set aside, never deleted, and rebuilt from the repaired log).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from eventstore import checkpoint
from eventstore.index import Index
from eventstore.log import EventLog
from eventstore.log.repair import apply, describe, plan
from eventstore.provenance import expect
from eventstore.query import NO_MARKS, Reader, connect


def _evidence(root: Path) -> tuple[int, dict[int, str]]:
    """(the highest LSN derived data has seen, layer ids by LSN from the read models)."""
    try:
        conn = connect(root / "index.db", readonly=True)
        try:
            expectation = expect(root, Reader(conn).marks())
            layers = dict(conn.execute("SELECT lsn, layer FROM history WHERE layer IS NOT NULL")) \
                if expectation.index_is_ours else {}
        finally:
            conn.close()
    except sqlite3.DatabaseError:  # missing or damaged read models are no evidence
        return expect(root, NO_MARKS).seen_lsn, {}
    return expectation.seen_lsn, layers


def repair_store(root: str | os.PathLike, dry_run: bool = False) -> list[str]:
    """Repair the log at ``root`` (or, with ``dry_run``, say how); one line per action."""
    root = Path(root)
    with EventLog.exclusive(root):
        seen_lsn, evidence = _evidence(root)
        the_plan = plan(root, seen_lsn, evidence)
        lines = describe(the_plan)
        if not lines:
            return [f"nothing to repair: {_whole(root)}"]
        if dry_run:
            return [*lines, "dry run: nothing was changed"]
        lines += apply(root, the_plan)
        if the_plan.losses:
            lines += _set_aside_derived(root, min(loss.first_lsn for loss in the_plan.losses))
    lines.append(_whole(root))
    return lines


def _set_aside_derived(root: Path, first_lost: int) -> list[str]:
    """The read models, and the checkpoints that saw the lost records, no longer follow
    the log: set aside (they are evidence), to be rebuilt from it."""
    lines = []
    if (root / "index.db").exists():
        aside = Index.set_aside(root / "index.db", "before-repair")
        lines.append(f"read models set aside to {aside.name} (rebuilt from the log at the next open)")
    for header in checkpoint.headers(root):
        if header.lsn >= first_lost:
            aside = header.path.with_name(header.path.name + ".before-repair")
            os.rename(header.path, aside)
            lines.append(f"checkpoint {header.path.name} set aside to {aside.name} (it saw lost records)")
    return lines


def _whole(root: Path) -> str:
    with EventLog.open(root, writer=False, create=False) as log:
        report = log.verify()
    lost = f", {report.lost} LSN(s) marked lost" if report.lost else ""
    return f"log is whole: {report.segments} segment(s), {report.records} records, last LSN {report.last_lsn}{lost}"
