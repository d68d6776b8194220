#!/usr/bin/env python3
"""``layerstore mount`` of the top of a deep overlay chain (300 by default: beyond what
one page of mount(2) options holds; through the new mount API), medians of CLI calls.

    python tools/bench_deep_mount.py --depth 300 --runs 7 --layerstore PATH
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=300, help="layers in the chain")
    parser.add_argument("--runs", type=int, default=7, help="mounts timed (the median is printed)")
    parser.add_argument("--layerstore", default=shutil.which("layerstore") or "layerstore",
                        help="the layerstore to time (an installed one)")
    args = parser.parse_args()
    from eventstore.opener import open_store

    base = Path(tempfile.mkdtemp(prefix="bench-deep-"))
    root = base / "store"
    try:
        with open_store(root, "overlay") as store:  # the chain, built through the API
            top = None
            for _ in range(args.depth):
                top = store.create(parent=top)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([args.layerstore, "--root", str(root), "mount", top], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
            subprocess.run([args.layerstore, "--root", str(root), "umount", top], check=True, capture_output=True)
    finally:
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    print(f"mount ({args.depth} deep), {args.runs} runs: median {statistics.median(times) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
