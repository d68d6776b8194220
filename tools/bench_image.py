"""Images for the import benchmarks (tools/bench_oci.py), built the way real ones are.

``debian``: Debian bookworm in four layers, each an ``umoci repack`` of the root file
system after one more step, as a Dockerfile would make them (needs mmdebstrap and a
Debian mirror; ~2 minutes once, then cached):

1. ``mmdebstrap --variant=minbase`` (apt's lists and caches left out, as images do);
2. ``apt-get install python3``;
3. ``apt-get install perl ca-certificates``;
4. an application: 4,000 small files in 200 directories (a node_modules-like tree).

``host``: no network: four layers from this machine's directories (the Python standard
library, /usr/share/perl, /usr/include, the same application tree).

    python tools/bench_image.py debian|host DIR      # prints DIR:TAG
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

TAG = "bench"


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def app_tree(root: Path) -> None:
    """4,000 small files in 200 directories, like an application's dependencies."""
    for d in range(200):
        sub = root / "srv" / "app" / "node_modules" / f"pkg{d:03d}" / "lib"
        sub.mkdir(parents=True)
        for f in range(20):
            (sub / f"mod{f:02d}.js").write_text(
                f"module.exports = {{ id: {d * 100 + f} }};\n" * (1 + (d + f) % 40))


def debian_snapshots(work: Path) -> list[Path]:
    """Root file systems after each install step, as tars (mmdebstrap hooks)."""
    out = [work / f"{i}.tar" for i in (1, 2, 3)]
    tar = 'tar -C "$1" --one-file-system --numeric-owner --xattrs --exclude=./var/lib/apt/lists --exclude=./var/cache/apt -cf'
    install = 'chroot "$1" apt-get install -y --no-install-recommends'
    subprocess.run([
        "mmdebstrap", "--variant=minbase", "--quiet",
        f"--customize-hook={tar} {out[0]} .",
        f"--customize-hook={install} python3",
        f"--customize-hook={tar} {out[1]} .",
        f"--customize-hook={install} perl ca-certificates",
        f"--customize-hook={tar} {out[2]} .",
        "bookworm", "/dev/null"], check=True)
    return out


def host_snapshots(work: Path) -> list[Path]:
    """The same shape without a network: three growing trees of this machine's files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    steps = [[stdlib], [stdlib, Path("/usr/share/perl")], [stdlib, Path("/usr/share/perl"), Path("/usr/include")]]
    out = []
    for i, dirs in enumerate(steps, 1):
        path = work / f"{i}.tar"
        subprocess.run(["tar", "-cf", str(path), "--numeric-owner", "--exclude=site-packages",
                        "--exclude=dist-packages", *[str(d) for d in dirs if d.is_dir()]],
                       check=True, stderr=subprocess.DEVNULL)
        out.append(path)
    return out


def layer_image(layout: Path, snapshots: list[Path], work: Path) -> None:
    """One layer per snapshot (the difference from the one before: ``--refresh-bundle``
    makes the next repack compare with this one), then the app."""
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{TAG}")
    bundle = work / "bundle"
    umoci("unpack", "--image", f"{layout}:{TAG}", str(bundle))
    rootfs = bundle / "rootfs"
    for snapshot in snapshots:
        for child in rootfs.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        subprocess.run(["tar", "-xpf", str(snapshot), "--numeric-owner", "--xattrs", "-C", str(rootfs)],
                       check=True)
        umoci("repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", str(bundle))
    app_tree(rootfs)
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", str(bundle))
    umoci("gc", "--layout", str(layout))


def build(kind: str, layout: Path) -> str:
    """The image ``kind`` at ``layout`` (built unless it is there); its DIR:TAG."""
    if not (layout / "index.json").exists():
        work = Path(tempfile.mkdtemp(prefix="bench-image-"))
        try:
            partial = layout.with_name(layout.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            snapshots = debian_snapshots(work) if kind == "debian" else host_snapshots(work)
            layer_image(partial, snapshots, work)
            os.rename(partial, layout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return f"{layout}:{TAG}"


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("debian", "host"):
        sys.exit(__doc__)
    print(build(sys.argv[1], Path(sys.argv[2])))
