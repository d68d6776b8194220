"""The README's commands run by a user who is not root, on fuse-overlayfs: as the plain
user (FUSE mounts through the setuid fusermount3, left in place between commands) and
as root of a user namespace of its own (``unshare --user --map-root-user --mount``, the
issue's scenario: every command of one session in one namespace).

What a rootless store must get right, each checked here: the default root under
``$XDG_DATA_HOME``; the default driver; layer files owned by the user (the tar's owners
are recorded, not applied); device nodes and trusted.* xattrs skipped; whiteouts in a
form fuse-overlayfs reads; the diff still byte for byte the tar; holds; a crash in the
middle of a create recovered; a killed fuse-overlayfs daemon reconciled; and a clear
error when /dev/fuse cannot be opened.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import stat
import tarfile
from pathlib import Path

import pytest

from .support import User

TAR_MTIME = 1_700_000_000


def layer_tar() -> bytes:
    """A layer as images have them: root's files, another owner's, a setuid binary, a
    symlink, a device node, a trusted.* xattr."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
                uid: int = 0, **extra) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, uid, TAR_MTIME
            for key, value in extra.items():
                setattr(info, key, value)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/hostname", data=b"rootless\n")
        add("etc/shadow", data=b"root:*:1::::::\n", mode=0o640)
        add("home", tarfile.DIRTYPE, mode=0o755)
        add("home/app", tarfile.DIRTYPE, mode=0o750, uid=1000)
        add("home/app/data", data=b"owned by 1000\n", uid=1000)
        add("bin", tarfile.DIRTYPE, mode=0o755)
        add("bin/su", data=b"#!/bin/sh\n", mode=0o4755)
        add("bin/sh", tarfile.SYMTYPE, linkname="su")
        add("dev", tarfile.DIRTYPE, mode=0o755)
        add("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        add("usr", tarfile.DIRTYPE, mode=0o755)
        add("usr/ping", data=b"\x7fELF", mode=0o755,
            pax_headers={"SCHILY.xattr.trusted.origin": "image", "SCHILY.xattr.user.note": "kept"})
    return out.getvalue()


def whiteout_tar() -> bytes:
    """On top of layer_tar: delete etc/shadow, make usr opaque, add usr/new."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind in (("etc", tarfile.DIRTYPE), ("etc/.wh.shadow", tarfile.REGTYPE),
                           ("usr", tarfile.DIRTYPE), ("usr/.wh..wh..opq", tarfile.REGTYPE),
                           ("usr/new", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mtime = kind, TAR_MTIME
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            data = b"new\n" if name == "usr/new" else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def put(user: User, name: str, data: bytes) -> Path:
    path = user.home / name
    path.write_bytes(data)
    os.chown(path, user.uid, user.gid)
    return path


def layerstore(user: User, *args: str, userns: bool = False, **env: str):
    return user.run(["layerstore", *args], userns, **env)


def ok(user: User, *args: str, userns: bool = False) -> str:
    done = layerstore(user, *args, userns=userns)
    assert done.returncode == 0, f"{args}: exit {done.returncode}: {done.stderr}"
    assert done.stderr == ""
    return done.stdout.strip()


def owners_under(path: Path) -> set[tuple[int, int]]:
    return {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in [path, *path.rglob("*")]}


# --- as the plain user: mounts through fusermount3, one command at a time -----------------

def test_the_readme_commands_work_as_a_plain_user(user: User):
    tar = layer_tar()
    put(user, "layer.tar", tar)
    root = user.data_home / "layerstore"

    base = ok(user, "create", "--name", "base", "layer.tar")
    assert (root / "driver").read_text() == "fuse-overlayfs\n"  # the default, without root
    child = ok(user, "create", "--parent", "base", "--writable", "--name", "c1")
    tree = ok(user, "layers", "--tree")
    assert f"{base[:12]} (base)" in tree and f"{child[:12]} (c1)" in tree

    merged = Path(ok(user, "mount", "c1"))
    assert merged == root / "overlay" / child / "merged"
    shown = user.shell(f"cat {merged}/etc/hostname; echo written > {merged}/note; readlink {merged}/bin/sh",
                       userns=False)
    assert shown.stdout == "rootless\nsu\n", shown.stderr
    history = [json.loads(line) for line in ok(user, "--json", "history", "c1").splitlines()]  # JSON lines
    mounted = [h for h in history if h["type"] == "layer-mounted"]
    assert mounted and mounted[-1]["actor"]["uid"] == user.uid

    assert ok(user, "umount", "c1") == "0"
    assert (root / "overlay" / child / "diff" / "note").read_text() == "written\n"
    ok(user, "delete", "c1")
    assert not (root / "overlay" / child).exists()

    # the user's files, whatever the tar said; what a user cannot make is left out
    diff = root / "overlay" / base / "diff"
    assert owners_under(diff) == {(user.uid, user.gid)}
    assert stat.S_IMODE(os.lstat(diff / "bin" / "su").st_mode) == 0o4755
    assert not (diff / "dev" / "null").exists()
    assert "trusted.origin" not in os.listxattr(diff / "usr" / "ping")
    assert os.getxattr(diff / "usr" / "ping", "user.note") == b"kept"
    # ... and still the same layer: its diff is the tar, byte for byte
    ok(user, "diff", "base", "-o", str(user.home / "out.tar"))
    assert (user.home / "out.tar").read_bytes() == tar
    assert json.loads(ok(user, "--json", "layer", "base"))["diff-digest"] == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert layerstore(user, "check", "--content").returncode == 0


def test_holds_and_recovery_work_as_a_plain_user(user: User):
    put(user, "layer.tar", layer_tar())
    base = ok(user, "create", "--name", "base", "layer.tar")
    assert ok(user, "hold", "base", "--lease", "keep") == "1"
    refused = layerstore(user, "delete", "base")
    assert refused.returncode == 3 and "held" in refused.stderr
    assert ok(user, "release", "base", "--lease", "keep") == "0"

    # killed after its content was synced, before it was complete
    half = "ab" * 32
    crashed = layerstore(user, "create", "--id", half, "layer.tar",
                         LAYERSTORE_FAILPOINTS="store.create.after-content=crash")
    assert crashed.returncode == 137
    root = user.data_home / "layerstore"
    assert (root / "overlay" / half / "diff" / "etc" / "hostname").exists()
    assert "removed incomplete layer" in ok(user, "recover")
    assert not (root / "overlay" / half).exists()
    assert layerstore(user, "exists", half).returncode == 1

    # a mount whose fuse-overlayfs daemon was killed: counted, but nothing serves it
    merged = ok(user, "mount", "base")
    for pid in daemons_serving(merged):
        os.kill(pid, signal.SIGKILL)
    assert "reset mount count" in ok(user, "recover")
    assert json.loads(ok(user, "--json", "layer", "base"))["mount-count"] == 0
    assert ok(user, "mount", "base") == merged  # the dead mount is cleared, a new one made
    assert user.shell(f"cat {merged}/etc/hostname", userns=False).stdout == "rootless\n"
    assert ok(user, "umount", "base") == "0"
    ok(user, "delete", base)


def daemons_serving(merged: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"fuse-overlayfs") and os.fsencode(merged) in argv:
            found.append(int(pid))
    return found


# --- as root of a user namespace (unshare --map-root-user): one session, one namespace -----

def test_the_readme_commands_work_in_a_user_namespace(user: User):
    put(user, "layer.tar", layer_tar())
    put(user, "whiteouts.tar", whiteout_tar())
    script = """
        base=$(layerstore create --name base layer.tar)
        top=$(layerstore create --parent base --name top whiteouts.tar)
        app=$(layerstore create --parent top --writable --name app)
        layerstore layers --tree >/dev/null
        merged=$(layerstore mount app)
        echo "merged $merged"
        echo "owner $(stat -c %u:%g "$merged/home/app/data")"
        echo "usr $(ls "$merged/usr" | tr '\\n' ' ')"
        echo "etc $(ls "$merged/etc" | tr '\\n' ' ')"
        echo app-was-here > "$merged/etc/app"
        layerstore history app | grep -c layer-mounted
        layerstore umount app
        layerstore hold top --lease pinned
        if layerstore delete top 2>/dev/null; then echo "deleted a held layer"; exit 1; fi
        layerstore release top --lease pinned
        layerstore delete app
        layerstore check --content
        echo "root $(cat "$XDG_DATA_HOME/layerstore/driver")"
        echo "base $base"
        echo "top $top"
    """
    done = user.shell(script, userns=True)
    assert done.returncode == 0, done.stderr
    facts = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    root = user.data_home / "layerstore"
    assert facts["root"] == "fuse-overlayfs"
    assert facts["merged"].startswith(str(root / "overlay"))
    assert facts["owner"] == "0:0"  # inside the namespace the user is root: its files are root's
    assert facts["usr"].split() == ["new"]  # opaque: ping from the base is hidden
    assert facts["etc"].split() == ["hostname"]  # shadow whited out
    # on disk, outside the namespace: the user's own ids, whiteouts as fuse-overlayfs reads them
    top = root / "overlay" / facts["top"] / "diff"
    assert owners_under(root / "overlay" / facts["base"] / "diff") == {(user.uid, user.gid)}
    whiteout = os.lstat(top / "etc" / "shadow")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(top / "usr", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(top / "usr")


def test_import_oci_works_in_a_user_namespace(user: User, tmp_path: Path):
    from eventstore.oci import chain_ids
    from tests.interop.image import build

    if shutil.which("umoci") is None:
        pytest.skip("umoci not installed")
    image = build(tmp_path / "image")
    layout = user.home / "layout"
    shutil.copytree(image.layout, layout)
    for path in (layout, *layout.rglob("*")):
        os.chown(path, user.uid, user.gid, follow_symlinks=False)
    script = f"""
        top=$(layerstore import-oci {layout}:{image.tag})
        echo "top $top"
        merged=$(layerstore mount "$top")
        echo "files $(cat "$merged/opq/only-this")"
        layerstore umount "$top"
        layerstore check --content
    """
    done = user.shell(script, userns=True)
    assert done.returncode == 0, done.stderr
    facts = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert facts["top"] == chain_ids(image.config()["rootfs"]["diff_ids"])[-1]
    assert facts["files"] == "inserted by umoci insert --opaque"


def test_a_fuse_device_the_user_cannot_open_is_named_in_one_line(user: User):
    # /dev/fuse as machines without udev have it, in the user's own mount namespace only
    fake = user.home.parent / "fuse-0600"
    fake.write_bytes(b"")
    fake.chmod(0o600)  # root's: the user's namespace sees it as nobody's
    put(user, "layer.tar", layer_tar())
    done = user.shell(f"mount --bind {fake} /dev/fuse; layerstore --driver fuse-overlayfs create layer.tar",
                      userns=True)
    assert done.returncode == 5 and done.stdout == ""  # a storage error (docs/cli.md)
    assert done.stderr.splitlines() == [
        "layerstore: driver fuse-overlayfs cannot run here: cannot open /dev/fuse: Permission denied "
        "(mode 0600; without udev it stays 0600, distributions ship it 0666: chmod 0666 /dev/fuse)"]
    # a store made while it could be opened: mount names the device, create still works
    made = user.shell("layerstore --driver fuse-overlayfs create --name base layer.tar", userns=True)
    assert made.returncode == 0, made.stderr
    done = user.shell(f"mount --bind {fake} /dev/fuse; layerstore mount base", userns=True)
    assert done.returncode == 5
    assert done.stderr.startswith("layerstore: layer ") and "cannot mount: cannot open /dev/fuse" in done.stderr
    assert len(done.stderr.splitlines()) == 1
