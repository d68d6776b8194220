"""Whiteouts for fuse-overlayfs: the kernel's form where the process may make it, else
the forms fuse-overlayfs reads instead (``.wh.NAME`` files; ``user.overlay.opaque``,
else a ``.wh..wh..opq`` file); and diffs of upper dirs fuse-overlayfs wrote.

The kernel here lets anyone make 0:0 devices (5.8+) and root set trusted.* xattrs, so
the refusals other machines give are played by wrapping ``os.mknod``/``os.setxattr``;
that the stored forms really hide what they should is then checked by mounting them
with the real fuse-overlayfs."""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from eventstore.archive import diff_changes
from eventstore.errors import ContentRejected

from .support import Layer, TarBuilder, tree_listing

WHITEOUTS = (TarBuilder().dir("etc").file("etc/.wh.passwd").file(".wh.top")
             .dir("opaque").file("opaque/.wh..wh..opq").file("opaque/new", b"x").bytes())


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def refuse(monkeypatch, *, mknod: bool = False, xattrs: tuple[str, ...] = (), code: int = errno.EPERM):
    """Play a process (or filesystem) that may not make 0:0 devices / set these xattrs."""
    real_mknod, real_setxattr = os.mknod, os.setxattr

    def mknod(path, mode=0o600, device=0, *, dir_fd=None):
        if mknod_refused and stat.S_ISCHR(mode) and device == 0:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_mknod(path, mode, device, dir_fd=dir_fd)

    def setxattr(target, name, value, flags=0, *, follow_symlinks=True):
        if os.fsdecode(name).startswith(xattrs):
            raise OSError(code, os.strerror(code))
        return real_setxattr(target, name, value, flags, follow_symlinks=follow_symlinks)

    mknod_refused = mknod
    monkeypatch.setattr(os, "mknod", mknod)
    monkeypatch.setattr(os, "setxattr", setxattr)


def test_as_root_the_forms_are_the_overlay_drivers_byte_for_byte(tmp_path: Path):
    fuse, kernel = Layer(tmp_path, "fuse"), Layer(tmp_path, "kernel")
    fuse.import_bytes(WHITEOUTS, "fuse-overlayfs")
    kernel.import_bytes(WHITEOUTS, "overlay")

    def comparable(listing: dict) -> dict:  # inode numbers differ; the root's time is the import's
        return {k: v[:5] + v[6:] for k, v in listing.items() if k != "."}

    assert comparable(tree_listing(fuse.target)) == comparable(tree_listing(kernel.target))
    assert is_whiteout(fuse.path("etc/passwd")) and is_whiteout(fuse.path("top"))
    assert os.getxattr(fuse.path("opaque"), "trusted.overlay.opaque") == b"y"
    assert fuse.export() == WHITEOUTS


def test_without_0_0_devices_whiteouts_are_wh_files(tmp_path: Path, monkeypatch):
    refuse(monkeypatch, mknod=True)
    layer = Layer(tmp_path)
    layer.import_bytes(WHITEOUTS, "fuse-overlayfs")
    for name in ("etc/.wh.passwd", ".wh.top"):
        st = os.lstat(layer.path(name))
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert not os.path.lexists(layer.path("top"))
    assert layer.export() == WHITEOUTS


def test_a_wh_file_replaces_an_entry_of_the_same_tar(tmp_path: Path, monkeypatch):
    refuse(monkeypatch, mknod=True)
    layer = Layer(tmp_path)
    layer.import_bytes(TarBuilder().dir("gone").file("gone/x", b"1").file(".wh.gone").bytes(), "fuse-overlayfs")
    assert not os.path.lexists(layer.path("gone")) and layer.path(".wh.gone").is_file()


