"""The overlay driver: the kernel's overlayfs, in the containers-storage / iSulad layout.

    <home>/<id>/diff     the layer's own files; the upper dir when it is mounted
    <home>/<id>/work     overlay's scratch dir (must sit on diff's filesystem)
    <home>/<id>/merged   where the layer is mounted
    <home>/<id>/link     the layer's short name: 26 characters of [A-Z0-9]
    <home>/<id>/lower    ``l/<parent short>:l/<grandparent short>:...``; absent for a base layer
    <home>/<id>/empty    base layers only: the lower dir of their mount
    <home>/l/<short>     symlink to ``../<id>/diff``

Decisions, and why:

- overlay wants at least one lower dir, so a layer without a parent is mounted over
  its own empty ``empty`` dir. It lives inside the layer (not shared in home) so that
  every byte of a layer sits under ``<home>/<id>`` and ``remove`` leaves nothing behind.
- mounts go through the kernel's new mount API where it has overlay's ``lowerdir+``
  (Linux 6.8+; ``eventstore.mountapi``): one fsconfig call per lower dir, so a chain
  reaches the kernel's stack limit, ``OVERLAY_MAX_STACK`` (500) parents.
- elsewhere, mount(2): it copies at most one page of options and silently drops the
  rest. On 6.18 a cut that falls between two lower dirs *succeeds*: a read-only mount of
  fewer layers, no upper dir, no error. So we measure the string: when it does not fit
  with absolute paths, it is built from paths relative to home (``l/<short>`` is 28
  bytes a layer) and the mount is done by a forked child that chdir's to home; the
  parent's working directory is process-wide state that other threads rely on, so we
  never change it. When even that does not fit, we refuse rather than mount something
  else. There a chain holds at most ``MAX_DEPTH`` (128) parents, which keeps the
  relative string within a page for 64-character ids.
- every layer is mounted read-write over its ``diff``, writable or not, as
  containers-storage does: who may write is the store's rule, not the mount's.
- whiteouts are the kernel's own (0:0 character devices, ``trusted.overlay.opaque=y``).
- write order in ``create``: the ``link`` file before the ``l/`` symlink, and in
  ``remove`` the symlink before the directory, so a crash anywhere never leaves a
  symlink in ``l/`` that no layer directory names.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import string
from pathlib import Path

import msgspec

from eventstore import faults, mountapi
from eventstore.drivers.base import Driver, FsInfo, checked_layer_id, is_valid_layer_id, tree_usage
from eventstore.errors import DriverError, ForeignMount, InvalidArgument, LayerStoreError
from eventstore.fsutil import write_atomic
from eventstore.mounts import MNT_DETACH, mount_points, mounts_under, real_path, umount
from eventstore.private import make_dir
from eventstore.removal import refuse_mounts, remove_tree
from eventstore.retry import on_ebusy
from eventstore.rootless import is_rootless

MAX_DEPTH = 128
SHORT_NAME_LENGTH = 26
SHORT_NAME_ALPHABET = string.ascii_uppercase + string.digits
LINKS_DIR = "l"
#: the kernel reads one page of mount options, the terminating NUL included
OPTIONS_LIMIT = resource.getpagesize() - 1
#: mounts stacked on one merged dir that ``unmount`` peels off before giving up
MAX_STACKED_MOUNTS = 8

_SHORT_NAME_RE = re.compile(rf"^[A-Z0-9]{{{SHORT_NAME_LENGTH}}}$")


_libc = ctypes.CDLL(None, use_errno=True)
_c_str = ctypes.c_char_p
_libc.mount.argtypes = [_c_str, _c_str, _c_str, ctypes.c_ulong, _c_str]


class MountPlan(msgspec.Struct, frozen=True):
    """The option string ``mount`` will pass, and whether its paths are relative to home."""

    options: str
    relative: bool


def _sys_mount(target: bytes, options: bytes, flags: int = 0) -> int:
    """mount(2) an overlay on ``target``; 0 or the errno. ``flags``: MS_NOSUID,
    MS_NODEV, MS_NOEXEC (the same bits as the new API's MOUNT_ATTR_*)."""
    if _libc.mount(b"overlay", target, b"overlay", flags, options) == 0:
        return 0
    return ctypes.get_errno()


def _errno_text(code: int) -> str:
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


def _escape(path: str) -> str:
    # overlay splits options at "," and lower dirs at ":"; a backslash keeps either literal
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


class OverlayDriver(Driver):
    """Layers as overlayfs upper dirs, stacked through short links in ``l/``."""

    name = "overlay"
    whiteout_format = "overlay"
    own_fstypes: tuple[str, ...] = ("overlay",)  # what the driver itself mounts on merged/
    stacks_layers = True

    def __init__(self, home: Path, unmount_timeout: float = 2.0, mountopt: str = "",
                 new_mount_api: bool | None = None):
        super().__init__(Path(home).absolute())
        self.links_dir = self.home / LINKS_DIR
        #: how long ``unmount`` retries a busy mount before it reports the layer
        self.unmount_timeout = float(unmount_timeout)
        #: mount flags for every layer mount (``nodev,nosuid,noexec``), as
        #: containers-storage's ``overlay.mountopt``
        try:
            self.mount_flags = mountapi.mount_attrs([o for o in str(mountopt).split(",") if o])
        except ValueError as err:
            raise InvalidArgument(f"overlay mountopt: {err}") from None
        #: mount through the new mount API (None: where the kernel has it)
        self.new_mount_api = mountapi.available() if new_mount_api is None else new_mount_api

    @property
    def max_depth(self) -> int:
        """The parents a layer may have: the kernel's stack limit through the new mount
        API, else what one page of mount(2) options holds."""
        return mountapi.OVERLAY_MAX_STACK if self.new_mount_api else MAX_DEPTH

    # --- can it run here -----------------------------------------------------------

    @classmethod
    def supported(cls, home: Path) -> str | None:
        if not _kernel_has_overlay():
            return "the kernel has no overlay filesystem (not in /proc/filesystems)"
        if is_rootless():
            return "overlay mounts need root (in the initial user namespace; rootless: fuse-overlayfs)"
        return _probe_mount(_nearest_existing(Path(home).absolute().parent))

    # --- create and remove -----------------------------------------------------------

    def create(self, layer_id: str, parent_id: str | None, writable: bool) -> None:
        layer = self._dir(layer_id)
        # the parent is checked before anything is made, so a refusal leaves no trace
        lower = self._lower_for_child(layer_id, parent_id) if parent_id is not None else None
        make_dir(self.home, parents=True)
        make_dir(self.links_dir)
        try:
            layer.mkdir(mode=0o700)
        except FileExistsError:
            raise DriverError(f"layer {layer_id}: already exists in the overlay driver") from None
        os.chmod(layer, 0o700)  # exact, whatever the umask
        try:
            self._populate(layer_id, layer, lower)
        except BaseException as err:
            try:
                self._discard(layer_id, layer)
            except LayerStoreError:
                pass  # left for recovery, which removes it or says why not
            if isinstance(err, OSError):
                raise DriverError(f"layer {layer_id}: create failed: {err.strerror or err}") from err
            raise

    def _populate(self, layer_id: str, layer: Path, lower: str | None) -> None:
        # diff/ (and empty/) is the container's "/" (its mode is the content's); work/
        # and merged/ are the store's. Exact modes, whatever the umask.
        for name, mode in [("diff", 0o755), ("work", 0o700), ("merged", 0o700)] + \
                ([("empty", 0o755)] if lower is None else []):
            (layer / name).mkdir(mode=mode)
            os.chmod(layer / name, mode)
        if lower is not None:
            (layer / "lower").write_text(lower)
        faults.point("driver.overlay.create.half-done")
        self._make_short_link(layer_id, layer)

    def _lower_for_child(self, layer_id: str, parent_id: str) -> str:
        parent = self._dir(parent_id)
        try:
            parent_short = self._read_short_name(parent)
        except FileNotFoundError:
            raise DriverError(f"layer {layer_id}: parent {parent_id} is not in the overlay driver") from None
        chain = [f"{LINKS_DIR}/{parent_short}", *self._read_lower(parent)]
        if len(chain) > self.max_depth:
            raise DriverError(f"layer {layer_id}: {len(chain)} parents, overlay allows at most {self.max_depth}")
        return ":".join(chain)

    def _make_short_link(self, layer_id: str, layer: Path) -> None:
        import secrets  # (here, not at the top: secrets costs every open ~6 ms of start-up)

        # 36**26 names make a collision all but impossible; a few tries cover it anyway
        for _ in range(8):
            short = "".join(secrets.choice(SHORT_NAME_ALPHABET) for _ in range(SHORT_NAME_LENGTH))
            (layer / "link").write_text(short)
            try:
                os.symlink(f"../{layer_id}/diff", self.links_dir / short)
                return
            except FileExistsError:
                continue
        raise DriverError(f"layer {layer_id}: could not pick an unused short name in {self.links_dir}")

    def remove(self, layer_id: str) -> None:
        layer = self._dir(layer_id)
        # what someone else mounted inside refuses the removal before anything changes,
        # our own overlay on merged/ included (a refused delete leaves it mounted)
        self.check_removable(layer_id)
        # unmount first: deleting through a live mount would reach into the lower layers;
        # a mount still busy raises here and nothing is deleted
        self.unmount(layer_id)
        faults.point("driver.overlay.remove.before-rmtree")
        self._discard(layer_id, layer)

    def _discard(self, layer_id: str, layer: Path) -> None:
        try:
            refuse_mounts(layer)  # before the short link goes: a refusal changes nothing
            self._remove_short_link(layer_id, layer)
            remove_tree(layer)
        except ForeignMount as err:
            raise ForeignMount(f"layer {layer_id}: {err}", err.mount_point) from None
        except OSError as err:
            where = f" {err.filename}" if err.filename else ""
            raise DriverError(f"layer {layer_id}: cannot remove{where}: {err.strerror or err}") from err

    def foreign_mounts(self, layer_id: str) -> list[str]:
        """Every mount at or below ``<home>/<id>`` but the layer's own overlay on
        ``merged`` (stacked ones included: ``unmount`` peels those off)."""
        layer = self._dir(layer_id)
        merged = real_path(layer / "merged")
        return [m.point for m in mounts_under(layer) if not (m.point == merged and m.fstype in self.own_fstypes)]

    def _remove_short_link(self, layer_id: str, layer: Path) -> None:
        try:
            short = self._read_short_name(layer)
        except (FileNotFoundError, DriverError):
            return
        link = self.links_dir / short
        # only our own link: a damaged ``link`` file must not take another layer's
        try:
            if os.readlink(link) == f"../{layer_id}/diff":
                os.unlink(link)
        except FileNotFoundError:
            pass

    def set_aside(self, layer_id: str, target: Path) -> None:
        layer = self._dir(layer_id)
        if not layer.is_dir():
            return
        self.unmount(layer_id)
        self.check_removable(layer_id)  # something else mounted inside: it stays, reported
        self._remove_short_link(layer_id, layer)
        try:
            os.rename(layer, target)
        except OSError as err:
            raise DriverError(f"layer {layer_id}: cannot move it aside to {target}: {err.strerror}") from err

    # --- metadata that can be rebuilt from the log ------------------------------------

    def check_layer(self, layer_id: str, parents: list[str]) -> list[str]:
        layer = self._dir(layer_id)
        if not layer.is_dir():
            return [f"layer {layer_id}: driver data missing"]
        problems = [f"layer {layer_id}: {name}/ missing" for name in self._dirs_of(parents) if not (layer / name).is_dir()]
        short = self._short_name_or_none(layer)
        if short is None:
            problems.append(f"layer {layer_id}: link file missing or damaged")
        elif self._link_target(short) != f"../{layer_id}/diff":
            problems.append(f"layer {layer_id}: short link l/{short} missing or not pointing at its diff")
        want = self._wanted_lower(parents)
        if want is None:
            problems.append(f"layer {layer_id}: a parent's link file is missing or damaged")
        elif self._read_lower(layer) != want:
            problems.append(f"layer {layer_id}: lower file does not name its parents' links")
        return problems

    def repair_layer(self, layer_id: str, parents: list[str]) -> list[str]:
        """Directories, the short link and the lower file, rebuilt from the chain (the
        layer's ``diff`` is data: never made up). Parents are repaired first by the
        caller, so their links exist when a child's lower file names them."""
        layer = self._dir(layer_id)
        if not (layer / "diff").is_dir():
            return []
        done = []
        for name in self._dirs_of(parents):
            if not (layer / name).is_dir():
                (layer / name).mkdir(mode=0o700 if name != "empty" else 0o755)
                done.append(f"layer {layer_id}: made {name}/")
        self.links_dir.mkdir(parents=True, exist_ok=True)
        short = self._short_name_or_none(layer)
        if short is None or self._link_target(short) not in (None, f"../{layer_id}/diff"):
            self._make_short_link(layer_id, layer)  # a new name: the old one is gone or taken
            done.append(f"layer {layer_id}: new short link l/{self._read_short_name(layer)}")
        elif self._link_target(short) is None:
            os.symlink(f"../{layer_id}/diff", self.links_dir / short)
            done.append(f"layer {layer_id}: short link l/{short} made again")
        want = self._wanted_lower(parents)
        if want is not None and self._read_lower(layer) != want:
            if want:
                write_atomic(layer / "lower", ":".join(want).encode())
            else:
                (layer / "lower").unlink(missing_ok=True)
            done.append(f"layer {layer_id}: lower file rewritten")
        return done

    @staticmethod
    def _dirs_of(parents: list[str]) -> tuple[str, ...]:
        return ("diff", "work", "merged") if parents else ("diff", "work", "merged", "empty")

    def _short_name_or_none(self, layer: Path) -> str | None:
        try:
            return self._read_short_name(layer)
        except (OSError, DriverError):
            return None

    def _link_target(self, short: str) -> str | None:
        try:
            return os.readlink(self.links_dir / short)
        except OSError:
            return None

    def _wanted_lower(self, parents: list[str]) -> list[str] | None:
        shorts = [self._short_name_or_none(self._dir(p)) for p in parents]
        return None if None in shorts else [f"{LINKS_DIR}/{s}" for s in shorts]

    # --- what exists -----------------------------------------------------------------

    def exists(self, layer_id: str) -> bool:
        return self._dir(layer_id).is_dir()

    def layers(self) -> set[str]:
        """Every directory in home that can be a layer, half-made ones included (recovery
        must see them to remove them); ``l/`` and names no layer can have are skipped."""
        try:
            entries = list(os.scandir(self.home))
        except FileNotFoundError:
            return set()
        return {
            e.name
            for e in entries
            if e.name != LINKS_DIR and e.is_dir(follow_symlinks=False) and is_valid_layer_id(e.name)
        }

    # --- mounting --------------------------------------------------------------------

    def mount(self, layer_id: str, mount_label: str = "") -> Path:
        merged = self.mount_path(layer_id)
        if self.new_mount_api:
            return self._mount_new_api(layer_id, merged, mount_label)
        plan = self.mount_plan(layer_id, mount_label)
        if self.is_mounted(layer_id):
            return merged
        faults.point("driver.overlay.mount")
        options = plan.options.encode()
        if plan.relative:
            code = self._mount_from_home(os.fsencode(merged), options)
        else:
            code = _sys_mount(os.fsencode(merged), options, self.mount_flags)
        if code != 0:
            raise DriverError(f"layer {layer_id}: overlay mount failed: {_errno_text(code)}")
        return merged

    def _mount_new_api(self, layer_id: str, merged: Path, mount_label: str) -> Path:
        layer = self._existing_dir(layer_id)
        lowers = self._lower_diff_dirs(layer_id, layer) or [layer / "empty"]
        if self.is_mounted(layer_id):
            return merged
        faults.point("driver.overlay.mount")
        try:
            mountapi.mount_overlay(merged, lowers, layer / "diff", layer / "work", label=mount_label,
                                   attrs=self.mount_flags)
        except mountapi.MountFailed as err:
            raise DriverError(f"layer {layer_id}: overlay mount failed: {err.strerror}") from None
        return merged

    def view_dirs(self, layer_id: str) -> list[Path]:
        """The directories a read-only view of the layer stacks, top first: its own
        diff, its parents', and for a base layer its empty dir (a view needs two)."""
        layer = self._existing_dir(layer_id)
        return [layer / "diff", *(self._lower_diff_dirs(layer_id, layer) or [layer / "empty"])]

    def staging_path(self, layer_id: str) -> Path:
        """Inside the layer's directory: removed with it, never taken for a layer."""
        return self._dir(layer_id) / "staging"

    def mount_plan(self, layer_id: str, mount_label: str = "") -> MountPlan:
        """The options ``mount`` uses: absolute paths when they fit in a page, else
        paths relative to home (see the module docstring)."""
        layer = self._existing_dir(layer_id)
        lowers = self._lower_diff_dirs(layer_id, layer) or [layer / "empty"]
        upper, work = str(layer / "diff"), str(layer / "work")
        absolute = _options([str(p) for p in lowers], upper, work, mount_label)
        if len(absolute.encode()) <= OPTIONS_LIMIT:
            return MountPlan(absolute, relative=False)
        relative_lowers = self._read_lower(layer) or [f"{layer_id}/empty"]
        relative = _options(relative_lowers, f"{layer_id}/diff", f"{layer_id}/work", mount_label)
        if len(relative.encode()) > OPTIONS_LIMIT:
            raise DriverError(
                f"layer {layer_id}: mount options are {len(relative.encode())} bytes even with "
                f"relative paths, the kernel reads {OPTIONS_LIMIT}"
            )
        return MountPlan(relative, relative=True)

    def _mount_from_home(self, target: bytes, options: bytes) -> int:
        """mount(2) from a child whose working directory is home, so relative paths in
        ``options`` resolve there; 0 or the errno."""
        home = os.fsencode(self.home)
        pid = os.fork()
        if pid == 0:  # the child: no Python-level cleanup, just the syscall and out
            code = errno.EIO
            try:
                os.chdir(home)
                code = _sys_mount(target, options, self.mount_flags)
            except OSError as err:
                code = err.errno or errno.EIO
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else errno.EINTR

    def unmount(self, layer_id: str) -> None:
        faults.point("driver.overlay.unmount")
        self._peel_mounts(layer_id)

    def _peel_mounts(self, layer_id: str) -> None:
        merged = os.fsencode(self.mount_path(layer_id))
        # two racing mounters can stack mounts on one merged dir: peel them all off
        for _ in range(MAX_STACKED_MOUNTS):
            if not self._unmount_once(layer_id, merged):
                return
        raise DriverError(f"layer {layer_id}: still mounted after {MAX_STACKED_MOUNTS} unmounts")

    def _unmount_once(self, layer_id: str, merged: bytes) -> bool:
        """Unmount the top mount on ``merged``; False when nothing was mounted there."""

        code = umount(merged)
        if code != errno.EBUSY:  # the common case needs no retry machinery
            return self._unmount_result(layer_id, merged, code)

        @on_ebusy(self.unmount_timeout)
        def attempt() -> int:
            code = umount(merged)
            if code == errno.EBUSY:  # someone still has a file or a cwd there: wait a little
                raise OSError(code, os.strerror(code))
            return code

        try:
            code = attempt()
        except OSError:
            raise DriverError(
                f"layer {layer_id}: mount still busy after {self.unmount_timeout:g}s "
                f"(a process has files or its working directory in {os.fsdecode(merged)})"
            ) from None
        return self._unmount_result(layer_id, merged, code)

    @staticmethod
    def _unmount_result(layer_id: str, merged: bytes, code: int) -> bool:
        if code in (errno.EINVAL, errno.ENOENT):
            return False
        if code != 0:
            raise DriverError(f"layer {layer_id}: unmount failed: {_errno_text(code)}")
        return True

    def is_mounted(self, layer_id: str) -> bool:
        return os.path.realpath(self.mount_path(layer_id)) in mount_points()

    def mounted(self) -> set[str]:
        home = os.path.realpath(self.home)
        found = set()
        for point in mount_points(home):
            parts = os.path.relpath(point, home).split(os.sep)
            if len(parts) == 2 and parts[1] == "merged" and is_valid_layer_id(parts[0]):
                found.add(parts[0])
        return found

    # --- paths and facts -------------------------------------------------------------

    def mount_path(self, layer_id: str) -> Path:
        return self._dir(layer_id) / "merged"

    def diff_path(self, layer_id: str) -> Path:
        return self._dir(layer_id) / "diff"

    def work_path(self, layer_id: str) -> Path:
        """The layer's overlay work dir (beside its ``diff``)."""
        return self._dir(layer_id) / "work"

    def lower_links(self, layer_id: str) -> list[Path]:
        """The layer's parents' ``diff`` dirs, nearest first, as their short links
        ``<home>/l/<short>``: the shortest names a mount's lowerdir can use ([] for a base)."""
        return [self.home / entry for entry in self._read_lower(self._existing_dir(layer_id))]

    def metadata(self, layer_id: str) -> dict[str, str]:
        """LowerDir is "" for a base layer: its ``empty`` lower dir is a mount detail."""
        layer = self._existing_dir(layer_id)
        return {
            "LowerDir": ":".join(str(p) for p in self._lower_diff_dirs(layer_id, layer)),
            "UpperDir": str(layer / "diff"),
            "WorkDir": str(layer / "work"),
            "MergedDir": str(layer / "merged"),
        }

    def fs_info(self, layer_id: str) -> FsInfo:
        layer = self._existing_dir(layer_id)
        return tree_usage(layer / "diff", mountpoint=layer / "merged")

    # --- helpers ---------------------------------------------------------------------

    def _dir(self, layer_id: str) -> Path:
        if checked_layer_id(layer_id) == LINKS_DIR:
            raise DriverError(f"layer {layer_id}: the name is the overlay driver's link directory")
        return self.home / layer_id

    def _existing_dir(self, layer_id: str) -> Path:
        layer = self._dir(layer_id)
        if not layer.is_dir():
            raise DriverError(f"layer {layer_id}: does not exist in the overlay driver")
        return layer

    def _read_short_name(self, layer: Path) -> str:
        short = (layer / "link").read_text().strip()
        if not _SHORT_NAME_RE.match(short):
            raise DriverError(f"layer {layer.name}: damaged link file (short name {short!r})")
        return short

    def _read_lower(self, layer: Path) -> list[str]:
        """The ``l/<short>`` entries of the layer's parents, nearest first; [] for a base."""
        try:
            text = (layer / "lower").read_text().strip()
        except FileNotFoundError:
            return []
        return text.split(":") if text else []

    def _lower_diff_dirs(self, layer_id: str, layer: Path) -> list[Path]:
        dirs = []
        for entry in self._read_lower(layer):
            try:
                target = os.readlink(self.home / entry)
            except FileNotFoundError:
                raise DriverError(f"layer {layer_id}: lower link {entry} is missing (parent removed?)") from None
            dirs.append(Path(os.path.normpath(self.links_dir / target)))
        return dirs


def _options(lowers: list[str], upper: str, work: str, mount_label: str) -> str:
    parts = [
        "lowerdir=" + ":".join(_escape(p) for p in lowers),
        "upperdir=" + _escape(upper),
        "workdir=" + _escape(work),
    ]
    if mount_label:
        parts.append(f'context="{mount_label}"')
    return ",".join(parts)


def _kernel_has_overlay() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def _probe_mount(base: Path) -> str | None:
    """None when a real overlay mount works on ``base``'s filesystem, else why not."""
    try:
        import tempfile

        probe = Path(tempfile.mkdtemp(prefix=".layerstore-overlay-probe-", dir=base))
    except OSError as err:
        return f"cannot make a test directory in {base}: {err.strerror}"
    try:
        for name in ("lower", "upper", "work", "merged"):
            (probe / name).mkdir()
        (probe / "lower" / "seen").write_bytes(b"")
        merged = os.fsencode(probe / "merged")
        options = _options([str(probe / "lower")], str(probe / "upper"), str(probe / "work"), "")
        code = _sys_mount(merged, options.encode())
        if code != 0:
            return f"a test overlay mount on {base} failed: {_errno_text(code)}"
        try:
            visible = (probe / "merged" / "seen").exists()
        finally:
            # detach: the rmtree below must never run through a mount we left behind
            umount(merged, MNT_DETACH)
        return None if visible else f"a test overlay mount on {base} did not show its lower dir"
    except OSError as err:
        return f"a test overlay mount on {base} failed: {err.strerror or err}"
    finally:
        try:
            remove_tree(probe)
        except (LayerStoreError, OSError):
            pass  # a probe left in a temp dir is harmless; going through a mount is not
