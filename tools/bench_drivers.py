#!/usr/bin/env python3
"""Storage drivers compared, same run: a 1,000-layer chain and an OCI image import, on
btrfs, vfs and overlay (docs/benchmarks.md has the figures, docs/drivers.md the choice).

Every measurement gets a fresh loop-mounted filesystem of the driver's natural kind
(btrfs for btrfs, ext4 for vfs and overlay), its image a sparse file on a tmpfs (or,
with --disk, in --workdir), so all three pay the same block layer and the store's
syncfs per layer; the space figure is the filesystem's own count (statvfs) before and
after, metadata included.

1. chain: a base layer of --files files of 4 KiB, then children each made from a tar
   that replaces one file (``state``), each the child of the one before: through the
   Python API (an engine embedding the store pays this) and through the CLI as pip
   installs it (one process per layer). overlay refuses chains deeper than 128 layers
   (``MAX_DEPTH``, as containers-storage): its chains restart at the base layer every
   125 layers; vfs and btrfs build one chain.
2. import: ``layerstore import-oci`` (the installed CLI) of a 3-layer image built with
   umoci: the system Python's standard library, then /usr/share/doc... below it, then a
   layer deleting and changing files of the first two.

Drivers alternate within each round so that noise hits all alike; medians are shown
(of --chain-rounds chains, of --rounds imports).

    python tools/bench_drivers.py [--layers 1000] [--chain-rounds 1] [--rounds 3]
                                  [--drivers vfs overlay btrfs] [--disk] [--workdir DIR] [--cli PATH]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from replay.loopfs import loop_filesystem  # noqa: E402

OVERLAY_CHAIN = 125  # below overlay's MAX_DEPTH of 128


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@contextmanager
def fresh_fs(driver: str, args):
    kind = "btrfs" if driver == "btrfs" else "ext4"
    with loop_filesystem(kind, args.fs_size, on_tmpfs=not args.disk, parent=str(args.workdir)) as fs:
        yield fs


# --- the chain ------------------------------------------------------------------------------

def parent_for(driver: str, index: int, ids: list[str]) -> str | None:
    if index == 0:
        return None
    if driver in ("overlay", "fuse-overlayfs") and index % OVERLAY_CHAIN == 0:
        return ids[0]  # a new chain from the base: overlay stacks at most 128 layers
    return ids[-1]


def chain_api(driver: str, args, base_tar: bytes) -> dict:
    from eventstore.store import LayerStore

    with fresh_fs(driver, args) as fs:
        before = used_bytes(fs)
        times, ids = [], []
        with LayerStore.open(fs / "store", driver) as store:
            for i in range(args.layers):
                tar = base_tar if i == 0 else tar_of({"state": f"layer {i}\n".encode()})
                started = time.perf_counter()
                ids.append(store.create(parent=parent_for(driver, i, ids), content=io.BytesIO(tar)))
                times.append(time.perf_counter() - started)
        return {"total": sum(times), "first": statistics.median(times[1:101]),
                "last": statistics.median(times[-100:]), "space": used_bytes(fs) - before}


def chain_cli(driver: str, args, base_tar: bytes) -> dict:
    with fresh_fs(driver, args) as fs:
        before = used_bytes(fs)
        root = fs / "store"
        times, ids = [], []
        for i in range(args.layers):
            tar = base_tar if i == 0 else tar_of({"state": f"layer {i}\n".encode()})
            argv = [args.cli, "--root", str(root), "--driver", driver, "create", "-"]
            parent = parent_for(driver, i, ids)
            if parent:
                argv[-1:-1] = ["--parent", parent]
            started = time.perf_counter()
            done = subprocess.run(argv, input=tar, capture_output=True, check=True)
            times.append(time.perf_counter() - started)
            ids.append(done.stdout.decode().strip())
        return {"total": sum(times), "first": statistics.median(times[1:101]),
                "last": statistics.median(times[-100:]), "space": used_bytes(fs) - before}


# --- the image ------------------------------------------------------------------------------

def build_image(work: Path) -> str:
    """A 3-layer OCI layout (umoci); its reference."""
    layout, bundle = work / "layout", work / "bundle"
    ref = f"{layout}:bench"

    def umoci(*argv: str) -> None:
        subprocess.run(["umoci", *argv], check=True, capture_output=True)

    umoci("init", "--layout", str(layout))
    umoci("new", "--image", ref)
    umoci("unpack", "--image", ref, str(bundle))
    rootfs = bundle / "rootfs"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib, rootfs / "usr" / "lib" / stdlib.name, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "__pycache__", "test", "idlelib"))
    umoci("repack", "--refresh-bundle", "--image", ref, str(bundle))
    shutil.copytree("/usr/share/doc", rootfs / "usr" / "share" / "doc", symlinks=True)
    umoci("repack", "--refresh-bundle", "--image", ref, str(bundle))
    lib = rootfs / "usr" / "lib" / stdlib.name
    for victim in ("email", "xml", "asyncio"):
        shutil.rmtree(lib / victim, ignore_errors=True)  # whiteouts
    (lib / "os.py").write_text("# replaced\n")
    umoci("repack", "--refresh-bundle", "--image", ref, str(bundle))
    shutil.rmtree(bundle)
    return ref


def import_image(driver: str, args, ref: str) -> dict:
    with fresh_fs(driver, args) as fs:
        before = used_bytes(fs)
        started = time.perf_counter()
        subprocess.run([args.cli, "--root", str(fs / "store"), "--driver", driver, "import-oci", ref],
                       check=True, capture_output=True)
        return {"total": time.perf_counter() - started, "space": used_bytes(fs) - before}


# --- running --------------------------------------------------------------------------------

def installed_cli(work: Path) -> str:
    """``layerstore`` from a non-editable ``pip install`` of this tree, as users get it."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(REPO)], check=True)
    return str(venv / "bin" / "layerstore")


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(results: dict, args) -> None:
    print(f"\n{args.layers}-layer chain ({args.files} files of 4 KiB in the base), medians of {args.chain_rounds}:")
    print("| driver | API total (s) | API per layer, first 100 / last 100 (ms) | CLI total (s) "
          "| CLI per layer, first 100 / last 100 (ms) | space (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for driver in args.drivers:
        api, cli = results[driver]["api"], results[driver]["cli"]
        note = " (chains of 125)" if driver in ("overlay", "fuse-overlayfs") else ""
        print(f"| {driver}{note} | {median_of(api, 'total'):.1f} | {median_of(api, 'first') * 1e3:.1f} / "
              f"{median_of(api, 'last') * 1e3:.1f} | {median_of(cli, 'total'):.1f} | "
              f"{median_of(cli, 'first') * 1e3:.1f} / {median_of(cli, 'last') * 1e3:.1f} | "
              f"{median_of(api, 'space') / 2**20:.1f} |")
    print(f"\nimport-oci of a 3-layer image (CLI), medians of {args.rounds}:")
    print("| driver | time (s) | space (MiB) |")
    print("|---|---:|---:|")
    for driver in args.drivers:
        runs = results[driver]["import"]
        print(f"| {driver} | {median_of(runs, 'total'):.2f} | {median_of(runs, 'space') / 2**20:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=1000)
    p.add_argument("--files", type=int, default=200, help="files of 4 KiB in the chain's base layer")
    p.add_argument("--rounds", type=int, default=3, help="imports per driver")
    p.add_argument("--chain-rounds", type=int, default=1, help="chains per driver (each API and CLI)")
    p.add_argument("--drivers", nargs="+", default=["vfs", "overlay", "btrfs"])
    p.add_argument("--disk", action="store_true", help="filesystem images on the disk, not a tmpfs")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--fs-size", default="4g")
    p.add_argument("--cli", help="a layerstore CLI to use (default: pip install this tree into a venv)")
    args = p.parse_args()
    if args.layers < 101:
        p.error("--layers must be over 100 (the first and last 100 are compared)")
    work = Path(tempfile.mkdtemp(prefix="bench-drivers-", dir=args.workdir))
    try:
        args.cli = args.cli or installed_cli(work)
        ref = build_image(work)
        base_tar = tar_of({f"base/file-{i:04d}": os.urandom(4096) for i in range(args.files)})
        results = {d: {"api": [], "cli": [], "import": []} for d in args.drivers}
        for round_number in range(max(args.rounds, args.chain_rounds)):
            for driver in args.drivers:
                done = []
                if round_number < args.chain_rounds:
                    for what, run in (("api", chain_api), ("cli", chain_cli)):
                        results[driver][what].append(run(driver, args, base_tar))
                        done.append(f"chain {what} {results[driver][what][-1]['total']:.1f} s")
                if round_number < args.rounds:
                    results[driver]["import"].append(import_image(driver, args, ref))
                    done.append(f"import {results[driver]['import'][-1]['total']:.2f} s")
                print(f"round {round_number + 1}, {driver}: {', '.join(done)}", flush=True)
        report(results, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
