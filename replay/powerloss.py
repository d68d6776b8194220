"""Power-loss simulation: remember what was made durable, and at the crash keep only that.

Inside the child process the harness crashes, every file operation of the store goes
through this module (``os.open``, ``os.write``, ``os.pwrite``, ``os.ftruncate``,
``os.rename``/``os.replace``, ``os.unlink``/``os.remove``, ``os.mkdir``/``os.rmdir``, ``os.fsync``,
``os.fdatasync`` and the ``syncfs`` of ``eventstore.fsutil`` are interposed). It keeps,
for the store root:

- per file (an inode, told apart from a later file reusing its number): the contents
  as of its last ``fsync``/``fdatasync``;
- per directory: its entries as of its last ``fsync`` (a new entry, rename or unlink
  is durable only once its directory was synced, as POSIX promises and no more);
- ``syncfs`` (what drivers call before a layer is marked complete) makes everything
  under the root durable at once;
- the last ``write``/``pwrite``: where it went and how long it was.

At the failpoint chosen to crash, the mounts under the root are dropped (the machine
rebooted), the root is rewritten to its durable image and the process ends on the spot.
What the image keeps of what was *not* synced depends on the mode:

``drop``    nothing: every unsynced byte and directory change is lost (strict POSIX);
``random``  each unsynced 512-byte block of a file survives or not, and each directory
            keeps its synced or its current entries (as a whole: a journaling file
            system does not tear one directory), chosen by the seed;
``torn``    everything was written back except the last write, which is torn at a
            512-byte boundary (the rest of it lost, or zeros where it grew the file).

SQLite's own I/O cannot be seen from Python, so the read models (``index.db`` and its
``-wal``/``-shm``) are volatile here: they are deleted at the crash and the next open
rebuilds them from the log, which is a test of that rebuild in itself.

Approximations (documented in docs/crash-testing.md): a directory's durable entries
are remembered by its path and used only while the same directory (inode) is there, so
a directory renamed after its last sync comes back empty; data written by other
processes (``cp`` in the vfs driver) is seen only through ``syncfs``; metadata (modes,
times, xattrs) of a file that survives is kept as the kernel has it, and restored from
the last sync for one that is recreated.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from dataclasses import dataclass, field
from types import SimpleNamespace

from eventstore import faults
from eventstore.mounts import detach_all, mount_points

SECTOR = 512
VOLATILE = ("index.db", "index.db-wal", "index.db-shm")
MODES = ("drop", "random", "torn")
CRASH_EXIT_CODE = faults.CRASH_EXIT_CODE

# the real functions, before anything is interposed (helpers here use only these)
_real = SimpleNamespace(
    open=os.open, write=os.write, pwrite=os.pwrite, ftruncate=os.ftruncate, rename=os.rename,
    replace=os.replace, unlink=os.unlink, remove=os.remove, mkdir=os.mkdir, rmdir=os.rmdir, fsync=os.fsync,
    fdatasync=os.fdatasync,
)
_ = shutil  # imported first: shutil decides at import whether rmtree may use dir_fd

# (device, inode number, generation): a reused inode number is a new file, and btrfs
# numbers inodes per subvolume (each subvolume has its own st_dev)
Key = tuple[int, int, int]


@dataclass(frozen=True)
class Meta:
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Entry:
    kind: str  # "file", "dir", "symlink", "other"
    meta: Meta
    key: Key | None = None  # files and directories (None: a mount point, known by path)
    target: str = ""  # symlinks
    rdev: int = 0  # device nodes


def _xattrs(path_or_fd, follow: bool = False) -> tuple[tuple[str, bytes], ...]:
    found = []
    try:
        names = os.listxattr(path_or_fd, follow_symlinks=follow) if not isinstance(path_or_fd, int) \
            else os.listxattr(path_or_fd)
        for name in sorted(names):
            if isinstance(path_or_fd, int):
                found.append((name, os.getxattr(path_or_fd, name)))
            else:
                found.append((name, os.getxattr(path_or_fd, name, follow_symlinks=follow)))
    except OSError:
        pass
    return tuple(found)


def _meta(st: os.stat_result, xattrs: tuple = ()) -> Meta:
    return Meta(st.st_mode, st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns, xattrs)


@dataclass
class Tracker:
    """What is durable under ``root``; ``crash`` rewrites the root to it."""

    root: str
    mode: str = "drop"
    seed: int = 0
    generations: dict[tuple[int, int], int] = field(default_factory=dict)
    files: dict[Key, tuple[bytes, Meta]] = field(default_factory=dict)
    #: directory path -> (the directory's key, its durable entries)
    dirs: dict[str, tuple[Key | None, dict[str, Entry]]] = field(default_factory=dict)
    last_write: tuple[Key, int, int] | None = None

    def __post_init__(self) -> None:
        self.root = os.path.realpath(self.root)
        self.rng = random.Random(self.seed)
        self.mounts: set[str] = set()

    def refresh_mounts(self) -> None:
        """Read which paths under the root are mount points now. What is mounted is not
        ours (an overlay's merged view, a tmpfs); a btrfs subvolume is, though it has its
        own st_dev: mount points are known by path, not by device."""
        self.mounts = {p for p in mount_points(self.root) if p != self.root}

    def foreign(self, path: str) -> bool:
        """True when ``path`` is a mount point under the root or inside one."""
        return any(path == m or path.startswith(m + "/") for m in self.mounts)

    # --- where things are ------------------------------------------------------------------

    def _relative(self, path: str) -> str | None:
        """``path`` relative to the root ("" for the root), None outside it or volatile."""
        if path == self.root:
            return ""
        if not path.startswith(self.root + "/"):
            return None
        rel = path[len(self.root) + 1:]
        return None if rel in VOLATILE else rel

    def _fd_path(self, fd: int) -> str | None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return path[:-len(" (deleted)")] if path.endswith(" (deleted)") else path

    def key(self, st: os.stat_result) -> Key:
        return (st.st_dev, st.st_ino, self.generations.get((st.st_dev, st.st_ino), 0))

    def retire(self, st: os.stat_result) -> None:
        """The inode was freed: a file that gets its number later is another file."""
        inode = (st.st_dev, st.st_ino)
        self.generations[inode] = self.generations.get(inode, 0) + 1

    # --- making things durable -------------------------------------------------------------

    def entry(self, path: str, st: os.stat_result) -> Entry:
        if stat.S_ISREG(st.st_mode):
            return Entry("file", _meta(st, _xattrs(path)), key=self.key(st))
        if stat.S_ISDIR(st.st_mode):
            return Entry("dir", _meta(st, _xattrs(path)), key=self.key(st))
        if stat.S_ISLNK(st.st_mode):
            return Entry("symlink", _meta(st), target=os.readlink(path))
        return Entry("other", _meta(st, _xattrs(path)), rdev=st.st_rdev)

    def listing(self, rel: str) -> dict[str, Entry]:
        """The entries of directory ``rel`` as they are now (mount points as empty dirs)."""
        found = {}
        base = os.path.join(self.root, rel) if rel else self.root
        try:
            names = os.listdir(base)
        except OSError:
            return found
        for name in names:
            path = os.path.join(base, name)
            if not rel and name in VOLATILE:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if path in self.mounts:  # a mount point: what is under it is not ours
                found[name] = Entry("dir", _meta(st))
            else:
                found[name] = self.entry(path, st)
        return found

    def dir_key(self, rel: str) -> Key | None:
        try:
            st = os.lstat(os.path.join(self.root, rel) if rel else self.root)
        except OSError:
            return None
        return self.key(st)

    def sync_dir(self, rel: str) -> None:
        self.refresh_mounts()
        self.dirs[rel] = (self.dir_key(rel), self.listing(rel))

    def knows(self, key: Key) -> bool:
        """True when some durable record names ``key``."""
        return key in self.files or any(
            k == key or any(e.key == key for e in listing.values()) for k, listing in self.dirs.values())

    def sync_file(self, fd_or_path, st: os.stat_result) -> None:
        source = f"/proc/self/fd/{fd_or_path}" if isinstance(fd_or_path, int) else fd_or_path
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError:
            return
        self.files[self.key(st)] = (data, _meta(st, _xattrs(fd_or_path)))

    def sync_all(self) -> None:
        """Everything under the root is durable now (syncfs, and the start)."""
        self.refresh_mounts()
        pending = [""]
        self.dirs = {}
        while pending:
            rel = pending.pop()
            listing = self.listing(rel)
            self.dirs[rel] = (self.dir_key(rel), listing)
            for name, entry in listing.items():
                child = f"{rel}/{name}" if rel else name
                path = os.path.join(self.root, child)
                if entry.kind == "dir" and path not in self.mounts:
                    pending.append(child)
                elif entry.kind == "file":
                    self.sync_file(path, os.lstat(path))

    def synced_fd(self, fd: int) -> None:
        """``fd`` was fsync'd: its data (a file) or its entries (a directory) are durable."""
        st = os.fstat(fd)
        path = self._fd_path(fd)
        self.refresh_mounts()
        if path is None or self.foreign(path):
            return
        if stat.S_ISDIR(st.st_mode):
            rel = self._relative(path) if path else None
            if rel is not None:
                self.sync_dir(rel)
        elif stat.S_ISREG(st.st_mode) and path and self._relative(path) is not None:
            self.sync_file(fd, st)

    def wrote(self, fd: int, offset: int, length: int) -> None:
        path = self._fd_path(fd)
        if not length or not path or self._relative(path) is None:
            return
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            self.last_write = (self.key(st), offset, length)

    # --- the crash -------------------------------------------------------------------------

    def crash(self) -> None:
        """Lose power: drop the mounts, rewrite the root to its durable image, exit."""
        uninstall()
        detach_all(self.root)
        for name in VOLATILE:
            try:
                os.unlink(os.path.join(self.root, name))
            except FileNotFoundError:
                pass
        self.apply_image()
        os._exit(CRASH_EXIT_CODE)

    def apply_image(self) -> None:
        """Rewrite the root to what survives the power loss (in this tracker's mode)."""
        self.refresh_mounts()
        self._current: dict[str, dict[str, Entry]] = {}
        self._current_data: dict[Key, bytes] = {}
        self._read_current("")
        self._final: dict[Key, bytes] = {}
        self._restored: dict[Key, str] = {}
        self._restore_dir("", self.dir_key(""), fresh=False)

    def _read_current(self, rel: str) -> None:
        listing = self.listing(rel)
        self._current[rel] = listing
        for name, entry in listing.items():
            child = f"{rel}/{name}" if rel else name
            path = os.path.join(self.root, child)
            if entry.kind == "dir":
                self._read_current(child)
            elif entry.kind == "file" and entry.key not in self._current_data:
                with open(path, "rb") as f:
                    self._current_data[entry.key] = f.read()  # type: ignore[index]

    def _wanted(self, rel: str, key: Key | None, current: dict[str, Entry]) -> dict[str, Entry]:
        durable_key, durable = self.dirs.get(rel, (None, {}))
        if key is not None and durable_key != key:
            durable = {}  # made after its last sync: no entry of it is durable
        if self.mode == "torn" or (self.mode == "random" and self.rng.random() < 0.5):
            return current
        return durable

    def _restore_dir(self, rel: str, key: Key | None, fresh: bool) -> None:
        """Make directory ``rel`` (the directory ``key``; ``fresh``: just recreated,
        empty) hold what survives, recursively."""
        base = os.path.join(self.root, rel) if rel else self.root
        current = {} if fresh else self._current.get(rel, {})
        wanted = self._wanted(rel, key, current)
        for name, entry in current.items():
            if name not in wanted or not _same(entry, wanted[name]):
                _remove(os.path.join(base, name), entry)
        for name, want in sorted(wanted.items()):
            path = os.path.join(base, name)
            child = f"{rel}/{name}" if rel else name
            same = name in current and _same(current[name], want)
            if want.kind == "dir":
                if not same:
                    os.mkdir(path)
                    _set_meta(path, want.meta)
                self._restore_dir(child, want.key, fresh=not same)
            elif want.kind == "file":
                self._restore_file(path, want, same)
            elif not same and want.kind == "symlink":
                os.symlink(want.target, path)
                os.lchown(path, want.meta.uid, want.meta.gid)
            elif not same:
                os.mknod(path, want.meta.mode, want.rdev)
                _set_meta(path, want.meta)

    def _restore_file(self, path: str, want: Entry, same: bool) -> None:
        key = want.key
        assert key is not None
        data = self._content(key)
        if same:
            if self._current_data.get(key) != data:
                with open(path, "r+b") as f:
                    f.write(data)
                    f.truncate(len(data))
        elif key in self._restored:
            os.link(self._restored[key], path)
        else:
            with open(path, "xb") as f:
                f.write(data)
            _set_meta(path, self.files[key][1] if key in self.files else want.meta)
        self._restored[key] = path

    def _content(self, key: Key) -> bytes:
        if key not in self._final:
            self._final[key] = self._survivor(key)
        return self._final[key]

    def _survivor(self, key: Key) -> bytes:
        durable = self.files.get(key, (b"", None))[0]
        current = self._current_data.get(key)
        if current is None or current == durable or self.mode == "drop":
            return durable
        if self.mode == "random":
            return self._random_blocks(durable, current)
        if self.last_write is None or self.last_write[0] != key:
            return current
        return self._torn(durable, current, *self.last_write[1:])

    def _random_blocks(self, durable: bytes, current: bytes) -> bytes:
        size = self.rng.choice((len(durable), len(current)))
        out = bytearray(size)
        for start in range(0, size, SECTOR):
            old = durable[start:start + SECTOR]
            new = current[start:start + SECTOR]
            block = new if old != new and self.rng.random() < 0.5 else old
            out[start:start + len(block[:size - start])] = block[:size - start]
        return bytes(out)

    def _torn(self, durable: bytes, current: bytes, offset: int, length: int) -> bytes:
        end = offset + length
        first = -(-offset // SECTOR) * SECTOR  # the first sector boundary at or after offset
        cut = self.rng.choice([offset, *(b for b in range(first, end, SECTOR) if b > offset)])
        out = bytearray(current)
        for i in range(cut, min(end, len(out))):
            out[i] = durable[i] if i < len(durable) else 0
        if end >= len(current) and end > len(durable) and self.rng.random() < 0.5:
            del out[max(cut, len(durable)):end]  # the size did not make it either
        return bytes(out)


def _same(have: Entry, want: Entry) -> bool:
    if have.kind != want.kind:
        return False
    if have.kind == "file":
        return have.key == want.key
    if have.kind == "symlink":
        return have.target == want.target
    if have.kind == "other":
        return stat.S_IFMT(have.meta.mode) == stat.S_IFMT(want.meta.mode) and have.rdev == want.rdev
    return have.key is None or want.key is None or have.key == want.key


def _remove(path: str, entry: Entry) -> None:
    if entry.kind == "dir":
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _set_meta(path: str, meta: Meta) -> None:
    os.chown(path, meta.uid, meta.gid, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(meta.mode))
    for name, value in meta.xattrs:
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError:
            pass
    os.utime(path, ns=(meta.atime_ns, meta.mtime_ns), follow_symlinks=False)


# --- interposition ----------------------------------------------------------------------------

_tracker: Tracker | None = None
_saved: dict[str, object] = {}


def _lstat(path, dir_fd):
    try:
        return os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


def _open(path, flags, mode=0o777, *, dir_fd=None):
    new = bool(flags & os.O_CREAT) and _lstat(path, dir_fd) is None
    fd = _real.open(path, flags, mode, dir_fd=dir_fd)
    if new and _tracker is not None:
        _fresh_inode(os.fstat(fd))
    return fd


def _fresh_inode(st) -> None:
    # a new file or directory whose number a durable record names: the old one was
    # freed behind our back (by another process), so this is another object
    if _tracker.knows(_tracker.key(st)):
        _tracker.retire(st)


def _write(fd, data):
    written = _real.write(fd, data)
    if _tracker is not None:
        try:
            end = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            return written
        _tracker.wrote(fd, end - written, written)
    return written


def _pwrite(fd, data, offset):
    written = _real.pwrite(fd, data, offset)
    if _tracker is not None:
        _tracker.wrote(fd, offset, written)
    return written


def _ftruncate(fd, length):
    # nothing to remember: contents (sizes included) are compared with the last sync at the crash
    return _real.ftruncate(fd, length)


def _mkdir(path, mode=0o777, *, dir_fd=None):
    _real.mkdir(path, mode, dir_fd=dir_fd)
    st = _lstat(path, dir_fd)
    if st is not None and _tracker is not None:
        _fresh_inode(st)


def _rmdir(path, *, dir_fd=None):
    st = _lstat(path, dir_fd)
    _real.rmdir(path, dir_fd=dir_fd)
    if st is not None and _tracker is not None:
        _tracker.retire(st)


def _freed(st) -> None:
    if st is not None and _tracker is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        _tracker.retire(st)


def _unlinker(real):
    def unlink(path, *, dir_fd=None):
        st = _lstat(path, dir_fd)
        real(path, dir_fd=dir_fd)
        _freed(st)
    return unlink


def _renamer(real):
    def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        old = _lstat(dst, dst_dir_fd)
        moved = _lstat(src, src_dir_fd)
        real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        if old is not None and (moved is None or old.st_ino != moved.st_ino):
            _freed(old)
    return rename


def _syncer(real):
    def sync(fd):
        fd = fd if isinstance(fd, int) else fd.fileno()
        real(fd)
        if _tracker is not None:
            _tracker.synced_fd(fd)
    return sync


def _syncfs_wrapper(real):
    def syncfs(fd):
        real(fd)
        if _tracker is not None:
            _tracker.sync_all()
    return syncfs


def install(tracker: Tracker) -> None:
    """Route this process's file operations through ``tracker`` (see the module docstring)."""
    global _tracker
    from eventstore import fsutil

    _tracker = tracker
    wrappers = {
        "open": _open, "write": _write, "pwrite": _pwrite, "ftruncate": _ftruncate, "mkdir": _mkdir,
        "rmdir": _rmdir,
        "unlink": _unlinker(_real.unlink), "remove": _unlinker(_real.remove),
        "rename": _renamer(_real.rename), "replace": _renamer(_real.replace),
        "fsync": _syncer(_real.fsync), "fdatasync": _syncer(_real.fdatasync),
    }
    for name, wrapper in wrappers.items():
        _saved[name] = getattr(os, name)
        setattr(os, name, wrapper)
        if getattr(_real, name) in os.supports_dir_fd:
            os.supports_dir_fd.add(wrapper)
    _saved["fsutil._syncfs"] = fsutil._syncfs
    fsutil._syncfs = _syncfs_wrapper(fsutil._syncfs)


def uninstall() -> None:
    global _tracker
    from eventstore import fsutil

    for name, original in list(_saved.items()):
        if name == "fsutil._syncfs":
            fsutil._syncfs = original
        else:
            setattr(os, name, original)
    _saved.clear()
    _tracker = None


def arm(root: str | os.PathLike, mode: str, seed: int = 0) -> Tracker:
    """Track ``root`` from now on (all of it durable at this moment); ``crash`` on the
    returned tracker loses power."""
    if mode not in MODES:
        raise ValueError(f"power-loss mode must be one of {MODES}, not {mode!r}")
    os.makedirs(root, exist_ok=True)
    tracker = Tracker(os.fspath(root), mode, seed)
    tracker.sync_all()
    install(tracker)
    return tracker
