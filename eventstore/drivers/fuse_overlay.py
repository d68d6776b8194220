"""The fuse-overlayfs driver: the overlay driver's layout, mounted by the ``fuse-overlayfs``
program instead of the kernel's overlayfs, for users without CAP_SYS_ADMIN in the
initial user namespace (Podman's rootless default).

Everything but mounting is the overlay driver's (this class is a subclass): the same
``<id>/{diff,work,merged,link,lower}`` and ``l/`` short links, in the same home
directory (``<root>/overlay``), so a store moves between the two drivers by naming the
other one in ``<root>/driver`` once nothing is mounted (docs/drivers.md).

Decisions, and why:

- the mount is ``fuse-overlayfs -o lowerdir=l/..:l/..,upperdir=<id>/diff,workdir=<id>/work
  <merged>`` run with home as its working directory: the short relative paths the
  overlay driver falls back to for long chains are used always, so argv stays short
  whatever the depth. fuse-overlayfs splits lowerdir and upperdir at ``:`` with no
  escape, and makes upperdir absolute first: a home whose path holds a ``:`` is refused.
  The program daemonizes once the mount is up; each mounted layer is one fuse-overlayfs
  process until it is unmounted.
- unmount: ``umount2`` when the process is root where the mount lives (the initial
  namespace, or the user namespace ``unshare --map-root-user`` made); otherwise the
  setuid ``fusermount3 -u`` (or ``fusermount -u``), which is how FUSE lets a user undo
  what they mounted. Busy mounts are retried as overlay's are.
- a FUSE mount whose daemon died (killed, OOM) stays in the mount table but answers
  every call with ENOTCONN: ``is_mounted`` says no, so the store resets its count, and
  the next ``mount`` (or ``remove``) unmounts the dead one first. Whether the daemon
  lives is read from /proc (a fuse-overlayfs process whose mount point is this one),
  never by touching the mount: a stopped or stuck daemon makes every call on its mount
  wait, and recovery must not hang on it.
- whiteouts: ``whiteout_format = "fuse-overlayfs"``: as root, byte for byte the
  overlay driver's (0:0 devices, ``trusted.overlay.opaque``); rootless, 0:0 devices
  where the kernel allows them (5.8 and later) else ``.wh.NAME`` files, and
  ``user.overlay.opaque`` for opaque directories (read by fuse-overlayfs and by the
  kernel's own unprivileged overlay) else a ``.wh..wh..opq`` file. fuse-overlayfs
  reads every one of these forms (``eventstore.archive.extract`` writes them).
- /dev/fuse must be openable: machines without udev leave it 0600 (root only) where
  distributions ship 0666, and the error says so rather than fuse's "cannot mount".
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from eventstore import faults
from eventstore.mounts import mount_points
from eventstore.drivers.overlay import OverlayDriver
from eventstore.errors import DriverError
from eventstore.retry import on_ebusy

PROGRAM = "fuse-overlayfs"
FUSE_DEVICE = "/dev/fuse"
FUSERMOUNTS = ("fusermount3", "fusermount")
MOUNT_TIMEOUT = 60.0  # seconds fuse-overlayfs may take to bring a mount up



def fuse_device_problem(device: str = FUSE_DEVICE) -> str | None:
    """None when this process can open the FUSE device, else exactly why not."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{device} does not exist (is the fuse module loaded?)"
    except OSError as err:
        try:
            mode = f"mode {stat.S_IMODE(os.stat(device).st_mode):04o}"
        except OSError:
            mode = "its mode unknown"
        return (f"cannot open {device}: {err.strerror} ({mode}; without udev it stays 0600, "
                f"distributions ship it 0666: chmod 0666 {device})")
    os.close(fd)
    return None


def _fusermount() -> str | None:
    return next((p for p in map(shutil.which, FUSERMOUNTS) if p), None)


def _escape(option: str) -> str:
    # libfuse splits -o at "," and undoes a backslash before one
    return option.replace("\\", "\\\\").replace(",", "\\,")


