"""``layerstore copy``: files into a writable layer, from the host or another layer, as
containers-storage's ``copy`` does.

The target layer is mounted through the store (the mount is counted and logged like any
other, and the copy lands where the layer's own files go, overlay's copy-up included),
and unmounted after. Files taken from the host keep their owners as content ids; files
from another layer keep the owners that layer's content gave them; both are written as
the host ids the target's id mapping gives them (``--chown`` sets one owner for all).
A path inside a layer is resolved without following symlinks, so a layer's symlink can
never take a copy outside it.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from eventstore import errors
from eventstore.idmap import Owners, shift_tree


def _split(spec: str) -> tuple[str | None, str]:
    """(layer, path) of ``LAYER:/path``; (None, path) for a host path."""
    head, sep, tail = spec.partition(":")
    if sep and tail.startswith("/") and "/" not in head and head:
        return head, tail
    return None, spec


def _inside(root: Path, path: str, must_exist: bool) -> Path:
    """``path`` (absolute, in a layer) under ``root``, checked component by component:
    no '..', no symlink on the way."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise errors.InvalidArgument(f"{path!r}: no '..' in a path inside a layer")
    here = root
    for i, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if must_exist or i < len(parts) - 1:
                raise errors.InvalidArgument(f"{path!r}: {part} does not exist in the layer") from None
            return here
        if os.path.islink(here) and (i < len(parts) - 1 or must_exist):
            raise errors.InvalidArgument(f"{path!r}: {part} is a symlink; give the path it points to")
        del st
    return here


def copy_into(store, sources: list[str], target: str, chown: str | None = None) -> None:
    """Copy ``sources`` (host paths or ``LAYER:/path``) to ``LAYER:/path``."""
    layer_ref, dest = _split(target)
    if layer_ref is None:
        raise errors.InvalidArgument(f"target {target!r}: want LAYER:/PATH")
    rec = store.usable(layer_ref)
    if not rec.writable:
        raise errors.RuleViolation(f"layer {rec.id}: read-only; copy writes into a writable layer")
    owners = Owners(rec.uid_map, rec.gid_map)
    forced = _owner(chown, owners) if chown else None
    with ExitStack() as stack:
        root = Path(store.mount(rec.id))
        stack.callback(store.umount, rec.id)
        dest_path = _inside(root, dest, must_exist=False)
        into_dir = dest_path.is_dir() and not dest_path.is_symlink()
        if len(sources) > 1 and not into_dir:
            raise errors.InvalidArgument(f"{dest!r}: copying several sources needs an existing directory")
        for spec in sources:
            source, source_owners = _source(store, stack, spec)
            landed = dest_path / source.name if into_dir else dest_path
            _cp(source, landed)
            if forced is not None:
                _chown_all(landed, *forced)
            else:
                shift_tree(landed, source_owners, owners)


def _source(store, stack: ExitStack, spec: str) -> tuple[Path, Owners]:
    layer_ref, path = _split(spec)
    if layer_ref is None:
        if not os.path.lexists(path):
            raise errors.InvalidArgument(f"{spec!r}: no such file")
        return Path(path), Owners()
    from eventstore.views import layer_view

    rec = store.usable(layer_ref)
    view = stack.enter_context(layer_view(store.driver, rec.id))
    return _inside(Path(view), path, must_exist=True), Owners(rec.uid_map, rec.gid_map)


def _owner(chown: str, owners: Owners) -> tuple[int, int]:
    try:
        uid, _, gid = chown.partition(":")
        return owners.host(int(uid), int(gid or uid), "--chown")
    except ValueError:
        raise errors.InvalidArgument(f"--chown {chown!r}: want UID:GID") from None


def _cp(source: Path, target: Path) -> None:
    # a layer's view is a path through a descriptor of ours (/proc/self/fd/N): cp gets
    # the same descriptor, under the same number
    parts = Path(source).parts
    keep = (int(parts[4]),) if parts[:4] == ("/", "proc", "self", "fd") and len(parts) > 4 else ()
    done = subprocess.run(["cp", "-a", "--no-target-directory", "--", str(source), str(target)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, pass_fds=keep)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        raise errors.StorageError(f"copying {source}: {lines[-1] if lines else done.returncode}")


def _chown_all(path: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid, follow_symlinks=False)
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
    if not path.is_dir():
        os.chown(path, uid, gid, follow_symlinks=False)
