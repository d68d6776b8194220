#!/usr/bin/env python3
"""Benchmark the event log: fsync'd appends, group commit, replay; and the disk's ceiling.

    python tools/bench_log.py [--dir DIR] [--seconds 2] [--rounds 3] [--replay-events 1000000]

Prints one table. Every append is durable (fdatasync) before it counts. The ceiling is
a plain ``os.write`` + ``os.fdatasync`` loop writing records of the same sizes to one
file: what the disk allows a single writer, with no log around it. docs/benchmarks.md
keeps the figures and the targets.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.events import Actor, LayerCreated, encode_batch  # noqa: E402
from eventstore.log import EventLog  # noqa: E402
from eventstore.log.format import encode_record  # noqa: E402

THREADS = (1, 8, 64)
BATCHES = (1, 64)
REPLAY_BATCH = 10_000


def sample_event(n: int) -> LayerCreated:
    """A realistic record: a layer with a digest id, a parent, a name, time and actor."""
    return LayerCreated(
        layer=f"{n:064x}", parent=f"{n + 1:064x}", names=[f"registry.example/app:{n}"],
        driver="overlay", time=1_764_270_000_000_000_000 + n,
        actor=Actor(pid=4242, uid=1000, program="layerstore"),
    )


def record_size(batch: int) -> int:
    return len(encode_record(encode_batch([sample_event(i) for i in range(batch)]), 1, batch, 0))


def measure_ceiling(directory: Path, size: int, seconds: float) -> float:
    """Records per second of ``os.write`` + ``os.fdatasync`` of ``size`` bytes."""
    path = directory / f"ceiling-{size}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    data = os.urandom(size)
    try:
        count, start = 0, time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            os.write(fd, data)
            os.fdatasync(fd)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


def measure_paired(directory: Path, pairs: int, slice_seconds: float) -> list[float]:
    """Ratios of one appender's rate to the ceiling's, each from two back-to-back slices
    (the same record size): robust to a disk whose speed drifts under other tenants."""
    root = Path(tempfile.mkdtemp(prefix="paired-", dir=directory))
    size = record_size(1)
    event = sample_event(0)
    ratios = []
    with EventLog.open(root) as log:
        for _ in range(pairs):
            ceiling = measure_ceiling(directory, size, slice_seconds)
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < slice_seconds:
                log.append(event)
                count += 1
            ratios.append(count / (time.perf_counter() - start) / ceiling)
    shutil.rmtree(root)
    return ratios


def measure_appends(directory: Path, threads: int, batch: int, seconds: float) -> tuple[float, float, float]:
    """(calls/s, events/s, fdatasyncs/s) with ``threads`` threads each appending
    batches of ``batch`` events for ``seconds``."""
    root = Path(tempfile.mkdtemp(prefix=f"appends-{threads}x{batch}-", dir=directory))
    log = EventLog.open(root)
    events = [sample_event(i) for i in range(batch)]
    stop = threading.Event()
    ready = threading.Barrier(threads + 1)
    calls = [0] * threads

    def appender(slot: int) -> None:
        ready.wait()
        while not stop.is_set():
            if batch == 1:
                log.append(events[0])
            else:
                log.append_many(events)
            calls[slot] += 1

    workers = [threading.Thread(target=appender, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    records = log.verify().records  # one record per fdatasync (group commit writes one)
    log.close()
    shutil.rmtree(root)
    total = sum(calls)
    return total / elapsed, total * batch / elapsed, records / elapsed


def measure_replay(directory: Path, count: int, rounds: int) -> tuple[float, float, float]:
    """(seconds to build, seconds to open, seconds to iterate and decode) over ``count``
    events; the open and the iteration are the medians of ``rounds`` runs."""
    root = Path(tempfile.mkdtemp(prefix="replay-", dir=directory))
    start = time.perf_counter()
    with EventLog.open(root) as log:
        for first in range(0, count, REPLAY_BATCH):
            log.append_many([sample_event(n) for n in range(first, min(count, first + REPLAY_BATCH))])
    built = time.perf_counter() - start
    opens, iterations = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        log = EventLog.open(root, writer=False)
        opens.append(time.perf_counter() - start)
        start = time.perf_counter()
        seen = 0
        for _lsn, _event in log.events():
            seen += 1
        iterations.append(time.perf_counter() - start)
        log.close()
        assert seen == count, (seen, count)
    shutil.rmtree(root)
    return built, statistics.median(opens), statistics.median(iterations)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd(),
                        help="where to write (the disk under test; default: the current directory)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every measurement, interleaved; the table shows medians")
    parser.add_argument("--replay-events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-log-", dir=args.dir))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run(work: Path, args: argparse.Namespace) -> None:
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} · {platform.node()} · {os.cpu_count()} CPUs · "
          f"Python {platform.python_version()} · {work} · load {os.getloadavg()[0]:.2f}")
    sizes = {batch: record_size(batch) for batch in BATCHES}
    # Disks drift (other tenants, write-back): every configuration is measured once per
    # round, rounds interleaved, so that the ratios compare like with like.
    ceiling: dict[int, list[float]] = {batch: [] for batch in BATCHES}
    appends: dict[tuple[int, int], list[tuple[float, float, float]]] = {
        (threads, batch): [] for batch in BATCHES for threads in THREADS}
    for _ in range(args.rounds):
        for batch in BATCHES:
            ceiling[batch].append(measure_ceiling(work, sizes[batch], args.seconds))
            for threads in THREADS:
                appends[threads, batch].append(measure_appends(work, threads, batch, args.seconds))
    paired = measure_paired(work, 8 * args.rounds, 0.25)
    ceil = {batch: statistics.median(v) for batch, v in ceiling.items()}
    rate = {key: tuple(statistics.median(m[i] for m in v) for i in range(3)) for key, v in appends.items()}
    rows = [("ceiling: os.write + fdatasync", 1, batch, sizes[batch], ceil[batch], ceil[batch] * batch,
             ceil[batch], "") for batch in BATCHES]
    for (threads, batch), (calls, events, syncs) in rate.items():
        rows.append(("append" if batch == 1 else "append_many", threads, batch, sizes[batch],
                     calls, events, syncs, f"{calls / ceil[batch]:.2f}"))
    print_table(("what", "threads", "batch", "record B", "calls/s", "events/s", "fdatasync/s", "÷ ceiling"),
                [(r[0], r[1], r[2], r[3], f"{r[4]:,.0f}", f"{r[5]:,.0f}", f"{r[6]:,.0f}", r[7]) for r in rows])
    built, opened, iterated = measure_replay(work, args.replay_events, args.rounds)
    n = args.replay_events
    print(f"\nreplay of {n:,} events ({n // REPLAY_BATCH} records), decode included: "
          f"{n / iterated:,.0f} events/s iterating; {n / (opened + iterated):,.0f} events/s "
          f"counting the open that checks every record ({opened:.2f} s); building it took {built:.1f} s")
    one = rate[1, 1][0]
    pair = statistics.median(paired)
    print(f"one appender ÷ ceiling, paired 0.25 s slices: median {pair:.2f} over {len(paired)} pairs "
          f"(quartiles {statistics.quantiles(paired, n=4)[0]:.2f}-{statistics.quantiles(paired, n=4)[2]:.2f})")
    targets = [
        ("one appender >= 80% of the ceiling (paired)", pair >= 0.80, f"{pair:.0%}"),
        ("8 threads >= 5x one appender", rate[8, 1][0] >= 5 * one, f"{rate[8, 1][0] / one:.1f}x"),
        ("replay >= 500,000 events/s", n / (opened + iterated) >= 500_000, f"{n / (opened + iterated):,.0f}/s"),
    ]
    print()
    for name, met, shown in targets:
        print(f"target: {name}: {shown} -> {'met' if met else 'MISSED'}")
    print(f"# load at the end: {os.getloadavg()[0]:.2f}")


def print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    cells = [header, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    raise SystemExit(main())
