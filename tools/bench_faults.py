#!/usr/bin/env python3
"""What a disarmed failpoint costs: ns per ``faults.point`` call against an empty
function call, and against the operations that pass through failpoints.

    python tools/bench_faults.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore import faults  # noqa: E402


def per_call_ns(stmt, number: int = 2_000_000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e9


def noop(name: str) -> None:
    pass


def main() -> None:
    assert not os.environ.get("LAYERSTORE_FAILPOINTS"), "unset LAYERSTORE_FAILPOINTS to measure the disarmed cost"
    point_ns = per_call_ns(lambda: faults.point("store.create.after-intent"))
    noop_ns = per_call_ns(lambda: noop("store.create.after-intent"))

    from eventstore.opener import open_store

    trace = Path(tempfile.mkdtemp()) / "trace"
    with tempfile.TemporaryDirectory() as root, open_store(root, "vfs") as store:
        layer = store.create()
        rounds = 300
        op_s = min(timeit.repeat(lambda: (store.hold(layer, lease="b"), store.release(layer, lease="b")),
                                 number=rounds, repeat=3)) / rounds
        # count the failpoints one hold+release passes
        with faults.tracing_to(trace):
            store.hold(layer, lease="c")
            store.release(layer, lease="c")
    passed = len(trace.read_text().split())
    extra_ns = passed * (point_ns - noop_ns)
    print("| measure | value |\n|---|---|")
    print(f"| `faults.point(name)`, disarmed | {point_ns:.0f} ns |")
    print(f"| an empty Python function call | {noop_ns:.0f} ns |")
    print(f"| failpoints passed by one hold + release | {passed} |")
    print(f"| hold + release (in process, fdatasync'd) | {op_s * 1e6:.0f} µs |")
    print(f"| failpoint share of that | {extra_ns / (op_s * 1e9) * 100:.4f} % |")


if __name__ == "__main__":
    main()
