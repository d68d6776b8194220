"""A layer's whole view — its files over its parents', as a container sees them — for
comparing a layer with any other (``changes``, ``diff`` and ``diffsize`` against REF).

A copying driver (vfs) keeps every layer whole already: its directory is the view. A
stacking driver (overlay) gets a read-only overlay of the layer's dirs through a
*detached* mount (``eventstore.mountapi``): no mount point, nothing in the mount table,
no mount count in the log — it is not a mount of the layer, only a way to read it — and
it is gone when the view is closed or the process dies. On a kernel without the new
mount API, the view is mounted with mount(2) on a private temporary directory, opened,
and detached at once, which leaves the same descriptor-only mount.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventstore import mountapi
from eventstore.errors import DriverError


@contextmanager
def layer_view(driver, layer_id: str) -> Iterator[Path]:
    """A path to the whole view of ``layer_id`` while the block runs."""
    if not driver.stacks_layers:
        yield driver.diff_path(layer_id)
        return
    dirs = driver.view_dirs(layer_id)
    try:
        view = mountapi.open_view(dirs)
    except mountapi.MountAPIUnavailable:
        view = _legacy_view(dirs)
    except mountapi.MountFailed as err:
        raise DriverError(f"layer {layer_id}: cannot open a view of it: {err.strerror}") from None
    try:
        yield view.path
    finally:
        view.close()


def _legacy_view(dirs: list[Path]) -> mountapi.View:
    from eventstore.mounts import MNT_DETACH, umount

    options = "lowerdir=" + ":".join(str(d).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")
                                     for d in dirs)
    if len(options.encode()) >= os.sysconf("SC_PAGE_SIZE"):
        raise DriverError(f"a view of {len(dirs)} layers does not fit in mount(2) options on this kernel")
    point = tempfile.mkdtemp(prefix="layerstore-view-")
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"overlay", os.fsencode(point), b"overlay", 1, options.encode()) != 0:  # MS_RDONLY
            code = ctypes.get_errno()
            raise DriverError(f"cannot mount a view of the layer: {os.strerror(code)}")
        try:
            fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            umount(os.fsencode(point), MNT_DETACH)  # the descriptor keeps the mount alive
        return mountapi.View(fd)
    finally:
        try:
            os.rmdir(point)  # never a recursive removal: a mount may still sit there
        except OSError:
            pass
