"""Resolve paths inside a root directory, never outside it.

Every lookup goes component by component from a directory fd with ``O_NOFOLLOW``;
string joins never reach the kernel. A symlink met in the middle of a path is followed
the way ``chroot`` would follow it — an absolute target restarts at the root, ``..``
stops at the root — so no path, however crafted, leaves the root (moby applies layers
in a chroot for the same reason). The last component of a name is never followed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINK_HOPS = 40
CACHE_LIMIT = 256  # kept across entries


def _hard_limit() -> int:
    """Directory fds one entry's lookups may cache: a quarter of what the process may
    open, at most 512 (beyond it a walk holds one uncached fd at a time)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 512
    return max(8, min(512, soft // 4))


class ResolveError(Exception):
    """A path cannot be resolved inside the root (the message says why)."""


class PathMissing(ResolveError):
    pass


class NotADirectory(ResolveError):
    """A component that must be a directory is something else (not a symlink)."""


class Resolver:
    """Directory fds by their real path under one root, opened once and cached.

    Cached fds stay valid until ``forget`` is told a path was removed or replaced; they
    are closed only in ``trim`` (between entries), so an fd handed out for the current
    entry is never closed under the caller's feet.
    """

    def __init__(self, root_fd: int, on_created=None):
        self.root_fd = root_fd
        self._cache: dict[bytes, int] = {}
        self._retired: list[int] = []
        self._on_created = on_created
        self._hard_limit = _hard_limit()

    def directory(self, comps: list[bytes], *, create: bool, follow: bool = True
                  ) -> tuple[int, bytes]:
        """The fd and real path of the directory ``comps`` names.

        ``create`` makes missing directories (0755, like every tar tool) up to the
        first symlink; ``follow=False`` refuses symlinks instead of following them.
        """
        if not comps:
            return self.root_fd, b""
        key = b"/".join(comps)
        fd = self._cache.get(key)
        if fd is not None:
            return fd, key
        return self._walk(comps, create, follow)

    def _walk(self, comps: list[bytes], create: bool, follow: bool) -> tuple[int, bytes]:
        pending = comps[::-1]
        real: list[bytes] = []
        fd = self.root_fd
        hops = 0
        # once the cache is full, the walk holds at most one uncached fd (``loose``) at
        # a time, so no depth of directories runs the process out of descriptors
        loose = None
        try:
            while pending:
                comp = pending.pop()
                if comp in (b"", b"."):
                    continue
                if comp == b"..":  # only symlink targets bring these
                    if real:
                        real.pop()
                    step = self._cache.get(b"/".join(real)) if real else self.root_fd
                    opened = step is None
                    if opened:  # the real parent of a real directory below the root
                        step = os.open(b"..", _DIR_FLAGS, dir_fd=fd)
                    loose = _swap(loose, step if opened else None)
                    fd = step
                    continue
                path = b"/".join(real) + b"/" + comp if real else comp
                step = self._cache.get(path)
                if step is None:
                    try:
                        target = self._open_step(fd, comp, path, create)
                    except PathMissing as err:
                        if hops:
                            raise PathMissing(f"{err} (reached through a symlink; tar entries "
                                              "do not create directories behind symlinks)") from None
                        raise
                    if isinstance(target, bytes):
                        hops += 1
                        if not follow:
                            raise ResolveError(f"{_show(path)} is a symlink")
                        if hops > MAX_SYMLINK_HOPS:
                            raise ResolveError(f"too many levels of symlinks at {_show(path)}")
                        # a symlink may lead to existing directories only: no tar entry
                        # makes directories appear at a link's (possibly dangling) target
                        create = False
                        if target.startswith(b"/"):
                            real, fd = [], self.root_fd
                            loose = _swap(loose, None)
                        pending.extend(target.split(b"/")[::-1])
                        continue
                    step = target
                    if len(self._cache) < self._hard_limit:
                        self._cache[path] = step
                        loose = _swap(loose, None)
                    else:
                        loose = _swap(loose, step)
                else:
                    loose = _swap(loose, None)
                fd = step
                real.append(comp)
        except BaseException:
            _swap(loose, None)
            raise
        if loose is not None:
            self._retired.append(loose)  # valid for the caller until the next trim
        return fd, b"/".join(real)

    def _open_step(self, fd: int, comp: bytes, path: bytes, create: bool) -> int | bytes:
        """An fd for the directory ``comp`` in ``fd``, or a symlink's target."""
        try:
            return os.open(comp, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise PathMissing(f"{_show(path)} does not exist") from None
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.lstat(comp, dir_fd=fd)
            if not stat.S_ISLNK(st.st_mode):
                raise NotADirectory(f"{_show(path)} is not a directory") from None
            target = os.readlink(comp, dir_fd=fd)
            if not target:
                raise PathMissing(f"{_show(path)} is an empty symlink") from None
            return target
        os.mkdir(comp, 0o700, dir_fd=fd)
        new = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        os.fchmod(new, 0o755)  # exact mode whatever the umask
        if self._on_created is not None:
            self._on_created(path)
        return new

    def cached(self, path: bytes) -> int | None:
        """The fd of the directory at real path ``path`` if it is open already (a real
        path has no symlink in it: nothing is looked up to answer)."""
        return self._cache.get(path) if path else self.root_fd

    def will_close(self) -> bool:
        """True when the next ``trim`` closes fds (a caller's threads may hold them)."""
        return bool(self._retired) or len(self._cache) > min(CACHE_LIMIT, self._hard_limit)

    def remember(self, path: bytes, fd: int) -> None:
        """Cache the fd of a directory just made at real path ``path`` (takes it over)."""
        old = self._cache.pop(path, None)
        if old is not None:
            self._retired.append(old)
        self._cache[path] = fd

    def forget(self, path: bytes) -> None:
        """``path`` (and everything below it) was removed or replaced."""
        prefix = path + b"/"
        stale = [key for key in self._cache if key == path or key.startswith(prefix)]
        for key in stale:
            self._retired.append(self._cache.pop(key))

    def trim(self) -> None:
        """Close retired fds and keep the cache small; call between entries only."""
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()
        keep = min(CACHE_LIMIT, self._hard_limit)
        if len(self._cache) > keep:
            for key in list(self._cache)[:len(self._cache) - keep // 2]:
                os.close(self._cache.pop(key))

    def close(self) -> None:
        self.trim()
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()


def _swap(old: int | None, new: int | None) -> int | None:
    """Close the walk's previous uncached fd, keep the new one."""
    if old is not None and old != new:
        os.close(old)
    return new


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace") or "/"


# --- opening files below a root for reading (export) --------------------------------

_SYS_OPENAT2 = 437  # the same number on every architecture Linux added it to
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_works: bool | None = None


def open_beneath(root_fd: int, path: bytes, flags: int) -> int:
    """Open ``path`` below ``root_fd`` with no symlink anywhere on the way (the last
    component included); openat2 where the kernel has it, else a component walk."""
    global _openat2_works
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW
    if _openat2_works is not False:
        how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(_SYS_OPENAT2, root_fd, path, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            _openat2_works = True
            return fd
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
            raise OSError(err, os.strerror(err), path)
        _openat2_works = False  # seccomp or an old kernel: walk instead
    comps = [c for c in path.split(b"/") if c not in (b"", b".")]
    if not comps or b".." in comps:
        raise OSError(errno.EINVAL, "bad path", path)
    fd = root_fd
    try:
        for comp in comps[:-1]:
            parent, fd = fd, os.open(comp, _DIR_FLAGS, dir_fd=fd)
            if parent != root_fd:
                os.close(parent)
        return os.open(comps[-1], flags, dir_fd=fd)
    finally:
        if fd != root_fd:
            os.close(fd)
