#!/usr/bin/env python3
"""Benchmark opening a big store: open with current read models, rebuild after losing
index.db (with and without a checkpoint), ``checkpoint.load_state`` with and without a
checkpoint, and the replay rate.

    python tools/bench_open.py [--dir DIR] [--layers 10000] [--events 1000000 100000]
                               [--repeat 5] [--profile]

One store per log length (``--events``), each with ``--layers`` complete vfs layers:
the layers' events (created, completed) come first, then hold-added/hold-released
pairs (named leases, so nothing is left for recovery) up to the event count. Events
are written straight into the log with ``EventLog.append_many`` in big batches and
the driver directories with ``mkdir``; the first ``LayerStore.open`` projects them.
Two log lengths show whether open time depends on the log's length. docs/benchmarks.md
("Open and replay") keeps the figures and the targets.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore import checkpoint  # noqa: E402
from eventstore.events import Holder, HoldAdded, HoldReleased, LayerCompleted, LayerCreated, stamp  # noqa: E402
from eventstore.log import EventLog  # noqa: E402
from eventstore.opener import open_store  # noqa: E402

BATCH = 5_000  # events per log record while building
TARGET_OPEN_MS = 200


# --- building ---------------------------------------------------------------------------------


def layer_id(n: int) -> str:
    return f"{n:064x}"


def build(root: Path, layers: int, events: int) -> float:
    """A store of ``layers`` complete vfs layers and ``events`` events; seconds to build
    (log and directories; the projection is measured separately)."""
    start = time.perf_counter()
    (root / "vfs" / "dir").mkdir(parents=True)
    for n in range(layers):
        os.mkdir(root / "vfs" / "dir" / layer_id(n))
    (root / "driver").write_text("vfs\n")
    with EventLog.open(root) as log:
        batch: list = []

        def add(event) -> None:
            batch.append(stamp(event))
            if len(batch) >= BATCH:
                log.append_many(batch)
                batch.clear()

        digest = "sha256:" + "ab" * 32
        for n in range(layers):
            parent = layer_id(n - 1) if n % 10 else None  # chains of ten
            add(LayerCreated(layer=layer_id(n), parent=parent, names=[f"registry.example/app:{n}"], driver="vfs"))
            add(LayerCompleted(layer=layer_id(n), diff_digest=digest, diff_size=1024))
        lease = Holder(lease="bench")
        for n in range((events - 2 * layers) // 2):
            target = layer_id(n % layers)
            add(HoldAdded(layer=target, holder=lease))
            add(HoldReleased(layer=target, holder=lease))
        if batch:
            log.append_many(batch)
        assert log.last_lsn == 2 * layers + 2 * ((events - 2 * layers) // 2)
    return time.perf_counter() - start


def drop_index(root: Path) -> None:
    """Lose index.db (and its WAL files), as a disaster would."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(root / f"index.db{suffix}")
        except FileNotFoundError:
            pass


def drop_checkpoints(root: Path) -> None:
    shutil.rmtree(checkpoint.checkpoint_dir(root), ignore_errors=True)


# --- measuring ----------------------------------------------------------------------------------


