#!/usr/bin/env python3
"""CLI operation latency: layerstore against containers-storage, same run, same machine.

For each store size, builds one store of each kind with that many (empty) layers, then
times single CLI invocations of the same operations, alternating between the two tools
round by round so that machine noise hits both alike. Prints medians and the ratio
layerstore / containers-storage (lower is better for layerstore).

Building the peer's store through its CLI is quadratic (it rewrites layers.json on
every create: ~13 minutes for 10,000 layers), so by default the peer's store is written
directly in its on-disk format (layers.json and the vfs directories), which is exactly
what its CLI would have left; ``--peer-build cli`` builds it through the CLI instead.
Our store is built through the Python API (the same events the CLI appends).

    python tools/bench_cli.py --sizes 1000 10000 --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_layerstore(root: Path, count: int) -> list[str]:
    from eventstore.opener import open_store

    ids: list[str] = []
    with open_store(root, "vfs") as store:
        for i in range(count):
            parent = ids[-1] if ids and i % 10 else None
            ids.append(store.create(parent=parent))
    return ids


def build_peer(graph: Path, run: Path, count: int, mode: str) -> list[str]:
    cs = peer_cmd(graph, run)
    if mode == "cli":
        ids: list[str] = []
        for i in range(count):
            parent = [ids[-1]] if ids and i % 10 else []
            ids.append(subprocess.run(cs + ["create-layer", *parent], check=True, capture_output=True,
                                      text=True).stdout.split()[-1])
        return ids
    # Initialise an empty store with the CLI, then write its layers.json the way its
    # CLI writes it (one object a layer: id, parent, created) and the vfs directories.
    subprocess.run(cs + ["layers"], check=True, capture_output=True)
    records, ids = [], []
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    for i in range(count):
        layer_id = os.urandom(32).hex()
        rec = {"id": layer_id, "created": now}
        if ids and i % 10:
            rec["parent"] = ids[-1]
        records.append(rec)
        ids.append(layer_id)
        (graph / "vfs" / "dir" / layer_id).mkdir(parents=True)
    (graph / "vfs-layers" / "layers.json").write_text(json.dumps(records))
    listed = subprocess.run(cs + ["layers"], check=True, capture_output=True, text=True).stdout.split()
    assert len(listed) == count, f"peer store lists {len(listed)} layers, wanted {count}"
    return ids


def peer_cmd(graph: Path, run: Path) -> list[str]:
    return ["containers-storage", "--graph", str(graph), "--run", str(run), "--storage-driver", "vfs"]


def ours_cmd(root: Path) -> list[str]:
    exe = shutil.which("layerstore")
    base = [exe] if exe else [sys.executable, "-m", "eventstore.cli"]
    return base + ["--root", str(root)]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {result.stderr.decode().strip()}")
    return elapsed


ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def operations(ours: list[str], peer: list[str], layer: str) -> list[tuple[str, list[list[str]], list[list[str]]]]:
    """(name, our commands, peer commands): each pair does the same job."""
    return [
        ("exists", [ours + ["exists", layer]], [peer + ["exists", "-l", layer]]),
        ("layer", [ours + ["layer", layer]], [peer + ["layer", layer]]),
        ("layers (list all)", [ours + ["layers"]], [peer + ["layers"]]),
        # the peer has no hold counts; add-names/set-names is its nearest metadata write
        ("hold / add-names", [ours + ["hold", layer, "--lease", "bench"]], [peer + ["add-names", "-n", "bench", layer]]),
        ("release / set-names", [ours + ["release", layer, "--lease", "bench"]], [peer + ["set-names", layer]]),
        ("mount", [ours + ["mount", layer]], [peer + ["mount", layer]]),
        ("umount", [ours + ["umount", layer]], [peer + ["unmount", layer]]),
    ]


def measure(size: int, rounds: int, peer_build: str, workdir: Path) -> list[tuple]:
    root = workdir / f"ours-{size}"
    graph, run = workdir / f"peer-{size}" / "graph", workdir / f"peer-{size}" / "run"
    t0 = time.perf_counter()
    ours_ids = build_layerstore(root, size)
    t1 = time.perf_counter()
    peer_ids = build_peer(graph, run, size, peer_build)
    t2 = time.perf_counter()
    print(f"# {size} layers: built layerstore in {t1 - t0:.1f} s (API), peer in {t2 - t1:.1f} s ({peer_build})",
          flush=True)
    rng = random.Random(size)
    ours_layer, peer_layer = rng.choice(ours_ids), rng.choice(peer_ids)
    ops_ours = operations(ours_cmd(root), [], ours_layer)
    ops_peer = operations([], peer_cmd(graph, run), peer_layer)
    rows = []
    for (name, ours_cmds, _), (_, _, peer_cmds) in zip(ops_ours, ops_peer):
        ours_t, peer_t = [], []
        for _ in range(rounds):
            ours_t.append(sum(timed(c) for c in ours_cmds))
            peer_t.append(sum(timed(c) for c in peer_cmds))
        rows.append((size, name, statistics.median(ours_t) * 1e3, statistics.median(peer_t) * 1e3))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--peer-build", choices=["direct", "cli"], default="direct")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if not shutil.which("containers-storage"):
        raise SystemExit("containers-storage is not installed (apt-get install containers-storage)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        rows = []
        for size in args.sizes:
            rows += measure(size, args.rounds, args.peer_build, workdir)
        print("\n| layers | operation | layerstore (ms) | containers-storage (ms) | ratio |")
        print("|---:|---|---:|---:|---:|")
        for size, name, ours, peer in rows:
            print(f"| {size} | {name} | {ours:.1f} | {peer:.1f} | {ours / peer:.2f} |")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
