#!/usr/bin/env python3
"""Two installs of layerstore, same machine, same run: the median wall time of single
CLI calls, alternating between the two round by round so that machine noise hits both
alike. For a change's cost at start-up (a check on every call, an import).

Install each version as users do (non-editable) into its own venv, then:

    python3 -m venv /tmp/a && /tmp/a/bin/pip install -q <old checkout>
    python3 -m venv /tmp/b && /tmp/b/bin/pip install -q .
    python3 tools/bench_cli_versions.py /tmp/a/bin/layerstore /tmp/b/bin/layerstore --rounds 61
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

OPERATIONS = {
    "exists n5": [["exists", "n5"]],
    "layers": [["layers"]],
    "hold+release (writer)": [["hold", "--lease", "bench", "n5"], ["release", "--lease", "bench", "n5"]],
}


def build(binary: str, root: Path, layers: int) -> None:
    for i in range(layers):
        subprocess.run([binary, "--root", str(root), "--driver", "vfs", "create", "--name", f"n{i}"],
                       check=True, capture_output=True)


def time_once(binary: str, root: Path, calls: list[list[str]]) -> float:
    start = time.perf_counter()
    for args in calls:
        subprocess.run([binary, "--root", str(root), *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="the first layerstore binary (the baseline)")
    ap.add_argument("b", help="the second layerstore binary")
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--layers", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="layerstore-bench-versions-"))
    try:
        roots = {"a": work / "a", "b": work / "b"}
        binaries = {"a": args.a, "b": args.b}
        for key in roots:
            build(binaries[key], roots[key], args.layers)
        times: dict[tuple[str, str], list[float]] = {(k, op): [] for k in roots for op in OPERATIONS}
        for r in range(args.rounds):
            for key in (("a", "b") if r % 2 else ("b", "a")):
                for op, calls in OPERATIONS.items():
                    times[(key, op)].append(time_once(binaries[key], roots[key], calls))
        print(f"{'operation':<24}{'a ms':>9}{'b ms':>9}{'b/a':>7}   ({args.rounds} rounds, medians; "
              f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
        for op in OPERATIONS:
            a = statistics.median(times[("a", op)]) * 1000
            b = statistics.median(times[("b", op)]) * 1000
            print(f"{op:<24}{a:>9.1f}{b:>9.1f}{b / a:>7.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
