#!/usr/bin/env python3
"""A simulated year of a busy node, with and without retention (docs/lifecycle.md).

    python tools/bench_lifecycle.py [--events 10000000] [--layers 5000] [--retention 90d] [--dir DIR]

Writes the same event stream twice — 5,000 layers, then container starts (hold by a
lease, mount, unmount, release) whose times spread evenly over 365 days — through the
store's own write path (events are batched, 1,000 to a record, as a busy engine's group
commit would), checkpoints every 10,000 events, so sealing and archiving run as in
production. One store keeps everything; the other has a retention policy. Then, for
each: disk use of the log and of index.db, a read-only open, one layer's history, a
rebuild of the read models (index.db deleted), and a full verify of the log.

Prints a table; docs/benchmarks.md keeps the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore import events as ev  # noqa: E402
from eventstore.opener import open_store  # noqa: E402
from eventstore.store import LayerStore  # noqa: E402

YEAR_NS = 365 * 86400 * 1_000_000_000
BATCH = 1000


def build(root: Path, events: int, layers: int, retention: str | None) -> float:
    """The store at ``root``; the seconds it took."""
    start = time.perf_counter()
    t0 = time.time_ns() - YEAR_NS
    actor = ev.Actor(pid=4242, uid=0, program="containerd")
    lease = ev.Holder(lease="engine")
    with open_store(root, "vfs", history_retention=retention) as store:
        ids = []
        with store.writing() as w:
            for base in range(0, layers, BATCH):
                batch = []
                for n in range(base, min(layers, base + BATCH)):
                    layer = f"{n:064x}"
                    ids.append(layer)
                    batch += [ev.LayerCreated(layer=layer, names=[f"registry.example/app{n}:1"], driver="vfs",
                                              time=t0, actor=actor),
                              ev.LayerCompleted(layer=layer, diff_digest=f"sha256:{n:064x}", time=t0, actor=actor)]
                w.append(*batch)
        written = 2 * layers
        starts = (events - written) // 4
        for first in range(0, starts, BATCH // 4):
            batch = []
            for n in range(first, min(starts, first + BATCH // 4)):
                layer = ids[(n * 7919) % len(ids)]
                when = t0 + (YEAR_NS * n) // max(starts, 1)
                batch += [ev.HoldAdded(layer=layer, holder=lease, time=when, actor=actor),
                          ev.LayerMounted(layer=layer, mount_point="/run/x", boot="b", time=when, actor=actor),
                          ev.LayerUnmounted(layer=layer, time=when, actor=actor),
                          ev.HoldReleased(layer=layer, holder=lease, time=when, actor=actor)]
            with store.writing() as w:
                w.append(*batch)
    return time.perf_counter() - start


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(root: Path, rounds: int) -> dict[str, float]:
    log_bytes, index_bytes = du(root / "log"), (root / "index.db").stat().st_size
    opens, histories = [], []
    layer = f"{17:064x}"
    for _ in range(rounds):
        start = time.perf_counter()
        store = LayerStore.open(root, readonly=True)
        opens.append(time.perf_counter() - start)
        from replay.audit import history

        start = time.perf_counter()
        entries = list(history(store, layer))
        histories.append(time.perf_counter() - start)
        store.close()
    start = time.perf_counter()
    with LayerStore.open(root, readonly=True) as store:
        report = store.log.verify()
    verify = time.perf_counter() - start
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root}/index.db{suffix}").unlink(missing_ok=True)
    start = time.perf_counter()
    LayerStore.open(root).close()
    rebuild = time.perf_counter() - start
    return {"log MiB": log_bytes / 2**20, "index.db MiB": index_bytes / 2**20,
            "open ms": statistics.median(opens) * 1000, "one layer's history ms": statistics.median(histories) * 1000,
            "history rows of it": len(entries), "rebuild s": rebuild, "full verify s": verify,
            "events in the log": report.events, "first LSN kept": store.log.first_position.lsn}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--layers", type=int, default=5000)
    p.add_argument("--retention", default="90d")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", type=Path, default=None, help="where the stores go (default: a temp dir)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-", dir=args.dir))
    try:
        rows = {}
        for label, retention in (("keep everything", None), (f"retention {args.retention}", args.retention)):
            root = work / label.replace(" ", "-")
            built = build(root, args.events, args.layers, retention)
            rows[label] = {"build s": built, **measure(root, args.rounds)}
            shutil.rmtree(root)
        print(f"\n{args.events:,} events over {args.layers:,} layers, a simulated year; "
              f"{os.cpu_count()} CPUs\n")
        labels = list(rows)
        print("| measure | " + " | ".join(labels) + " |")
        print("|---|" + "---:|" * len(labels))
        for key in rows[labels[0]]:
            cells = [rows[label][key] for label in labels]
            print(f"| {key} | " + " | ".join(f"{c:,.1f}" if isinstance(c, float) else f"{c:,}" for c in cells) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