class FuseOverlayDriver(OverlayDriver):
    """Overlay's layout, mounted through fuse-overlayfs."""

    name = "fuse-overlayfs"
    home_name = "overlay"
    whiteout_format = "fuse-overlayfs"
    own_fstypes = ("fuse.fuse-overlayfs",)

    @classmethod
    def supported(cls, home: Path) -> str | None:
        if shutil.which(PROGRAM) is None:
            return f"{PROGRAM} is not installed (Debian: apt-get install fuse-overlayfs)"
        problem = fuse_device_problem()
        if problem:
            return problem
        if os.geteuid() != 0 and _fusermount() is None:
            return "fusermount3 is not installed (a user needs it to mount FUSE filesystems)"
        if ":" in str(Path(home).absolute()):
            return f"{home}: fuse-overlayfs cannot use a path holding ':' (it splits its dirs at ':')"
        return _probe_mount(Path(home).absolute().parent)

    # --- mounting --------------------------------------------------------------------

    def mount(self, layer_id: str, mount_label: str = "") -> Path:
        """Mount with fuse-overlayfs (``mount_label`` is not supported by FUSE: ignored)."""
        merged = self.mount_path(layer_id)
        layer = self._existing_dir(layer_id)
        target = _resolved(merged)
        if target in mount_points():
            if _daemon_serving(target):
                return merged
            self._peel_mounts(layer_id)  # its daemon is gone: clear the dead mount first
        problem = fuse_device_problem()
        if problem:
            raise DriverError(f"layer {layer_id}: cannot mount: {problem}")
        if ":" in layer_id or ":" in os.path.realpath(self.home):
            raise DriverError(f"layer {layer_id}: fuse-overlayfs cannot use a path holding ':' "
                              f"({self.home}/{layer_id}/diff)")
        self._lower_diff_dirs(layer_id, layer)  # a parent's link missing: say so, before fuse-overlayfs
        lowers = self._read_lower(layer) or [f"{layer_id}/empty"]
        options = ",".join(_escape(o) for o in (
            "lowerdir=" + ":".join(lowers), f"upperdir={layer_id}/diff", f"workdir={layer_id}/work"))
        faults.point("driver.fuse-overlayfs.mount")
        _run_mount(self.home, options, Path(target), f"layer {layer_id}")
        return merged

    def unmount(self, layer_id: str) -> None:
        faults.point("driver.fuse-overlayfs.unmount")
        self._peel_mounts(layer_id)

    def _unmount_once(self, layer_id: str, merged: bytes) -> bool:
        """Unmount the top mount on ``merged``; False when nothing was mounted there."""
        if os.geteuid() == 0:  # root where the mount lives: the overlay driver's umount2
            return super()._unmount_once(layer_id, merged)
        target = _resolved(Path(os.fsdecode(merged)))
        if target not in mount_points():
            return False

        @on_ebusy(self.unmount_timeout)
        def attempt() -> None:
            reason = _fusermount_unmount(target)
            if reason is not None and "busy" in reason:
                raise OSError(errno.EBUSY, reason)
            if reason is not None:
                raise DriverError(f"layer {layer_id}: unmount failed: {reason}")

        try:
            attempt()
        except OSError:
            raise DriverError(
                f"layer {layer_id}: mount still busy after {self.unmount_timeout:g}s "
                f"(a process has files or its working directory in {target})"
            ) from None
        return True

    def is_mounted(self, layer_id: str) -> bool:
        target = _resolved(self.mount_path(layer_id))
        return target in mount_points() and _daemon_serving(target)

    def status(self) -> dict[str, str]:
        return {**super().status(), "program": shutil.which(PROGRAM) or ""}


def _resolved(merged: Path) -> str:
    """``merged`` with symlinks resolved, as mountinfo lists it, without a syscall on
    ``merged`` itself (a call on a FUSE mount whose daemon is stuck waits for it)."""
    return os.path.join(os.path.realpath(merged.parent), merged.name)


def _daemon_serving(target: str) -> bool:
    """True when a fuse-overlayfs process has mount point ``target`` (we start every
    daemon with the resolved path; a zombie's cmdline is empty)."""
    wanted = os.fsencode(target)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if argv[0].endswith(PROGRAM.encode()) and wanted in argv[1:]:
            return True
    return False


def _run_mount(home: Path, options: str, target: Path, what: str) -> None:
    """Run fuse-overlayfs in ``home`` (relative paths in ``options`` resolve there);
    it returns once the mount is up and leaves its daemon behind."""
    argv = [PROGRAM, "-o", options, str(target)]
    try:
        done = subprocess.run(argv, cwd=home, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=MOUNT_TIMEOUT)
    except FileNotFoundError:
        raise DriverError(f"{what}: {PROGRAM} is not installed") from None
    except subprocess.TimeoutExpired:
        raise DriverError(f"{what}: {PROGRAM} did not mount within {MOUNT_TIMEOUT:g}s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise DriverError(f"{what}: {PROGRAM} failed: {lines[-1] if lines else f'exit {done.returncode}'}")


def _fusermount_unmount(target: str) -> str | None:
    """``fusermount3 -u target``; None on success, else its message."""
    program = _fusermount()
    if program is None:
        return "fusermount3 is not installed"
    done = subprocess.run([program, "-u", target], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def _unmount_probe(target: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
    else:
        _fusermount_unmount(str(target))


def _probe_mount(base: Path) -> str | None:
    """None when fuse-overlayfs can really mount next to ``base``, else why not."""
    base = next(p for p in (base, *base.parents) if p.is_dir())
    try:
        probe = Path(tempfile.mkdtemp(prefix=".layerstore-fuse-probe-", dir=base))
    except OSError as err:
        return f"cannot make a test directory in {base}: {err.strerror}"
    merged = probe / "merged"
    try:
        for name in ("lower", "upper", "work", "merged"):
            (probe / name).mkdir()
        (probe / "lower" / "seen").write_bytes(b"")
        _run_mount(probe, "lowerdir=lower,upperdir=upper,workdir=work", merged, "a test mount")
        try:
            visible = (merged / "seen").exists()
        finally:
            _unmount_probe(merged)
        return None if visible else f"a test {PROGRAM} mount in {base} did not show its lower dir"
    except DriverError as err:
        return str(err)
    except OSError as err:
        return f"a test {PROGRAM} mount in {base} failed: {err.strerror or err}"
    finally:
        if os.path.realpath(merged) not in mount_points():  # never delete through a mount
            shutil.rmtree(probe, ignore_errors=True)
