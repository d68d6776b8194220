"""diff_changes: a correct tar of a writable layer's changes, whiteouts included."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from eventstore.archive import diff_changes, import_layer

from .support import tree_listing


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8",
                      errors="surrogateescape") as tar:
        return {m.name: m for m in tar.getmembers()}


def diff(layer_dir: Path, parents: list[Path], fmt: str) -> bytes:
    return b"".join(diff_changes(layer_dir, parents, fmt))


# --- overlay: the upper dir is the change set -------------------------------------------

@pytest.fixture
def upper(tmp_path: Path) -> Path:
    up = tmp_path / "upper"
    (up / "etc").mkdir(parents=True)
    (up / "etc/hosts").write_text("changed hosts")
    os.mknod(up / "etc/passwd", stat.S_IFCHR, os.makedev(0, 0))  # deleted
    (up / "opaque-dir").mkdir()
    os.setxattr(up / "opaque-dir", "trusted.overlay.opaque", b"y")
    (up / "opaque-dir/only").write_text("only this")
    (up / "new-dir/sub").mkdir(parents=True)
    (up / "new-dir/sub/file").write_bytes(b"\0" * 10)
    os.symlink("../etc/hosts", up / "new-dir/link")
    os.link(up / "etc/hosts", up / "new-dir/hosts-link")
    os.setxattr(up / "etc/hosts", "user.mark", b"m")
    os.setxattr(up / "etc", "trusted.overlay.origin", b"kernel-private")
    return up


def test_overlay_entries(upper):
    got = members(diff(upper, [], "overlay"))
    assert set(got) == {
        "etc", "etc/hosts", "etc/.wh.passwd", "opaque-dir", "opaque-dir/.wh..wh..opq",
        "opaque-dir/only", "new-dir", "new-dir/sub", "new-dir/sub/file", "new-dir/link",
        "new-dir/hosts-link"}
    assert got["etc/.wh.passwd"].isfile() and got["etc/.wh.passwd"].size == 0
    assert got["new-dir/link"].issym() and got["new-dir/link"].linkname == "../etc/hosts"
    links = [got["etc/hosts"], got["new-dir/hosts-link"]]
    assert sum(m.islnk() for m in links) == 1  # the second name is a hardlink
    assert got["etc/hosts"].pax_headers.get("SCHILY.xattr.user.mark") == "m" or \
        got["new-dir/hosts-link"].pax_headers.get("SCHILY.xattr.user.mark") == "m"
    assert not any("trusted.overlay" in k for m in got.values() for k in m.pax_headers)


def test_overlay_diff_applies_back_to_the_same_upper(upper, tmp_path):
    data = diff(upper, [], "overlay")
    again = tmp_path / "again"
    again.mkdir()
    import_layer(io.BytesIO(data), again, tmp_path / "again.ts", whiteout_format="overlay")
    assert os.getxattr(again / "opaque-dir", "trusted.overlay.opaque") == b"y"
    st = os.lstat(again / "etc/passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    for name in ("etc/hosts", "opaque-dir/only", "new-dir/sub/file"):
        assert (again / name).read_bytes() == (upper / name).read_bytes()
    assert os.readlink(again / "new-dir/link") == "../etc/hosts"
    assert os.lstat(again / "etc/hosts").st_ino == os.lstat(again / "new-dir/hosts-link").st_ino


def test_diff_output_is_a_complete_tar(upper):
    data = diff(upper, [], "overlay")
    assert len(data) % 512 == 0
    assert data.endswith(bytes(1024))


# --- delete format: compare two full trees -------------------------------------------

@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    parent = tmp_path / "parent"
    (parent / "usr/bin").mkdir(parents=True)
    (parent / "usr/bin/tool").write_text("v1")
    (parent / "usr/bin/same").write_text("unchanged")
    (parent / "usr/share/doc").mkdir(parents=True)
    (parent / "usr/share/doc/readme").write_text("doc")
    (parent / "etc").mkdir()
    (parent / "etc/config").write_text("cfg")
    (parent / "etc/mode").write_text("mode")
    (parent / "was-file").write_text("file")
    (parent / "was-dir").mkdir()
    (parent / "was-dir/x").write_text("x")
    for path in parent.rglob("*"):
        os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    layer = tmp_path / "layer"
    shutil.copytree(parent, layer, symlinks=True)  # copy2 keeps the times
    for path in [layer, *layer.rglob("*")]:
        os.utime(path, ns=(os.lstat(parent / path.relative_to(layer)).st_atime_ns,
                           os.lstat(parent / path.relative_to(layer)).st_mtime_ns),
                 follow_symlinks=False)
    # the changes
    (layer / "usr/bin/tool").write_text("v2, longer")
    (layer / "usr/bin/added").write_text("new")
    shutil.rmtree(layer / "usr/share/doc")
    os.unlink(layer / "etc/config")
    os.chmod(layer / "etc/mode", 0o600)
    os.unlink(layer / "was-file")
    (layer / "was-file").mkdir()
    (layer / "was-file/inside").write_text("in")
    shutil.rmtree(layer / "was-dir")
    (layer / "was-dir").write_text("now a file")
    return parent, layer


def test_delete_format_entries(trees):
    parent, layer = trees
    got = members(diff(layer, [parent], "delete"))
    assert {"usr/bin/tool", "usr/bin/added", "usr/share/.wh.doc", "etc/.wh.config",
            "etc/mode", "was-file", "was-file/inside", "was-dir"} <= set(got)
    assert "usr/bin/same" not in got
    assert "usr/share/doc/readme" not in got
    assert got["was-file"].isdir() and got["was-dir"].isfile()
    assert stat.S_IMODE(got["etc/mode"].mode) == 0o600
    # every entry's parent directory comes before it
    order = list(got)
    for name in order:
        parent_name = name.rpartition("/")[0]
        if parent_name:
            assert parent_name in order[:order.index(name)], name


def test_delete_format_diff_applied_to_the_parent_gives_the_layer(trees, tmp_path):
    parent, layer = trees
    data = diff(layer, [parent], "delete")
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(parent, rebuilt, symlinks=True)
    import_layer(io.BytesIO(data), rebuilt, tmp_path / "rebuilt.ts", whiteout_format="delete")

    def comparable(root):
        return {path: (mode, uid, gid, size, content)
                for path, (mode, uid, gid, size, _mtime, _ino, content)
                in tree_listing(root).items() if not stat.S_ISDIR(mode) or path == "."}
    assert comparable(rebuilt) == comparable(layer)


def test_delete_format_without_parent_is_everything(trees):
    _, layer = trees
    got = members(diff(layer, [], "delete"))
    assert "usr/bin/same" in got and not any(".wh." in name for name in got)


def test_unchanged_tree_gives_an_empty_tar(trees, tmp_path):
    parent, _ = trees
    same = tmp_path / "same"
    shutil.copytree(parent, same, symlinks=True)
    for path in [same, *same.rglob("*")]:
        st = os.lstat(parent / path.relative_to(same))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    assert diff(same, [parent], "delete") == bytes(1024)


def test_very_deep_trees_do_not_run_out_of_descriptors(tmp_path):
    import resource
    parent, layer = tmp_path / "p", tmp_path / "l"
    for root in (parent, layer):
        path = root
        path.mkdir()
        fd = os.open(path, os.O_RDONLY)
        for _ in range(1500):  # deeper than PATH_MAX allows in one path
            os.mkdir("d", dir_fd=fd)
            down = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.utime(down, ns=(10**18, 10**18))
            os.close(fd)
            fd = down
        os.close(fd)
    fd = os.open(layer, os.O_RDONLY)
    for _ in range(1500):
        down = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = down
    with open(os.open("new", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
        f.write(b"deep")
    os.utime(fd, ns=(10**18, 10**18))
    os.close(fd)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(200, hard), hard))
    try:
        got = members(diff(layer, [parent], "delete"))
        overlay = members(diff(layer, [], "overlay"))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert list(got)[-1] == "/".join(["d"] * 1500) + "/new"
    assert len(got) == 1501  # the file and every directory on its way
    assert len(overlay) == 1501
