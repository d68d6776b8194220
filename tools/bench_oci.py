#!/usr/bin/env python3
"""Benchmark image import: `layerstore import-oci` (the layers filled side by side, and
with --jobs 1 one after the other) against `skopeo copy oci:... containers-storage:...`
(overlay for both), in the same run, rounds interleaved.

    python3 -m venv /tmp/ls && /tmp/ls/bin/pip install .        # the CLI as users install it
    python3 tools/bench_oci.py --layerstore /tmp/ls/bin/layerstore [--image debian|host|DIR:TAG]
                               [--rounds 5] [--workdir DIR] [--jobs 1 --jobs 4]

Each run starts from a new, empty store (layerstore: a new --root; containers-storage:
a new --graph/--run), and is timed from the process start to its exit: every layer
read from the layout, verified, extracted and (layerstore) synced and recorded. The
images come from tools/bench_image.py, built once into --cache. Nothing is deleted
before the end of the run (see tools/bench_import.py's ``fresh``: ext4 is slow to
create files right after many were freed).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_image  # noqa: E402

RUNS = iter(range(1, 1 << 30))


def fresh(work: Path, name: str) -> Path:
    path = work / f"{name}-{next(RUNS)}"
    path.mkdir()
    return path


def ours(exe: str, image: str, work: Path, jobs: int | None) -> float:
    root = fresh(work, "ours") / "root"
    args = [exe, "--root", str(root), "--driver", "overlay", "import-oci", image]
    if jobs is not None:
        args += ["--jobs", str(jobs)]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def skopeo(image: str, work: Path) -> float:
    base = fresh(work, "peer")
    graph, run = base / "graph", base / "run"
    start = time.perf_counter()
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{image}",
                    f"containers-storage:[overlay@{graph}+{run}]bench:latest"], check=True)
    elapsed = time.perf_counter() - start
    subprocess.run(["containers-storage", "--graph", str(graph), "--run", str(run), "--storage-driver",
                    "overlay", "shutdown", "--force"], check=False, capture_output=True)
    return elapsed


def describe(image: str) -> str:
    import json

    layout, _, tag = image.rpartition(":")
    index = json.loads(Path(layout, "index.json").read_text())
    (desc,) = [d for d in index["manifests"] if d.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") == tag]
    manifest = json.loads(Path(layout, "blobs", "sha256", desc["digest"][7:]).read_text())
    sizes = [layer["size"] for layer in manifest["layers"]]
    return f"{len(sizes)} layers, {sum(sizes) / 1e6:.1f} MB compressed ({', '.join(f'{s / 1e6:.1f}' for s in sizes)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layerstore", required=True, help="the installed layerstore CLI")
    parser.add_argument("--image", default="debian", help="debian, host (tools/bench_image.py) or DIR:TAG")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "layerstore-bench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, action="append",
                        help="layerstore --jobs values to time (default: its default, and 1)")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    args = parser.parse_args()

    image = args.image
    if image in ("debian", "host"):
        image = bench_image.build(image, args.cache / image)
    print(f"image {image}: {describe(image)}; {args.rounds} rounds")
    work = Path(tempfile.mkdtemp(prefix="bench-oci-", dir=args.workdir))
    contenders = {}
    for jobs in args.jobs or [None, 1]:
        label = "layerstore import-oci" + (f" --jobs {jobs}" if jobs is not None else " (default jobs)")
        contenders[label] = lambda jobs=jobs: ours(args.layerstore, image, work, jobs)
    contenders["skopeo copy to containers-storage"] = lambda: skopeo(image, work)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for _ in range(args.rounds):
            for name, run in contenders.items():
                times[name].append(run())
        peer = times["skopeo copy to containers-storage"]
        for name, samples in times.items():
            ratios = sorted(a / b for a, b in zip(samples, peer))
            print(f"{name:40s} median {statistics.median(samples):.3f} s (min {min(samples):.3f}, "
                  f"max {max(samples):.3f})  per-round ratio to skopeo: median {statistics.median(ratios):.2f} "
                  f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})")
    finally:
        for base in work.glob("peer-*"):
            subprocess.run(["containers-storage", "--graph", str(base / "graph"), "--run", str(base / "run"),
                            "--storage-driver", "overlay", "shutdown", "--force"], check=False, capture_output=True)
            subprocess.run(["umount", "-R", str(base / "graph" / "overlay")], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
