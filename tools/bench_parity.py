#!/usr/bin/env python3
"""containers-storage's layer commands, layerstore against the peer, same run, same input.

Times single CLI calls of each tool on the same input, alternating the two round by
round so that machine noise hits both alike, and prints medians and the ratio
layerstore / containers-storage (lower is better for layerstore):

- ``applydiff`` of one tar (default: /usr/lib/python3 packed, ~40 MiB) into an empty
  layer;
- ``changes`` and ``diffsize`` of a container that added and changed files;
- ``mount`` of the top of a chain of ``--depth`` layers;
- the start of the CLI: ``layers`` and ``layer ID`` on a store with a few layers.

    python tools/bench_parity.py --driver overlay --rounds 5 [--layerstore PATH]

``--layerstore`` names the installed ``layerstore`` to time (measure it as users install
it: ``pip install .`` into a separate venv, not an editable install).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


def timed(command: list[str], stdin: bytes | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{command[:6]}...: exit {done.returncode}: {done.stderr.decode()[-300:]}")
    return elapsed, done.stdout.decode()


class Tool:
    def __init__(self, name: str, program: list[str], base: Path, driver: str):
        self.name = name
        self.argv = [*program, "--graph", str(base / name / "graph"), "--run", str(base / name / "run"),
                     "--storage-driver", driver]
        self.chain_top: str | None = None  # the top of the deep chain, made once

    def call(self, *args: str, stdin: bytes | None = None) -> tuple[float, str]:
        return timed([*self.argv, *args], stdin)

    def ok(self, *args: str) -> str:
        return self.call(*args)[1].strip()


def source_tar(path: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=".")
    return buffer.getvalue()


def container_writes(root: Path, files: int) -> None:
    """What a container does: adds ``files`` files, changes 50 of the image's."""
    (root / "added").mkdir()
    for i in range(files):
        (root / "added" / f"f{i}").write_bytes(b"x" * (i % 4096))
    changed = 0
    for directory, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = Path(directory) / name
            if changed < 50 and "added" not in path.parts and path.is_file() and not path.is_symlink():
                path.write_bytes(b"changed\n")
                changed += 1


def bench_round(tools: list[Tool], tar: Path, depth: int, files: int, results: dict) -> None:
    for tool in tools:
        layer = tool.ok("create-layer")
        results.setdefault(("applydiff", tool.name), []).append(tool.call("applydiff", "-f", str(tar), layer)[0])
        container = tool.ok("create-layer", layer)
        root = Path(tool.ok("mount", container))
        container_writes(root, files)
        tool.ok("unmount", container)
        results.setdefault(("changes", tool.name), []).append(tool.call("changes", container)[0])
        results.setdefault(("diffsize", tool.name), []).append(tool.call("diffsize", container)[0])
        results.setdefault(("layers", tool.name), []).append(tool.call("layers")[0])
        results.setdefault(("layer ID", tool.name), []).append(tool.call("layer", layer)[0])
        if depth:
            if tool.chain_top is None:
                for _ in range(depth):
                    tool.chain_top = tool.ok("create-layer", *([tool.chain_top] if tool.chain_top else []))
            results.setdefault((f"mount ({depth} deep)", tool.name), []).append(tool.call("mount", tool.chain_top)[0])
            tool.ok("unmount", tool.chain_top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay", choices=["overlay", "vfs"], help="the driver of both")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians are printed)")
    parser.add_argument("--tar-from", default="/usr/lib/python3", help="the directory packed into the applied tar")
    parser.add_argument("--files", type=int, default=2000, help="files the container adds")
    parser.add_argument("--depth", type=int, default=120, help="layers in the chain mounted (0: skip; the "
                        "peer of Debian 12, containers-storage 1.43, stops at 127)")
    parser.add_argument("--layerstore", default=shutil.which("layerstore") or "layerstore",
                        help="the layerstore to time (an installed one)")
    parser.add_argument("--peer", default=shutil.which("containers-storage") or "containers-storage",
                        help="the containers-storage to compare with")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-parity-"))
    tools = [Tool("containers-storage", [args.peer], base, args.driver),
             Tool("layerstore", [args.layerstore], base, args.driver)]
    tar = base / "input.tar"
    tar.write_bytes(source_tar(args.tar_from))
    results: dict = {}
    try:
        for round_number in range(args.rounds):
            order = tools if round_number % 2 == 0 else tools[::-1]
            bench_round(order, tar, args.depth, args.files, results)
    finally:
        for tool in tools:
            subprocess.run([*tool.argv, "shutdown", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    print(f"driver {args.driver}, {args.rounds} rounds, tar of {args.tar_from} ({tar_size(args.tar_from)}), "
          f"{args.files} files added; medians in ms")
    print(f"{'operation':<22} {'containers-storage':>19} {'layerstore':>11} {'ratio':>7}")
    for operation in dict.fromkeys(op for op, _ in results):
        peer = statistics.median(results[(operation, "containers-storage")]) * 1000
        ours = statistics.median(results[(operation, "layerstore")]) * 1000
        print(f"{operation:<22} {peer:>19.1f} {ours:>11.1f} {ours / peer:>7.2f}")
    return 0


def tar_size(path: str) -> str:
    total = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)
    return f"{total / 2**20:.0f} MiB of files"


if __name__ == "__main__":
    sys.exit(main())
