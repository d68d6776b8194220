#!/usr/bin/env python3
"""Benchmark layer import: layerstore against `containers-storage import-layer`
(overlay driver for both), with `tar -xzf` as the floor.

    python tools/bench_import.py [--file LAYER.tar.gz | --layer stdlib|small]
                                 [--rounds 7] [--workdir DIR]
                                 [--layerstore /venv/bin/layerstore [--cli-only]]

With --layerstore (the CLI as users install it: a non-editable `pip install .` in its
own venv), `layerstore create FILE` is timed as a user runs it: a fresh process and a
new store (`--root` a new directory, overlay driver), its data synced and its events
durable before it returns; and once more into a store made before the round (not
timed), which separates what a new store costs from what the import costs.

Without --file, the layer is a `tar czf` of the system Python's standard library,
/usr/lib/python3.X (tens of MB uncompressed; site-packages left out), or with
--layer small 200 directories of 100 small files (per-entry cost). --workdir /dev/shm
puts every extraction on tmpfs, out of reach of other processes' disk traffic.

Rounds interleave the contenders so that noise hits all alike; the medians and their
ratio to containers-storage are printed. layerstore is timed twice:
in this process (the import alone) and in a fresh interpreter (what a CLI user waits
for, like the peer's timing, which includes its process start). Neither side syncs
the layer to disk (containers-storage does not by default); `+ sync_tree` shows our
cost with the syncfs the store adds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.archive import import_layer  # noqa: E402
from eventstore.fsutil import sync_tree  # noqa: E402

PEER = shutil.which("containers-storage")
IN_NEW_PROCESS = """
import sys, time
from eventstore.archive import import_layer
from pathlib import Path
with open(sys.argv[1], "rb") as f:
    import_layer(f, Path(sys.argv[2]), Path(sys.argv[3]), whiteout_format="overlay")
"""


def default_layer(work: Path) -> Path:
    system = sorted(Path("/usr/lib").glob("python3.[0-9]*"))
    stdlib = system[-1] if system else Path(sysconfig.get_paths()["stdlib"])
    path = work / "layer.tar.gz"
    subprocess.run(["tar", "czf", str(path), "--exclude=site-packages",
                    "--exclude=dist-packages", "-C", str(stdlib.parent), stdlib.name],
                   check=True)
    return path


def small_files_layer(work: Path) -> Path:
    """200 directories of 100 small files: where the cost per entry shows."""
    tree = work / "small-files"
    for d in range(200):
        sub = tree / f"pkg{d:03d}" / "sub"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"mod{f:03d}.js").write_text(
                f"module.exports = {{ id: {d * 100 + f} }};\n" * (1 + f % 7))
    path = work / "small.tar.gz"
    subprocess.run(["tar", "czf", str(path), "-C", str(work), tree.name], check=True)
    shutil.rmtree(tree)
    return path


def fresh(work: Path, name: str) -> Path:
    """A new directory for one run. Nothing is deleted until the end: ext4 does not
    reuse an inode for a minute or more after it was freed and scans past such inodes
    for every file it creates (``recently_deleted`` in its allocator), so a run right
    after the previous round's ``rm -rf`` pays many times the normal cost."""
    fresh.count = getattr(fresh, "count", 0) + 1
    path = work / f"{name}-{fresh.count}"
    path.mkdir()
    return path


def ours(layer: Path, work: Path, sync: bool = False) -> float:
    base = fresh(work, "ours")
    (base / "diff").mkdir()
    start = time.perf_counter()
    with open(layer, "rb") as f:
        import_layer(f, base / "diff", base / "tar-split", whiteout_format="overlay")
    if sync:
        sync_tree(base / "diff")
    return time.perf_counter() - start


def ours_process(layer: Path, work: Path) -> float:
    base = fresh(work, "ours-process")
    (base / "diff").mkdir()
    repo = str(Path(__file__).resolve().parent.parent)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IN_NEW_PROCESS, str(layer), str(base / "diff"),
                    str(base / "tar-split")], check=True, cwd=repo,
                   env={**os.environ, "PYTHONPATH": repo})
    return time.perf_counter() - start


