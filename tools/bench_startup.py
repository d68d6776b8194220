#!/usr/bin/env python3
"""CLI start-up of two installed ``layerstore``s, side by side (say, a branch against
its base): the same commands on stores of 21 layers, alternating, medians.

    python tools/bench_startup.py --rounds 21 BASE/bin/layerstore THIS/bin/layerstore
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [["layers"], ["layer", "img"], ["exists", "img"], ["refs", "img"], ["hold", "img"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="a layerstore executable (the base)")
    parser.add_argument("second", help="another (the one measured against it)")
    parser.add_argument("--rounds", type=int, default=21, help="rounds (medians are printed)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        return run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(args, base: Path) -> int:
    tools = {"first": args.first, "second": args.second}
    for name, exe in tools.items():
        subprocess.run([exe, "--root", str(base / name), "--driver", "vfs", "create", "--name", "img"],
                       check=True, capture_output=True)
        for _ in range(20):
            subprocess.run([exe, "--root", str(base / name), "create"], check=True, capture_output=True)
    found: dict = {}
    for i in range(args.rounds):
        for name in (tools if i % 2 == 0 else list(tools)[::-1]):
            for command in COMMANDS:
                start = time.perf_counter()
                subprocess.run([tools[name], "--root", str(base / name), *command], capture_output=True)
                found.setdefault((" ".join(command), name), []).append(time.perf_counter() - start)
    print(f"{'command':<12} {'first ms':>9} {'second ms':>10} {'ratio':>6}")
    for command in COMMANDS:
        key = " ".join(command)
        first, second = (statistics.median(found[(key, n)]) * 1000 for n in ("first", "second"))
        print(f"{key:<12} {first:>9.1f} {second:>10.1f} {second / first:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
