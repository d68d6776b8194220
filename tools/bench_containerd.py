#!/usr/bin/env python3
"""Image unpack and container start: containerd with layerstore as its snapshotter
against containerd's own overlayfs snapshotter, one containerd, the same run.

    sudo python tools/bench_containerd.py [--layerstore EXE] [--image small|python]...
                                          [--rounds 7]

One private containerd (tests/containerd/engine.py: its own root, sockets, namespace)
with ``layerstore serve`` (overlay driver) as a proxy snapshotter; the image's content
is imported once without unpacking. Each round, for each snapshotter in turn (the
order alternates): every snapshot of it removed and garbage collected (not timed),
then timed:

- unpack: ``ctr snapshots unpack <manifest>`` (Prepare, containerd's applier, Commit for
  each layer);
- start: ``ctr run --rm IMAGE ID true`` (Prepare of the container's snapshot, mounts,
  runc, exit, delete).

Medians and the ratio layerstore / overlayfs (lower is better for layerstore). Images:
``small``, the test image (busybox and three layers of every kind of entry, 2.2 MB);
``python``, busybox and the system Python's standard library (one layer, 40 MB in 789
entries here). ``--layerstore`` names the installed CLI the server runs (a
non-editable ``pip install .``, as users have it); default: this checkout's .venv.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.containerd import image as test_image  # noqa: E402
from tests.containerd.engine import SNAPSHOTTER, Engine, missing_tools  # noqa: E402

NAME = "bench.local/layerstore"


def python_image(work: Path) -> Path:
    """busybox, then the standard library of the system Python as one layer."""
    layout, bundle = work / "layout", work / "bundle"
    ref = f"{layout}:latest"
    test_image.umoci("init", "--layout", str(layout))
    test_image.umoci("new", "--image", ref)
    test_image.umoci("unpack", "--image", ref, str(bundle))
    test_image.busybox_root(bundle / "rootfs")
    test_image.umoci("repack", "--refresh-bundle", "--image", ref, str(bundle))
    stdlib = sorted(Path("/usr/lib").glob("python3.[0-9]*"))[-1:] or [Path(sysconfig.get_paths()["stdlib"])]
    shutil.copytree(stdlib[0], bundle / "rootfs/usr/lib" / stdlib[0].name, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "dist-packages", "__pycache__"))
    test_image.umoci("repack", "--refresh-bundle", "--image", ref, str(bundle))
    shutil.rmtree(bundle)
    archive = work / "image.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(layout), "."], check=True)
    return archive


def manifest_digest(engine: Engine, ref: str) -> str:
    for line in engine.ctr("images", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields[0] == ref:
            return fields[2]
    raise SystemExit(f"image {ref} not found after import")


def reset(engine: Engine, snapshotter: str) -> None:
    """Remove every snapshot of ``snapshotter`` (children first), then collect garbage
    so the backend is empty as well. containerd's own collector may remove the lower
    snapshots meanwhile (they are garbage once the top one is gone): not found is fine."""
    for _ in range(100):
        rows = [line.split() for line in engine.ctr("snapshots", "ls", snapshotter=snapshotter).stdout.splitlines()[1:]]
        if not rows:
            break
        parents = {row[1] for row in rows if len(row) == 3}
        for leaf in [row[0] for row in rows if row[0] not in parents]:
            removed = engine.ctr("snapshots", "rm", leaf, snapshotter=snapshotter, check=False)
            if removed.returncode != 0 and "not found" not in removed.stderr:
                raise SystemExit(f"removing {leaf}: {removed.stderr.strip()}")
    lease = engine.ctr("leases", "create").stdout.split()[0]
    engine.ctr("leases", "delete", "--sync", lease)


_CALL_TIME = re.compile(r"^layerstore: (\w+) .*: ([0-9.]+) ms$")


def timed(engine: Engine, *args: str, snapshotter: str) -> tuple[float, float]:
    """Wall time of the ctr command, and the time the layerstore server spent answering
    it (from its debug log: each call and its duration)."""
    log = engine.base / "layerstore.log"
    offset = log.stat().st_size
    start = time.perf_counter()
    engine.ctr(*args, snapshotter=snapshotter)
    wall = time.perf_counter() - start
    with open(log) as f:
        f.seek(offset)
        served = sum(float(m[2]) for m in map(_CALL_TIME.match, f.read().splitlines()) if m) / 1000
    return wall, served


def measure(engine: Engine, ref: str, digest: str, rounds: int) -> dict[str, dict[str, list[float]]]:
    results = {s: {"unpack": [], "start": [], "served": []} for s in (SNAPSHOTTER, "overlayfs")}
    for n in range(rounds):
        order = [SNAPSHOTTER, "overlayfs"] if n % 2 == 0 else ["overlayfs", SNAPSHOTTER]
        for snapshotter in order:
            reset(engine, snapshotter)
            unpack, served_unpack = timed(engine, "snapshots", "unpack", digest, snapshotter=snapshotter)
            start, served_start = timed(engine, "run", "--rm", ref, f"bench-{snapshotter}-{n}", "true",
                                        snapshotter=snapshotter)
            results[snapshotter]["unpack"].append(unpack)
            results[snapshotter]["start"].append(start)
            results[snapshotter]["served"].append(served_unpack + served_start)
    return results


def report(name: str, results: dict) -> None:
    ours, theirs = results[SNAPSHOTTER], results["overlayfs"]
    both = {s: [u + t for u, t in zip(r["unpack"], r["start"])] for s, r in results.items()}
    print(f"\n{name}: medians of {len(ours['unpack'])} rounds (ms)\n")
    print("| what | layerstore | overlayfs | ratio |")
    print("|---|---:|---:|---:|")
    for label, a, b in [("unpack", ours["unpack"], theirs["unpack"]), ("start", ours["start"], theirs["start"]),
                        ("unpack + start", both[SNAPSHOTTER], both["overlayfs"])]:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {label} | {ma * 1000:.0f} | {mb * 1000:.0f} | {ma / mb:.2f} |")
    served = statistics.median(ours["served"])
    print(f"\nlayerstore's server answering its calls: {served * 1000:.0f} ms of the "
          f"{statistics.median(both[SNAPSHOTTER]) * 1000:.0f} ms of unpack + start (median)")
    for snapshotter, rounds in results.items():
        print(f"{snapshotter} per round (ms): unpack {' '.join(f'{x * 1000:.0f}' for x in rounds['unpack'])}; "
              f"start {' '.join(f'{x * 1000:.0f}' for x in rounds['start'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layerstore", default=str(REPO / ".venv/bin/layerstore"),
                        help="the layerstore executable the server runs")
    parser.add_argument("--image", action="append", choices=["small", "python"], help="(repeatable) default both")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0 or missing_tools():
        raise SystemExit(f"needs root and {', '.join(missing_tools()) or 'nothing more'}")
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} CPUs, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; server {args.layerstore}")
    work = Path(tempfile.mkdtemp(prefix="bench-containerd-"))
    os.environ["LAYERSTORE_DEBUG"] = "1"  # the server logs each call with its duration
    engine = Engine(driver="overlay", layerstore=args.layerstore)
    try:
        engine.start()
        for name in args.image or ["small", "python"]:
            archive = test_image.build(work / name) if name == "small" else python_image(work / name)
            ref = f"{NAME}/{name}:latest"
            engine.ctr("images", "import", "--no-unpack", "--base-name", ref.rsplit(":", 1)[0], str(archive))
            size = archive.stat().st_size
            print(f"\nimage {name}: {size / 1e6:.1f} MB archive")
            report(name, measure(engine, ref, manifest_digest(engine, ref), args.rounds))
    finally:
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
