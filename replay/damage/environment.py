"""Damage to the store's surroundings rather than its files: a full disk, a read-only
medium, a user who may not write the root, a creator that died a zombie, mounts inside
a layer. Each sets up the condition for the commands before the remedy, and registers
how to undo it (the remedy's ``undo`` step) and to clean up (always)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from replay.damage.bytes import Skip
from replay.damage.caserun import CaseRun
from replay.damage.commands import cli_argv
from replay.damage.fixture import child_env
from replay.damage.workload import layer_tar

SLACK = 1 << 20  # free bytes on the small file system before the filler takes them


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise Skip(f"mount {' '.join(args)}: {done.stderr.strip()}")


def _unmount(path: Path) -> None:
    from eventstore.mounts import MNT_DETACH, mount_points, umount

    if os.path.realpath(path) in mount_points():
        umount(path, MNT_DETACH)


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in files + dirs:
            total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def full_disk(run: CaseRun, left: int = 0) -> str:
    """Move the store onto a tmpfs just big enough, then fill it up but ``left`` bytes;
    undo: free the space."""
    disk_copy = run.root.with_name("root.on-disk")
    os.rename(run.root, disk_copy)
    run.root.mkdir()
    size = _tree_bytes(disk_copy) + SLACK
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(run.root))
    run.own_mounts.append(str(run.root))
    subprocess.run(["cp", "-a", "--", f"{disk_copy}/.", str(run.root)], check=True)
    shutil.rmtree(disk_copy)
    filler = run.root / "filler"
    _fill(filler, left)
    run.undo.append(filler.unlink)
    but = f" but {left // 1024} KiB" if left else ""
    return f"the store on a {size // 1024} KiB tmpfs, filled up{but} ({filler.stat().st_size} bytes of filler)"


def _fill(path: Path, left: int) -> None:
    """Write zeros to ``path`` until its file system has ``left`` bytes free (0: none)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if left:
            stat = os.statvfs(path)
            os.write(fd, b"\0" * max(0, stat.f_bavail * stat.f_frsize - left))
            return
        for chunk in (1 << 16, 4096, 512, 1):  # unbuffered: a failed write leaves nothing pending
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


def read_only_medium(run: CaseRun) -> str:
    """Commands before the remedy see the store through a read-only bind mount."""
    view = run.workdir / "read-only"
    view.mkdir()
    _mount("--bind", str(run.root), str(view))
    run.own_mounts.append(str(view))
    _mount("-o", "remount,ro,bind", str(view))
    run.command_root = view

    def undo() -> None:
        _unmount(view)
        run.command_root = run.root
    run.undo.append(undo)
    return f"commands see the store through a read-only bind mount at {view}"


def other_user(run: CaseRun) -> str:
    """Commands before the remedy run as user nobody, who may not even read the store
    (it is the owner's alone, 0700: docs/security.md): one line each, no traceback."""
    run.user = "nobody"
    run.tmpdir.chmod(0o1777)
    return "commands run as user nobody (setpriv), the store 0700"


def reader_user(run: CaseRun) -> str:
    """Commands before the remedy run as user nobody, whom the operator let read the
    store (group and others may read everything, write nothing): reads answer, writes
    fail with one line (DESIGN §3: reads work for a user who may not write)."""
    run.user = "nobody"
    run.tmpdir.chmod(0o1777)
    for folder, dirs, files in os.walk(run.root):
        os.chmod(folder, os.stat(folder).st_mode | 0o055)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o044)
    parent = run.root.parent
    while parent != parent.parent:
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
        parent = parent.parent
    return "commands run as user nobody (setpriv), who may read the store but not write it"


def zombie_creator(run: CaseRun) -> str:
    """A ``create`` killed after its intent, while its parent never reaps it: the
    creator is a zombie. The half-made layer is not acknowledged."""
    zombie = "0" * 8 + run.fixture.layers["leaf"].id[8:]  # an id no layer has
    run.values["zombie"] = zombie
    tar = run.workdir / "zombie.tar"
    tar.write_bytes(layer_tar("zombie", "zombie-" + zombie[:16]))
    trace = run.workdir / "zombie-trace"
    env = child_env(run.tmpdir) | {"LAYERSTORE_FAILPOINTS": "store.create.after-intent=sleep:300",
                                   "LAYERSTORE_FAILPOINT_TRACE": str(trace)}
    creator = cli_argv(run.fixture.driver, run.fixture.driver_modules, run.root,
                       ["create", "--id", zombie, str(tar)])
    parent_code = textwrap.dedent("""
        import os, subprocess, sys, time
        harness = os.getppid()
        child = subprocess.Popen(sys.argv[1:])  # never waited for: killed, it stays a zombie
        print(child.pid, flush=True)
        while os.getppid() == harness:  # until the harness reaps us, or dies
            time.sleep(0.5)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code, *creator], env=env, stdout=subprocess.PIPE,
                              text=True)

    def reap() -> None:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    run.cleanups.append(reap)
    child = int(parent.stdout.readline())
    _wait_for(lambda: trace.exists() and "store.create.after-intent" in trace.read_text(), "the creator's intent")
    os.kill(child, signal.SIGKILL)
    _wait_for(lambda: _state(child) == "Z", "the creator to become a zombie")
    return f"create --id {zombie[:12]} killed after its intent; its parent does not reap it (pid {child}: zombie)"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def mount_inside_layer(run: CaseRun, alias: str = "leaf") -> str:
    """A directory from outside the store bind-mounted over a directory inside the
    layer's data: removing the layer must not reach through it."""
    target = run.fixture.diff_dir(run.root, alias) / "usr" / "share" / alias
    return _bind_outside(run, target, f"inside layer {alias}'s data ({target.relative_to(run.root)})")


def mount_on_mount_point(run: CaseRun, alias: str = "leaf") -> str:
    """A directory from outside the store bind-mounted on the layer's mount point."""
    driver = run.fixture.driver_paths(run.root)
    target = Path(driver.mount_path(run.fixture.layers[alias].id))
    if not target.is_dir():
        raise Skip(f"the driver has no mount point directory for {alias}")
    return _bind_outside(run, target, f"on layer {alias}'s mount point ({target.relative_to(run.root)})")


def _bind_outside(run: CaseRun, target: Path, where: str) -> str:
    outside = run.workdir / "outside"
    outside.mkdir()
    keep = outside / "keep-me"
    keep.write_text("outside the store\n")
    run.outside[keep] = "outside the store\n"
    _mount("--bind", str(outside), str(target))
    run.own_mounts.append(str(target))
    run.undo.append(lambda: _unmount(target))
    return f"{outside} bind-mounted {where}"
