"""Scratch filesystems for the crash harness, tests and benchmarks: a btrfs (or ext4)
made in a sparse image file and mounted through a loop device, gone again afterwards.

The image sits on its own tmpfs when we may mount one (so syncfs inside the btrfs does
not wait for a real disk; a power loss is simulated, not suffered) or on the disk
(``on_tmpfs=False``, for benchmarks that must pay for real writes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIN_SIZE = 256 << 20  # mkfs.btrfs refuses much less (two metadata copies, system chunks)


class ScratchUnavailable(Exception):
    """The scratch filesystem cannot be made here; the message says why."""


def parse_size(text: str) -> int:
    """``512m``, ``2g``, ``1073741824`` -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError:
        raise ScratchUnavailable(f"{what}: {argv[0]} is not installed") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise ScratchUnavailable(f"{what}: {lines[-1] if lines else f'exit {done.returncode}'}")


@contextmanager
def loop_btrfs(size: str = "2g", on_tmpfs: bool = True, parent: str | None = None) -> Iterator[Path]:
    """A fresh, empty btrfs, mounted; yields its mount point (see ``loop_filesystem``)."""
    with loop_filesystem("btrfs", size, on_tmpfs, parent) as mountpoint:
        yield mountpoint


MKFS = {"btrfs": ["mkfs.btrfs", "-q", "-f"], "ext4": ["mkfs.ext4", "-q", "-F", "-i", "4096"]}


@contextmanager
def loop_filesystem(fstype: str, size: str = "2g", on_tmpfs: bool = True, parent: str | None = None
                    ) -> Iterator[Path]:
    """A fresh, empty ``fstype`` (btrfs or ext4, the latter with an inode per 4 KiB),
    mounted; yields its mount point. On the way out (also when the body fails) every
    mount inside it is detached, it is unmounted (the loop device goes with it: ``mount
    -o loop`` sets autoclear) and its image is deleted."""
    mountpoint = mount_loop_filesystem(fstype, size, on_tmpfs, parent)
    try:
        yield mountpoint
    finally:
        remove_loop_filesystem(mountpoint)


def mount_loop_filesystem(fstype: str, size: str = "2g", on_tmpfs: bool = True, parent: str | None = None
                          ) -> Path:
    """Make and mount a loop filesystem (``loop_filesystem``); its mount point, which
    ``remove_loop_filesystem`` undoes, image and all. What a failure made is removed."""
    if os.geteuid() != 0:
        raise ScratchUnavailable("a loop-mounted filesystem needs root")
    work = Path(tempfile.mkdtemp(prefix=f"layerstore-{fstype}-", dir=parent))
    mountpoint = work / "mnt"
    try:
        if on_tmpfs:
            _run(["mount", "-t", "tmpfs", "-o", f"size={max(parse_size(size), MIN_SIZE)},mode=0755",
                  "tmpfs", str(work)], "a tmpfs for the image")
        image = work / f"{fstype}.img"
        mountpoint.mkdir()
        with open(image, "wb") as f:
            f.truncate(max(parse_size(size), MIN_SIZE))
        _run([*MKFS[fstype], str(image)], f"mkfs.{fstype}")
        _run(["mount", "-o", "loop", str(image), str(mountpoint)], f"mounting the {fstype} image")
        os.chmod(mountpoint, 0o755)
    except BaseException:
        remove_loop_filesystem(mountpoint)
        raise
    return mountpoint


def remove_loop_filesystem(mountpoint: Path) -> None:
    """Unmount a filesystem ``mount_loop_filesystem`` made (mounts inside it first, the
    tmpfs holding its image last) and delete its image."""
    work = mountpoint.parent
    _unmount_tree(work)  # the filesystem, what is mounted in it, and the tmpfs
    shutil.rmtree(work, ignore_errors=True)


def _unmount_tree(path: Path) -> None:
    """Unmount everything at or below ``path``, deepest first; detach (lazily) what is busy."""
    from eventstore.mounts import mount_points

    for _ in range(8):
        points = sorted(mount_points(path), key=len, reverse=True)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)


def remove_tree(path: str | os.PathLike) -> None:
    """``shutil.rmtree`` that also removes btrfs subvolumes, read-only ones included
    (an empty subvolume is removed by rmdir; a read-only one must be made writable
    first). Mounts below ``path`` are detached first. Errors are ignored, as cleanup."""
    from eventstore.drivers import btrfs_ioctl

    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    _unmount_tree(Path(path))
    try:
        on_btrfs = btrfs_ioctl.filesystem_type(path) == btrfs_ioctl.BTRFS_SUPER_MAGIC
    except OSError:
        on_btrfs = False
    for here, dirs, _files in os.walk(path) if on_btrfs else ():
        for name in dirs:
            child = os.path.join(here, name)
            try:
                if os.lstat(child).st_ino != btrfs_ioctl.FIRST_FREE_OBJECTID:
                    continue
                fd = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    if btrfs_ioctl.is_readonly(fd):
                        btrfs_ioctl.set_readonly(fd, False)
                finally:
                    os.close(fd)
            except OSError:
                continue  # not a subvolume (ENOTTY on other filesystems), or gone
    shutil.rmtree(path, ignore_errors=True)