def test_without_trusted_xattrs_an_opaque_dir_gets_the_unprivileged_xattr(tmp_path: Path, monkeypatch):
    refuse(monkeypatch, xattrs=("trusted.",))
    layer = Layer(tmp_path)
    layer.import_bytes(WHITEOUTS, "fuse-overlayfs")
    assert os.getxattr(layer.path("opaque"), "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(layer.path("opaque"))
    assert not os.path.lexists(layer.path("opaque/.wh..wh..opq"))


def test_without_any_xattrs_an_opaque_dir_holds_an_opq_file(tmp_path: Path, monkeypatch):
    refuse(monkeypatch, xattrs=("trusted.", "user."), code=errno.ENOTSUP)
    layer = Layer(tmp_path)
    layer.import_bytes(WHITEOUTS, "fuse-overlayfs")
    assert layer.path("opaque/.wh..wh..opq").is_file()
    assert layer.export() == WHITEOUTS


def test_a_layer_cannot_bring_fuse_overlayfs_bookkeeping(tmp_path: Path):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.user.fuseoverlayfs.opaque": "y"}
        t.addfile(info)
    with pytest.raises(ContentRejected, match="reserved"):
        Layer(tmp_path).import_bytes(tar.getvalue(), "fuse-overlayfs")


# --- the stored forms, mounted by the real fuse-overlayfs --------------------------------

@pytest.mark.parametrize("refused", ["nothing", "devices-and-trusted", "devices-and-all-xattrs"])
def test_fuse_overlayfs_hides_what_every_form_whites_out(tmp_path: Path, monkeypatch, refused: str):
    if shutil.which("fuse-overlayfs") is None or os.geteuid() != 0:
        pytest.skip("needs fuse-overlayfs, and root to mount it here")
    lower = tmp_path / "lower"
    for rel, data in (("etc/passwd", b"root"), ("etc/hosts", b"h"), ("top", b"t"), ("opaque/old", b"o")):
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_bytes(data)
    with monkeypatch.context() as patch:
        if refused != "nothing":
            user_too = refused == "devices-and-all-xattrs"
            refuse(patch, mknod=True, xattrs=("trusted.", "user.") if user_too else ("trusted.",),
                   code=errno.ENOTSUP if user_too else errno.EPERM)
        upper = Layer(tmp_path, "upper")
        upper.import_bytes(WHITEOUTS, "fuse-overlayfs")
    (tmp_path / "work").mkdir()
    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={lower},upperdir={upper.target},workdir={tmp_path / 'work'}",
                    str(merged)], check=True, capture_output=True)
    try:
        assert sorted(os.listdir(merged)) == ["etc", "opaque"]
        assert os.listdir(merged / "etc") == ["hosts"]
        assert os.listdir(merged / "opaque") == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


# --- diffs of what fuse-overlayfs wrote into an upper dir -----------------------------------

def test_the_diff_of_a_fuse_upper_dir_has_one_entry_per_whiteout_and_opaque_dir(tmp_path: Path):
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / ".wh.passwd").write_bytes(b"")  # the file form
    os.mknod(upper / "etc" / "shadow", stat.S_IFCHR, 0)  # the device form
    (upper / "opq").mkdir()
    (upper / "opq" / ".wh..wh..opq").write_bytes(b"")  # fuse-overlayfs writes the file...
    os.setxattr(upper / "opq", "user.fuseoverlayfs.opaque", b"y")  # ...and an xattr
    os.mknod(upper / "opq" / ".wh..opq", stat.S_IFCHR, 0)
    (upper / "opq" / "kept").write_bytes(b"k")
    os.setxattr(upper / "opq" / "kept", "user.fuseoverlayfs.origin", b"bookkeeping")
    tar = b"".join(diff_changes(upper, [], "fuse-overlayfs"))
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        members = {m.name: m for m in t}
    assert sorted(members) == ["etc", "etc/.wh.passwd", "etc/.wh.shadow", "opq", "opq/.wh..wh..opq", "opq/kept"]
    assert all(not m.pax_headers for m in members.values())  # no fuse-overlayfs xattr leaks
