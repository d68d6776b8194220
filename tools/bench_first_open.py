#!/usr/bin/env python3
"""What the first open of a new store costs over a later open (issue 13: at most 50 ms).

    python tools/bench_first_open.py --layerstore /venv/bin/layerstore [--driver overlay] [--rounds 21]

Each round, alternating: ``layerstore --root NEW create`` (an empty layer: the store's
directories, its log's first segment, index.db, the driver's probe, all made and
synced by this call) and the same ``create`` into a store made before the round (not
timed). Both are fresh processes of the CLI as installed; the difference of the
medians is the first open's own cost. Then the same in one process through the Python
API (``open_store`` alone), which leaves out interpreter start-up.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layerstore", required=True, help="the installed layerstore CLI")
    parser.add_argument("--driver", default="overlay")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-first-open-", dir=args.workdir))
    try:
        cli = {"new store": [], "store made before": []}
        api = {"new store": [], "store made before": []}
        from eventstore.opener import open_store

        for n in range(args.rounds):
            made = work / f"made-{n}"
            base = [args.layerstore, "--driver", args.driver]
            subprocess.run([*base, "--root", str(made), "create"], check=True, stdout=subprocess.DEVNULL)
            pair = [("new store", work / f"new-{n}"), ("store made before", made)]
            for label, root in pair if n % 2 == 0 else reversed(pair):
                cli[label].append(timed([*base, "--root", str(root), "create"]))
            for label, root in [("new store", work / f"api-new-{n}"), ("store made before", made)]:
                start = time.perf_counter()
                with open_store(root, args.driver):
                    pass
                api[label].append(time.perf_counter() - start)
        for what, runs in (("CLI create", cli), ("API open_store", api)):
            medians = {label: statistics.median(t) * 1000 for label, t in runs.items()}
            for label, value in medians.items():
                print(f"{what:15s} {label:18s} median {value:7.1f} ms  (min {min(runs[label]) * 1000:.1f})")
            print(f"{what:15s} first open costs {medians['new store'] - medians['store made before']:+.1f} ms")
    finally:
        for mounted in work.glob("*/overlay/*/merged"):
            subprocess.run(["umount", str(mounted)], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
