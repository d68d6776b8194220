"""Apply tar entries to a directory tree, inside it only (docs/security.md).

Every path is resolved by ``Resolver`` from the root's fd; the last component of a name
is never followed: an existing entry there is removed (a directory is emptied without
following anything inside it) before the new one is made with ``O_EXCL``/``mknod``/
``symlink``, so no write ever goes through a symlink. Directory times are set at the
end, after their contents.

A regular file's payload is referenced from the tar-split by its real path; when a
later entry removes or replaces that file, its bytes are first copied into the
tar-split (a blob), so the original stream can still be rebuilt exactly.

Whiteouts are stored as the driver reads them: "overlay" (0:0 character devices,
``trusted.overlay.opaque``), "delete" (applied by deleting), or "fuse-overlayfs" (the
kernel's form where the process may make it, else what fuse-overlayfs reads instead:
``.wh.NAME`` files for whiteouts; ``user.overlay.opaque``, else a ``.wh..wh..opq`` file,
for opaque directories).

A rootless process (``eventstore.rootless``) cannot give files other owners, make
device nodes, or set trusted.* and security.* xattrs; as containers-storage does in a
user namespace, it leaves files owned by itself and skips those nodes and xattrs. The
tar-split still records every header, so the layer's diff is the same tar.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator

from isal.isal_zlib import crc32

from eventstore.archive.ownership import NewInodes
from eventstore.archive.reader import Entry, TarReader
from eventstore.archive.resolve import NotADirectory, PathMissing, ResolveError, Resolver
from eventstore.archive.tarsplit import TarSplitWriter
from eventstore.archive.writers import FileWriters
from eventstore.rootless import is_rootless

MAX_PATH = 4096
MAX_NAME = 255
WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
AUFS_META = b".wh..wh."
OVERLAY_OPAQUE_XATTR = b"trusted.overlay.opaque"
UNPRIVILEGED_OPAQUE_XATTR = b"user.overlay.opaque"  # the kernel's with userxattr; fuse-overlayfs's
# overlayfs and fuse-overlayfs keep their own bookkeeping in these; a layer must not bring any
RESERVED_XATTRS = (b"trusted.overlay.", b"user.overlay.", b"user.fuseoverlayfs.")
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.", b"system.")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: regular files up to this size may be written by the writer threads (a copy of their
#: bytes waits in the queue); bigger ones are written by the reading thread
SMALL_FILE = 256 << 10
#: the mean time to create a file (over ``CREATES_MEASURED``) above which the writer
#: threads start: ~5 us on tmpfs, ~40 us on a quiet ext4, 250 us and more on one whose
#: journal is busy or whose allocator scans past recently freed inodes
SLOW_CREATE_NS = 150_000
CREATES_MEASURED = 32


class Refused(Exception):
    """The entry cannot be applied; the message says why (the caller names the entry)."""


def member_path(name: bytes, what: str = "name") -> list[bytes]:
    """The components of a member name inside the root ([] is the root itself).

    A leading ``/`` is dropped (contained, as GNU tar does); ``..`` anywhere is refused
    (as GNU tar does), since no layer needs it and it only serves escapes.
    """
    if b"\0" in name:
        raise Refused(f"NUL byte in the {what}")
    if len(name) > MAX_PATH:
        raise Refused(f"{what} is {len(name)} bytes long (the limit is {MAX_PATH})")
    comps = [c for c in name.split(b"/") if c and c != b"."]
    for comp in comps:
        if comp == b"..":
            raise Refused(f"'..' in the {what}")
        if len(comp) > MAX_NAME:
            raise Refused(f"a component of the {what} is longer than {MAX_NAME} bytes")
    return comps


class Extractor:
    """Applies the entries of one tar to ``root_fd`` ("overlay", "fuse-overlayfs" or
    "delete" whiteouts)."""

    def __init__(self, root_fd: int, whiteout_format: str, split: TarSplitWriter, owners=None,
                 onto_content: bool = False, writers: int = 0):
        """``owners``: an ``eventstore.idmap.Owners`` for an ID-mapped layer (the tar's
        ids are written as the host ids they map to), or None. ``writers`` > 0: once
        creating files turns out slow, small files are written by that many threads
        (only for a ``root_fd`` that starts empty: nothing there but what this tar
        makes; never for a rootless process, which keeps what it cannot give)."""
        self._owners = owners
        self._overlay = whiteout_format in ("overlay", "fuse-overlayfs")
        self._fuse = whiteout_format == "fuse-overlayfs"
        self._rootless = is_rootless()
        if self._rootless or onto_content:
            writers = 0
        self._split = split
        self._root_fd = root_fd
        # real paths this tar made, and their ancestors: an opaque marker hides what
        # lower layers put in a directory, not what this one did. Overlay marks the
        # directory instead, and needs them only when the tar applies onto a layer's
        # own content (applydiff): that content is "lower" than the tar too.
        self._onto_content = onto_content
        self._touched: set[bytes] | None = set() if onto_content or not self._overlay else None
        self.resolver = Resolver(root_fd, on_created=self._created)
        self._refs: dict[bytes, tuple[int, int, list[tuple[int, int]] | None]] = {}
        self._dir_times: dict[bytes, tuple[int, int]] = {}
        self._inodes = NewInodes()
        # with writers: every real path this tar has made or named (files in flight too)
        self._made: set[bytes] | None = set() if writers else None
        self._writer_threads = writers
        self._writers: FileWriters | None = None  # started when creates are slow
        self._creates = [0, 0]  # files created by this thread and their ns, since the last look
        self._fresh = False  # the entry being applied is independent of what is in flight

    def close(self) -> None:
        if self._writers is not None:
            self._writers.close()  # first: its threads use directory fds the resolver holds
        self.resolver.close()

    # --- dispatch ---------------------------------------------------------------------

    def apply(self, entry: Entry, reader: TarReader) -> None:
        writers = self._writers
        if writers is not None and writers.pending and self.resolver.will_close():
            writers.drain()  # trim closes directory fds that queued files are made in
        self.resolver.trim()
        comps = member_path(entry.name)
        if self._made is not None:
            self._fresh = self._independent(entry, comps)
            if not self._fresh and writers is not None and writers.pending:
                writers.drain()
        if not comps:
            self._root(entry)
            return
        if comps[0].startswith(AUFS_META) and comps != [OPAQUE_MARKER]:
            return  # aufs bookkeeping (.wh..wh.plnk/, .wh..wh.aufs): not layer content
        base = comps[-1]
        if base.startswith(WHITEOUT_PREFIX):
            try:
                parent_fd, parent_real = self.resolver.directory(comps[:-1], create=True)
            except NotADirectory:
                # "rm -rf d; echo > d" gives d, then d/.wh.x (umoci writes this): nothing
                # can be below a non-directory, so the whiteout has nothing to hide
                # (containers/storage skips it on ENOTDIR too)
                return
            self._whiteout(entry, parent_fd, parent_real, base)
            return
        parent_fd, parent_real = self.resolver.directory(comps[:-1], create=True)
        real = parent_real + b"/" + base if parent_real else base
        kind = entry.kind
        if kind == "file":
            self._file(entry, reader, parent_fd, base, real)
        elif kind == "dir":
            self._directory(entry, parent_fd, base, real)
        elif kind == "symlink":
            self._symlink(entry, parent_fd, base, real)
        elif kind == "hardlink":
            self._hardlink(entry, parent_fd, base, real)
        elif kind in ("chardev", "blockdev", "fifo"):
            self._node(entry, parent_fd, base, real)
        # "volume" labels carry nothing to extract
        if self._touched is not None:
            self._touch(real)
        if self._made is not None:
            self._made.add(real)

    def _independent(self, entry: Entry, comps: list[bytes]) -> bool:
        """True when applying ``entry`` cannot meet a file in flight: a new file,
        directory or symlink whose name no entry of this tar used, in a directory that
        is open already (its member path is its real path: no symlink on the way)."""
        if not comps or entry.kind not in ("file", "dir", "symlink"):
            return False
        base = comps[-1]
        if base.startswith(WHITEOUT_PREFIX) or comps[0].startswith(AUFS_META):
            return False
        parent = b"/".join(comps[:-1])
        if self.resolver.cached(parent) is None:
            return False
        return (parent + b"/" + base if parent else base) not in self._made

    def _created(self, real: bytes) -> None:
        """The resolver made a directory no entry names (a parent implied by a path)."""
        self._touch(real)
        if self._made is not None:
            self._made.add(real)

    def finish(self) -> None:
        """Set directory times, now that nothing more is written into them."""
        if self._writers is not None:
            self._writers.drain()
        for real, (atime, mtime) in self._dir_times.items():
            if not real:
                fd = self._root_fd
            else:
                try:
                    fd, _ = self.resolver.directory(real.split(b"/"), create=False,
                                                    follow=False)
                except ResolveError:
                    continue  # replaced or removed by a later entry
            _set_times(fd, None, atime, mtime)

    # --- entry kinds --------------------------------------------------------------------

    def _root(self, entry: Entry) -> None:
        if entry.kind != "dir":
            raise Refused("the entry would replace the layer's root directory")
        self._metadata_fd(entry, self._root_fd)
        self._inodes.forget(b"")
        self._dir_times[b""] = (_atime(entry), entry.mtime_ns)

    def _file(self, entry: Entry, reader: TarReader, parent_fd: int, base: bytes,
              real: bytes) -> None:
        if self._fresh and entry.segments is None and entry.size <= SMALL_FILE:
            if self._writers is not None:
                self._queue_file(entry, reader, parent_fd, base, real)
                return
            started = time.perf_counter_ns()
        else:
            started = 0
        mode = entry.mode & 0o7777
        plain = self._inodes.create_mode(mode)
        create_mode = 0o600 if plain is None else plain
        try:  # _create, inlined: this runs once per regular file
            fd = os.open(base, _NEW_FILE, create_mode, dir_fd=parent_fd)
            if started:
                self._measure_create(time.perf_counter_ns() - started)
        except FileExistsError:
            self._remove(parent_fd, base, real, None)
            fd = os.open(base, _NEW_FILE, create_mode, dir_fd=parent_fd)
        try:
            crc = 0
            if entry.segments is None:
                if entry.size:
                    for piece in reader.payload_pieces(entry.size):
                        crc = crc32(piece, crc)
                        _write_all(fd, piece)
                payload_id = self._split.file(real, entry.size, crc)
            else:
                for offset, length in entry.segments:
                    for piece in reader.payload_pieces(length):
                        crc = crc32(piece, crc)
                        offset += _pwrite_all(fd, piece, offset)
                os.ftruncate(fd, entry.real_size)  # the trailing hole, if any
                payload_id = self._split.sparse(real, entry.segments, crc)
            self._refs[real] = (payload_id, entry.size, entry.segments)
            chown = self._inodes.needs_chown(*self._ids(entry), parent_fd, real.rpartition(b"/")[0])
            self._metadata_fd(entry, fd, chown=chown, chmod=plain is None)
            _set_times(fd, None, _atime(entry), entry.mtime_ns)
        finally:
            os.close(fd)

    def _measure_create(self, elapsed_ns: int) -> None:
        """Start the writer threads once creating a file takes long on average: their
        waits then overlap. (Where creating is fast, threads only add hand-overs of
        the GIL, and are not started.)"""
        creates = self._creates
        creates[0] += 1
        creates[1] += elapsed_ns
        if creates[0] == CREATES_MEASURED:
            if creates[1] > CREATES_MEASURED * SLOW_CREATE_NS:
                self._writers = FileWriters(_write_new_file, workers=self._writer_threads)
            creates[0] = creates[1] = 0

    def _queue_file(self, entry: Entry, reader: TarReader, parent_fd: int, base: bytes,
                    real: bytes) -> None:
        """Record the file in the tar-split and hand its creation to the writers."""
        data = b"".join(reader.payload_pieces(entry.size)) if entry.size else b""
        self._refs[real] = (self._split.file(real, entry.size, crc32(data)), entry.size, None)
        mode = entry.mode & 0o7777
        plain = self._inodes.create_mode(mode)
        owner = self._ids(entry)
        chown = self._inodes.needs_chown(*owner, parent_fd, real.rpartition(b"/")[0])
        for name, _ in entry.xattrs:
            _check_xattr(name)
        job = (parent_fd, base, data, 0o600 if plain is None else plain,
               owner if chown else None, mode if plain is None else None,
               entry.xattrs, _atime(entry), entry.mtime_ns)
        self._writers.submit(job, (entry.name, entry.offset))

    def _directory(self, entry: Entry, parent_fd: int, base: bytes, real: bytes) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            st = os.lstat(base, dir_fd=parent_fd)
            if not stat.S_ISDIR(st.st_mode):
                self._remove(parent_fd, base, real, st)
                os.mkdir(base, 0o700, dir_fd=parent_fd)
        fd, _ = self.resolver.directory(real.split(b"/"), create=False, follow=False)
        chown = self._inodes.needs_chown(*self._ids(entry), parent_fd, real.rpartition(b"/")[0])
        self._metadata_fd(entry, fd, chown=chown)
        self._inodes.forget(real)
        self._dir_times[real] = (_atime(entry), entry.mtime_ns)

    def _symlink(self, entry: Entry, parent_fd: int, base: bytes, real: bytes) -> None:
        target = entry.linkname
        if b"\0" in target:
            raise Refused("NUL byte in the symlink target")
        if not target or len(target) >= MAX_PATH:
            raise Refused("symlink target is empty or longer than 4095 bytes")
        self._create(parent_fd, base, real,
                     lambda: os.symlink(target, base, dir_fd=parent_fd))
        self._metadata_at(entry, parent_fd, base, chmod=False)

    def _hardlink(self, entry: Entry, parent_fd: int, base: bytes, real: bytes) -> None:
        comps = member_path(entry.linkname, "hardlink target")
        if not comps:
            raise Refused("hardlink to the layer's root directory")
        shown = entry.linkname.decode("utf-8", "backslashreplace")
        try:
            source_fd, source_parent = self.resolver.directory(comps[:-1], create=False)
        except PathMissing:
            raise Refused(f"hardlink target {shown} does not exist") from None
        source = source_parent + b"/" + comps[-1] if source_parent else comps[-1]
        if source == real:
            if not _exists(parent_fd, base):
                raise Refused(f"hardlink target {shown} does not exist")
            return  # a link to itself: nothing to do
        try:
            st = os.lstat(comps[-1], dir_fd=source_fd)
        except FileNotFoundError:
            raise Refused(f"hardlink target {shown} does not exist") from None
        if stat.S_ISDIR(st.st_mode):
            raise Refused(f"hardlink target {shown} is a directory")

        def link() -> None:
            os.link(comps[-1], base, src_dir_fd=source_fd, dst_dir_fd=parent_fd,
                    follow_symlinks=False)
        try:
            self._create(parent_fd, base, real, link)
        except FileNotFoundError:  # the replaced entry held the target
            raise Refused(f"hardlink target {shown} was removed by this entry") from None

    def _node(self, entry: Entry, parent_fd: int, base: bytes, real: bytes) -> None:
        mode = entry.mode & 0o7777
        if entry.kind == "fifo":
            def make() -> bool:
                os.mkfifo(base, 0o600, dir_fd=parent_fd)
                return True
        else:
            kind = stat.S_IFCHR if entry.kind == "chardev" else stat.S_IFBLK
            try:
                device = os.makedev(entry.devmajor, entry.devminor)
            except (OverflowError, ValueError):
                raise Refused("device number out of range") from None

            def make() -> bool:
                try:
                    os.mknod(base, kind | 0o600, device, dir_fd=parent_fd)
                except PermissionError:
                    if self._rootless:  # skipped, as containers-storage does in a user namespace
                        return False
                    raise
                except OSError as err:
                    if err.errno != errno.EINVAL:  # the kernel holds 12-bit majors,
                        raise                      # 20-bit minors
                    raise Refused("device number out of range") from None
                return True
        try:
            if not self._create(parent_fd, base, real, make):
                return
        except OverflowError:
            raise Refused("device number out of range") from None
        self._metadata_at(entry, parent_fd, base, chmod=True, mode=mode)

    # --- whiteouts ----------------------------------------------------------------------

    def _whiteout(self, entry: Entry, parent_fd: int, parent_real: bytes, base: bytes) -> None:
        if base == OPAQUE_MARKER:
            if not self._overlay or self._onto_content:
                self._prune(parent_fd, None, parent_real, keep_touched=True)
            if self._fuse:
                _mark_opaque_for_fuse(parent_fd)
            elif self._overlay:
                _set_xattr_fd(parent_fd, OVERLAY_OPAQUE_XATTR, b"y")
            return
        if base.startswith(AUFS_META):
            return  # aufs bookkeeping below the root: nothing to apply either
        victim = base[len(WHITEOUT_PREFIX):]
        if victim in (b"", b".", b".."):
            raise Refused("whiteout names no entry (or '.'/'..')")
        real = parent_real + b"/" + victim if parent_real else victim
        if self._made is not None:
            self._made.add(real)
        if self._overlay:
            def make() -> None:
                os.mknod(victim, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
            try:
                self._create(parent_fd, victim, real, make)
            except PermissionError:
                if not self._fuse:
                    raise
                victim = self._whiteout_file(parent_fd, victim, real)
            self._chown(victim, entry, parent_fd)
            _set_times(parent_fd, victim, _atime(entry), entry.mtime_ns)
        else:
            try:
                st = os.lstat(victim, dir_fd=parent_fd)
            except FileNotFoundError:
                return
            self._remove(parent_fd, victim, real, st)

    def _whiteout_file(self, parent_fd: int, victim: bytes, real: bytes) -> bytes:
        """fuse-overlayfs's other form of a whiteout, for a process that may not make
        0:0 devices: an empty ``.wh.NAME`` file (what the tar itself carries); NAME
        itself goes, as a device would replace it. The file's name."""
        name = WHITEOUT_PREFIX + victim  # the tar entry's own name: never too long
        if _exists(parent_fd, victim):
            self._remove(parent_fd, victim, real, None)
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent_fd))
        return name

    # --- creating over, and removing, what is there --------------------------------

    def _create(self, parent_fd: int, base: bytes, real: bytes, make):
        """Run ``make`` (which fails with EEXIST when the name is taken); if the name
        is taken, remove what is there and run it once more."""
        try:
            return make()
        except FileExistsError:
            self._remove(parent_fd, base, real, None)
            return make()

    def _remove(self, parent_fd: int, name: bytes, real: bytes, st: os.stat_result | None
                ) -> None:
        if st is None:
            st = os.lstat(name, dir_fd=parent_fd)
        if stat.S_ISDIR(st.st_mode):
            self._prune(parent_fd, name, real, keep_touched=False)
            os.rmdir(name, dir_fd=parent_fd)
            self.resolver.forget(real)
            self._inodes.forget()
            prefix = real + b"/"
            for key in [k for k in self._dir_times if k == real or k.startswith(prefix)]:
                del self._dir_times[key]
        else:
            if real in self._refs:
                self._keep_payload(parent_fd, name, real)
            os.unlink(name, dir_fd=parent_fd)
        if self._touched is not None:
            self._touched.discard(real)

    def _prune(self, parent_fd: int, name: bytes | None, real: bytes, keep_touched: bool
               ) -> None:
        """Empty the directory ``name`` in ``parent_fd`` (``parent_fd`` itself when name
        is None), never following a symlink; with ``keep_touched`` keep what this tar
        made. Holds one directory fd at a time, whatever the depth."""
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd) if name is not None \
            else os.dup(parent_fd)
        stack = [(real, _list_dir(fd), None, False)]
        try:
            while stack:
                here, children, dir_name, remove_self = stack[-1]
                if children:
                    child, is_dir = children.pop()
                    child_real = here + b"/" + child if here else child
                    kept = keep_touched and child_real in self._touched
                    if is_dir:
                        down = os.open(child, _DIR_FLAGS, dir_fd=fd)
                        os.close(fd)
                        fd = down
                        stack.append((child_real, _list_dir(fd), child, not kept))
                    elif not kept:
                        if child_real in self._refs:
                            self._keep_payload(fd, child, child_real)
                        os.unlink(child, dir_fd=fd)
                    continue
                stack.pop()
                if not stack:
                    break
                up = os.open(b"..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                if remove_self:
                    os.rmdir(dir_name, dir_fd=fd)
                    self.resolver.forget(here)
                    self._inodes.forget()
        finally:
            os.close(fd)

    def _keep_payload(self, dir_fd: int, name: bytes, real: bytes) -> None:
        payload_id, size, segments = self._refs.pop(real)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            self._split.blob(payload_id, size, _read_payload(fd, size, segments))
        finally:
            os.close(fd)

    def _touch(self, real: bytes) -> None:
        touched = self._touched
        if touched is None:
            return
        while real and real not in touched:
            touched.add(real)
            real = real.rpartition(b"/")[0]

    # --- metadata -------------------------------------------------------------------

    def _ids(self, entry: Entry) -> tuple[int, int]:
        """The owner the entry's file gets: the tar's, or what the layer maps it to."""
        if self._owners is None:
            return entry.uid, entry.gid
        return self._owners.host(entry.uid, entry.gid, f"entry {_show(entry.name)!r}")

    def _metadata_fd(self, entry: Entry, fd: int, chown: bool = True, chmod: bool = True) -> None:
        """Owner, then mode (chown clears setuid), then xattrs (chown clears
        security.capability); ``chown``/``chmod`` False when the inode has them already."""
        if chown:
            self._chown(fd, entry)
        if chmod:
            os.fchmod(fd, entry.mode & 0o7777)
        for name, value in entry.xattrs:
            _check_xattr(name)
            try:
                os.setxattr(fd, name, value)
            except OSError as err:
                # rootless: the kernel keeps trusted.* and security.* from us (EPERM)
                if not (self._rootless and err.errno == errno.EPERM):
                    raise Refused(f"cannot set xattr {_show(name)}: {err.strerror}") from None

    def _metadata_at(self, entry: Entry, parent_fd: int, base: bytes, chmod: bool,
                     mode: int = 0) -> None:
        """The same for entries that must not be opened (symlinks, devices, fifos)."""
        self._chown(base, entry, parent_fd)
        if chmod:  # a node this entry just made, not a symlink
            os.chmod(base, mode, dir_fd=parent_fd)
        if entry.xattrs:
            path = b"/proc/self/fd/%d/%s" % (parent_fd, base)
            for name, value in entry.xattrs:
                _check_xattr(name)
                try:
                    os.setxattr(path, name, value, follow_symlinks=False)
                except OSError as err:
                    # the kernel allows user.* only on files and directories
                    if not (name.startswith(b"user.")
                            and err.errno in (errno.EPERM, errno.ENOTSUP)) \
                            and not (self._rootless and err.errno == errno.EPERM):
                        raise Refused(f"cannot set xattr {_show(name)}: "
                                      f"{err.strerror}") from None
        _set_times(parent_fd, base, _atime(entry), entry.mtime_ns)

    def _chown(self, target: int | bytes, entry: Entry, parent_fd: int | None = None) -> None:
        """Give ``target`` (an fd, or a name in ``parent_fd``) the entry's owner (or the
        host ids an ID-mapped layer maps it to); a rootless process keeps what it
        cannot give (EPERM, or EINVAL: no mapping)."""
        uid, gid = self._ids(entry)
        try:
            if parent_fd is None:
                os.fchown(target, uid, gid)
            else:
                os.chown(target, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as err:
            if not (self._rootless and err.errno in (errno.EPERM, errno.EINVAL)):
                raise


# --- helpers ---------------------------------------------------------------------------

def _write_new_file(job: tuple) -> None:
    """A writer thread's job: make a new file and give it its bytes and metadata, in
    the order the reading thread would (owner, mode, xattrs, times)."""
    parent_fd, base, data, create_mode, owner, mode, xattrs, atime, mtime = job
    fd = os.open(base, _NEW_FILE, create_mode, dir_fd=parent_fd)
    try:
        if data:
            _write_all(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
        if mode is not None:
            os.fchmod(fd, mode)
        for name, value in xattrs:
            _set_xattr_fd(fd, name, value)
        _set_times(fd, None, atime, mtime)
    finally:
        os.close(fd)


def _atime(entry: Entry) -> int:
    return entry.mtime_ns if entry.atime_ns is None else entry.atime_ns


def _set_times(fd: int, name: bytes | None, atime: int, mtime: int) -> None:
    try:
        if name is None:
            os.utime(fd, ns=(atime, mtime))
        else:
            os.utime(name, ns=(atime, mtime), dir_fd=fd, follow_symlinks=False)
    except (OverflowError, ValueError):
        raise Refused("modification time out of range") from None
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        raise Refused("modification time out of range") from None


def _check_xattr(name: bytes) -> None:
    if not name or b"\0" in name:
        raise Refused("empty xattr name or NUL in an xattr name")
    if name.startswith(RESERVED_XATTRS):
        raise Refused(f"xattr {_show(name)} is reserved for overlayfs")
    if not name.startswith(XATTR_NAMESPACES):
        raise Refused(f"xattr {_show(name)} has no known namespace")


def _set_xattr_fd(fd: int, name: bytes, value: bytes) -> None:
    try:
        os.setxattr(fd, name, value)
    except OSError as err:
        raise Refused(f"cannot set xattr {_show(name)}: {err.strerror}") from None


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _list_dir(fd: int) -> list[tuple[bytes, bool]]:
    with os.scandir(fd) as it:
        return [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it]


def _write_all(fd: int, data) -> None:
    written = os.write(fd, data)
    while written < len(data):  # a short write (a signal, a full pipe): the rest
        data = data[written:]
        written = os.write(fd, data)


def _pwrite_all(fd: int, data, offset: int) -> int:
    total = len(data)
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
    return total


def _read_payload(fd: int, size: int, segments: list[tuple[int, int]] | None
                  ) -> Iterator[bytes]:
    """The exact tar payload of a file this import wrote (data segments for sparse)."""
    for offset, length in segments if segments is not None else [(0, size)]:
        while length:
            chunk = os.pread(fd, min(length, 1 << 20), offset)
            if not chunk:
                return
            offset += len(chunk)
            length -= len(chunk)
            yield chunk


def _mark_opaque_for_fuse(dir_fd: int) -> None:
    """Make a directory opaque as fuse-overlayfs reads it: the kernel's xattr where the
    process may set it (root: the same bytes as the overlay driver's), else the one the
    kernel's unprivileged overlay reads too, else (no user xattrs on this filesystem) a
    ``.wh..wh..opq`` file."""
    for name in (OVERLAY_OPAQUE_XATTR, UNPRIVILEGED_OPAQUE_XATTR):
        try:
            os.setxattr(dir_fd, name, b"y")
            return
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP):
                raise Refused(f"cannot mark the directory opaque: {err.strerror}") from None
    os.close(os.open(OPAQUE_MARKER, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd))
