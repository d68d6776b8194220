"""Overlay mounts through the kernel's new mount API (fsopen, fsconfig, fsmount,
move_mount), called through ctypes.

Why: mount(2) reads at most one page of options, which caps a chain at about 128 layers
even with short relative paths. With the new API every lower dir is its own
``fsconfig(FSCONFIG_SET_STRING, "lowerdir+", path)`` call (Linux 6.8 and later), so the
option page is no limit and a chain reaches the kernel's own stack limit
(``OVERLAY_MAX_STACK``, 500 lower dirs), as containers-storage does.

It also gives *detached* mounts: ``fsmount`` returns a file descriptor of a mount that
is attached nowhere. The store reads a layer's whole view through one (``open_view``)
for ``changes`` and ``diff`` against another layer; when the descriptor is closed — or
the process dies — the mount is gone, and nothing is ever left in the mount table.

Everything here fails with ``MountAPIUnavailable`` on a kernel without the API or
without ``lowerdir+``; callers fall back to mount(2).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Sequence
from pathlib import Path

#: the lower dirs one overlay mount takes (the kernel's OVL_MAX_STACK)
OVERLAY_MAX_STACK = 500

# The new syscalls share one number on every architecture since Linux 5.2 (alpha adds 110).
_BASE = 110 if platform.machine() == "alpha" else 0
SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = (429 + _BASE, 430 + _BASE, 431 + _BASE, 432 + _BASE)

FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
#: fsconfig copies string values of at most this many bytes (longer paths go by fd)
STRING_LIMIT = 255
#: bytes overlay's option parser may take for escapes or separators
_SPECIAL = frozenset(b"\\,:")

_FLAG_ATTRS = {"ro": MOUNT_ATTR_RDONLY, "nosuid": MOUNT_ATTR_NOSUID, "nodev": MOUNT_ATTR_NODEV,
               "noexec": MOUNT_ATTR_NOEXEC}

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_available: bool | None = None


class MountAPIUnavailable(Exception):
    """This kernel has no new mount API, or its overlay has no ``lowerdir+``."""


class MountFailed(OSError):
    """A call of the new mount API failed; ``kernel_says`` holds the filesystem's own
    messages (overlay explains a refusal there)."""

    def __init__(self, code: int, call: str, kernel_says: str = ""):
        detail = f": {kernel_says}" if kernel_says else ""
        super().__init__(code, f"{call}: {errno.errorcode.get(code, code)} ({os.strerror(code)}){detail}")
        self.kernel_says = kernel_says


def _call(number: int, *args) -> int:
    result = _syscall(number, *args)
    if result < 0:
        return -ctypes.get_errno()
    return result


def _kernel_messages(fs_fd: int) -> str:
    """What the filesystem logged into the context (``e overlayfs: ...`` lines)."""
    lines = []
    while True:
        try:
            chunk = os.read(fs_fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        lines.append(chunk.decode("utf-8", "replace").strip())
    return "; ".join(line.split(" ", 1)[-1] for line in lines)


def available() -> bool:
    """True when overlay takes ``lowerdir+`` through fsconfig here (probed once)."""
    global _available
    if _available is None:
        fs_fd = _call(SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC)
        if fs_fd < 0:
            _available = False
        else:
            try:
                # an existing directory: the key is checked (EINVAL when unknown)
                # before anything is mounted, and nothing is, as no CMD_CREATE follows
                code = _call(SYS_FSCONFIG, fs_fd, FSCONFIG_SET_STRING, b"lowerdir+", b"/", 0)
                _available = code >= 0
            finally:
                os.close(fs_fd)
    return _available


class _Context:
    """One filesystem context being configured; closes what it opened."""

    def __init__(self) -> None:
        if not available():
            raise MountAPIUnavailable("no fsconfig lowerdir+ (Linux 6.8 or later)")
        fs_fd = _call(SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC)
        if fs_fd < 0:
            raise MountFailed(-fs_fd, "fsopen(overlay)")
        self.fd = fs_fd
        self._path_fds: list[int] = []

    def set(self, key: str, value: str | os.PathLike) -> None:
        text = os.fsencode(value)
        if key in ("lowerdir+", "upperdir", "workdir") and (len(text) > STRING_LIMIT or _SPECIAL & set(text)):
            # a path too long for fsconfig, or one overlay would unescape, is passed
            # as /proc/self/fd/N: overlay resolves it now, while the descriptor is open
            path_fd = os.open(value, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._path_fds.append(path_fd)
            text = f"/proc/self/fd/{path_fd}".encode()
        code = _call(SYS_FSCONFIG, self.fd, FSCONFIG_SET_STRING, key.encode(), text, 0)
        if code < 0:
            raise MountFailed(-code, f"fsconfig {key}={os.fsdecode(value)}", _kernel_messages(self.fd))

    def mount(self, attrs: int) -> int:
        """The mount as a detached-mount descriptor."""
        code = _call(SYS_FSCONFIG, self.fd, FSCONFIG_CMD_CREATE, None, None, 0)
        if code < 0:
            raise MountFailed(-code, "fsconfig create", _kernel_messages(self.fd))
        mount_fd = _call(SYS_FSMOUNT, self.fd, FSMOUNT_CLOEXEC, attrs)
        if mount_fd < 0:
            raise MountFailed(-mount_fd, "fsmount", _kernel_messages(self.fd))
        return mount_fd

    def close(self) -> None:
        for fd in [self.fd, *self._path_fds]:
            os.close(fd)
        self._path_fds = []


def mount_attrs(options: Sequence[str]) -> int:
    """MOUNT_ATTR_* flags from ``ro``, ``nosuid``, ``nodev``, ``noexec``."""
    attrs = 0
    for option in options:
        if option not in _FLAG_ATTRS:
            raise ValueError(f"mount option {option!r}: want one of {', '.join(_FLAG_ATTRS)}")
        attrs |= _FLAG_ATTRS[option]
    return attrs


def overlay_fd(lowers: Sequence[Path], upper: Path | None = None, work: Path | None = None, *,
               label: str = "", attrs: int = 0) -> int:
    """A detached overlay mount (its descriptor) of ``lowers`` (top first), with
    ``upper``/``work`` when given (read-only without)."""
    if len(lowers) > OVERLAY_MAX_STACK:
        raise MountFailed(errno.EINVAL, f"overlay of {len(lowers)} lower dirs",
                          f"the kernel stacks at most {OVERLAY_MAX_STACK}")
    context = _Context()
    try:
        context.set("source", "overlay")
        for lower in lowers:
            context.set("lowerdir+", lower)
        if upper is not None:
            context.set("upperdir", upper)
            context.set("workdir", work)
        if label:
            context.set("context", label)
        return context.mount(attrs)
    finally:
        context.close()


def mount_overlay(target: Path, lowers: Sequence[Path], upper: Path, work: Path, *, label: str = "",
                  attrs: int = 0) -> None:
    """Mount an overlay on ``target``: the mount(2) of a chain of any depth."""
    mount_fd = overlay_fd(lowers, upper, work, label=label, attrs=attrs)
    try:
        code = _call(SYS_MOVE_MOUNT, mount_fd, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH)
        if code < 0:
            raise MountFailed(-code, f"move_mount to {target}")
    finally:
        # the attached mount lives on in the tree; the descriptor would keep it busy
        os.close(mount_fd)


class View:
    """A read-only view of a layer as a container would see it, through a detached
    mount: ``path`` works with every os function while the view is open. Closing it
    (or the process ending) takes the mount away."""

    def __init__(self, mount_fd: int):
        self.fd = mount_fd
        self.path = Path(f"/proc/self/fd/{mount_fd}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "View":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_view(lowers: Sequence[Path]) -> View:
    """A read-only overlay of ``lowers`` (top first; at least two) that no mount table shows."""
    return View(overlay_fd(lowers, attrs=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID))