def timed(fn, repeat: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def open_close(root: Path) -> None:
    open_store(root).close()


def rebuild(root: Path) -> None:
    drop_index(root)
    open_close(root)


def open_log(root: Path) -> EventLog:
    return EventLog.open(root, writer=False, create=False)


def load_state(log: EventLog, root: Path) -> int:
    state = checkpoint.load_state(root, log)
    assert state.lsn == log.last_lsn
    return len(state.layers)


def decode_only(log: EventLog) -> int:
    return sum(len(r.events) for r in log.records())


def measure(root: Path, layers: int, events: int, repeat: int) -> dict[str, float]:
    results: dict[str, float] = {}
    results["build log + dirs"] = build(root, layers, events)
    results["first open (projects the log)"] = timed(lambda: open_close(root))
    results["open, read models current"] = timed(lambda: open_close(root), repeat)
    results["open the log alone (reader, checks all)"] = timed(lambda: open_log(root).close(), repeat)
    drop_checkpoints(root)
    with open_log(root) as log:
        results["decode only (log.records)"] = timed(lambda: decode_only(log))
        results["load_state, no checkpoint"] = timed(lambda: load_state(log, root))
    results["open after losing index.db, no checkpoint"] = timed(lambda: rebuild(root))
    with open_store(root) as store:
        results["write a checkpoint"] = timed(store.checkpoint)
    with open_log(root) as log:
        results["load_state, checkpoint at the tail"] = timed(lambda: load_state(log, root), repeat)
    results["open after losing index.db, with checkpoint"] = timed(lambda: rebuild(root))
    results["open, read models current (after rebuild)"] = timed(lambda: open_close(root), repeat)
    return results


def profile(root: Path, what, label: str) -> None:
    print(f"\n--- profile: {label} ---")
    profiler = cProfile.Profile()
    profiler.enable()
    what()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the stores (default: a temp dir)")
    parser.add_argument("--layers", type=int, default=10_000)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile the slow paths of the longest log")
    parser.add_argument("--keep", action="store_true", help="leave the stores on disk")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-open-", dir=args.dir))
    table: dict[int, dict[str, float]] = {}
    try:
        for events in args.events:
            root = base / f"store-{events}"
            table[events] = measure(root, args.layers, events, args.repeat)
        print_table(args, table)
        if args.profile:
            root = base / f"store-{max(args.events)}"
            profile(root, lambda: open_close(root), "open, read models current")
            with open_log(root) as log:
                profile(root, lambda: load_state(log, root), "load_state, checkpoint at the tail")
                drop_checkpoints(root)
                profile(root, lambda: load_state(log, root), "load_state, no checkpoint")
            profile(root, lambda: rebuild(root), "open after losing index.db")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def print_table(args, table: dict[int, dict[str, float]]) -> None:
    lengths = list(table)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.layers:,} layers; median of {args.repeat} where repeated")
    header = f"| {'measure':<44} |" + "".join(f" {f'{n:,} events':>16} |" for n in lengths)
    print(header)
    print("|" + "-" * 46 + "|" + "".join("-" * 18 + "|" for _ in lengths))
    for key in table[lengths[0]]:
        cells = "".join(f" {fmt(table[n][key]):>16} |" for n in lengths)
        print(f"| {key:<44} |{cells}")
    for label, key in [("replay rate, load_state (events/s)", "load_state, no checkpoint"),
                       ("replay rate, decode only (events/s)", "decode only (log.records)"),
                       ("replay rate, rebuild read models (events/s)", "open after losing index.db, no checkpoint")]:
        cells = "".join(f" {n / table[n][key]:>16,.0f} |" for n in lengths)
        print(f"| {label:<44} |{cells}")
    best = min(table[n]["open, read models current"] for n in lengths)
    worst = max(table[n]["open, read models current"] for n in lengths)
    ckpt = max(table[n]["load_state, checkpoint at the tail"] for n in lengths)
    rebuilt = max(table[n]["open after losing index.db, with checkpoint"] for n in lengths)
    verdict = "met" if max(worst, ckpt, rebuilt) * 1000 <= TARGET_OPEN_MS else "MISSED"
    print(f"\ntarget: open <= {TARGET_OPEN_MS} ms with a checkpoint ({verdict}): normal open {worst * 1000:.0f} ms, "
          f"load_state from a checkpoint {ckpt * 1000:.0f} ms, rebuild after losing index.db {rebuilt:.1f} s")
    print(f"target: open independent of log length: {best * 1000:.0f}..{worst * 1000:.0f} ms over "
          f"{min(lengths):,}..{max(lengths):,} events ({'met' if worst <= 2 * best + 0.005 else 'MISSED'})")


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