def peer(layer: Path, work: Path) -> float:
    base = fresh(work, "peer")
    args = [PEER, "--graph", str(base / "graph"), "--run", str(base / "run"),
            "--storage-driver", "overlay"]
    start = time.perf_counter()
    subprocess.run([*args, "import-layer", "-f", str(layer)], check=True,
                   stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    # the overlay driver leaves its home bind-mounted; undo that before removing it
    subprocess.run([*args, "shutdown"], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return elapsed


def cli_create(layer: Path, work: Path, exe: str, store_made: bool) -> float:
    root = fresh(work, "cli-store") / "root"
    args = [exe, "--root", str(root), "--driver", "overlay"]
    if store_made:
        subprocess.run([*args, "layers"], check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run([*args, "create", str(layer)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def tar_floor(layer: Path, work: Path) -> float:
    base = fresh(work, "tar")
    start = time.perf_counter()
    subprocess.run(["tar", "-xzf", str(layer), "-C", str(base)], check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="a layer tarball (default: --layer)")
    parser.add_argument("--layer", choices=("stdlib", "small"), default="stdlib",
                        help="the layer to build when no --file: the system Python's "
                             "stdlib, or 20,000 small files")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="where to extract (default: a temp dir)")
    parser.add_argument("--layerstore", action="append", default=[],
                        help="an installed layerstore CLI: time `create` too (repeat to compare installs)")
    parser.add_argument("--cli-only", action="store_true", help="with --layerstore: leave out the "
                        "in-process runs of this checkout's import_layer")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-import-", dir=args.workdir))
    try:
        if args.file:
            layer = args.file
        elif args.layer == "small":
            layer = small_files_layer(work)
        else:
            layer = default_layer(work)
        uncompressed = int(subprocess.run(f"gzip -dc {layer} | wc -c", shell=True,
                                          capture_output=True, text=True).stdout or 0)
        print(f"layer: {layer} ({layer.stat().st_size / 1e6:.1f} MB, "
              f"{uncompressed / 1e6:.1f} MB uncompressed), {args.rounds} rounds")
        contenders = {} if args.cli_only else {
            "layerstore import_layer (in process)": lambda: ours(layer, work),
            "layerstore import_layer (new process)": lambda: ours_process(layer, work),
            "layerstore import_layer + sync_tree": lambda: ours(layer, work, sync=True),
        }
        for exe in args.layerstore:
            tag = f" {exe}" if len(args.layerstore) > 1 else ""
            contenders[f"layerstore create (CLI, new store){tag}"] = \
                lambda exe=exe: cli_create(layer, work, exe, store_made=False)
            contenders[f"layerstore create (CLI, store made before){tag}"] = \
                lambda exe=exe: cli_create(layer, work, exe, store_made=True)
        contenders["tar -xzf (floor)"] = lambda: tar_floor(layer, work)
        if PEER:
            contenders["containers-storage import-layer (overlay)"] = lambda: peer(layer, work)
        else:
            print("containers-storage is not installed: peer skipped")
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                times[name].append(run())
        peer_median = statistics.median(times[next(reversed(times))]) if PEER else None
        tar_median = statistics.median(times["tar -xzf (floor)"])
        for name, samples in times.items():
            median = statistics.median(samples)
            ratio = f"  {median / peer_median:.2f}x peer" if peer_median else ""
            print(f"{name:45s} median {median:.3f} s  (min {min(samples):.3f}, "
                  f"max {max(samples):.3f}){ratio}  {median / tar_median:.2f}x tar")
        # the same ratios, round by round (noise hits a round's runs alike)
        for name in [n for n in times if n.startswith("layerstore create (CLI, new store)")]:
            for other, label in (("tar -xzf (floor)", "tar"),
                                 ("containers-storage import-layer (overlay)", "peer")):
                if other in times:
                    ratios = sorted(a / b for a, b in zip(times[name], times[other]))
                    print(f"{name} / {label}, per round: median {statistics.median(ratios):.2f} "
                          f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})")
    finally:
        for leftover in work.glob("peer-*"):
            subprocess.run(["umount", "-R", str(leftover / "graph" / "overlay")],
                           check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
