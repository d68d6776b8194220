"""Whiteouts, the kernel's way (overlay) and by deleting (delete)."""

from __future__ import annotations

import os
import stat

from .support import TarBuilder


def is_whiteout(path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_overlay_whiteout_is_a_0_0_char_device(layer):
    layer.import_bytes(TarBuilder().dir("etc").file("etc/.wh.passwd").file(".wh.top").bytes(),
                       "overlay")
    assert is_whiteout(layer.path("etc/passwd"))
    assert is_whiteout(layer.path("top"))
    assert not layer.path("etc/.wh.passwd").exists()


def test_overlay_opaque_directory_gets_the_xattr(layer):
    layer.import_bytes(TarBuilder().dir("d").file("d/.wh..wh..opq").file("d/new", b"x")
                       .bytes(), "overlay")
    assert os.getxattr(layer.path("d"), "trusted.overlay.opaque") == b"y"
    assert layer.path("d/new").read_bytes() == b"x"
    assert not os.path.lexists(layer.path("d/.wh..wh..opq"))


def test_overlay_opaque_marker_without_a_directory_entry(layer):
    layer.import_bytes(TarBuilder().file("a/b/.wh..wh..opq").bytes(), "overlay")
    assert os.getxattr(layer.path("a/b"), "trusted.overlay.opaque") == b"y"


def test_overlay_whiteout_replaces_an_entry_of_the_same_tar(layer):
    layer.import_bytes(TarBuilder().dir("gone").file("gone/x", b"1").file(".wh.gone").bytes(),
                       "overlay")
    assert is_whiteout(layer.path("gone"))


def test_aufs_bookkeeping_entries_are_skipped(layer):
    layer.import_bytes(TarBuilder().file(".wh..wh.plnk/123.456").dir(".wh..wh.orph")
                       .file("real", b"x").bytes(), "overlay")
    assert os.listdir(layer.target) == ["real"]


def parent_tree(layer) -> None:
    """What a vfs child starts as: a copy of its parent."""
    (layer.target / "etc").mkdir()
    (layer.target / "etc/passwd").write_text("root")
    (layer.target / "etc/hosts").write_text("localhost")
    (layer.target / "var/lib/dpkg").mkdir(parents=True)
    (layer.target / "var/lib/dpkg/status").write_text("status")
    (layer.target / "opaque/keep-not").mkdir(parents=True)
    (layer.target / "opaque/old").write_text("old")
    (layer.target / "opaque/keep-not/deep").write_text("deep")


def test_delete_whiteout_removes_files_and_trees(layer):
    parent_tree(layer)
    layer.import_bytes(TarBuilder().file("etc/.wh.passwd").file(".wh.var")
                       .file(".wh.never-existed").bytes(), "delete")
    assert not layer.path("etc/passwd").exists()
    assert layer.path("etc/hosts").read_text() == "localhost"
    assert not layer.path("var").exists()
    assert not os.path.lexists(layer.path("never-existed"))
    assert not os.path.lexists(layer.path(".wh.never-existed"))


def test_delete_opaque_empties_the_parent_content_but_keeps_this_layers(layer):
    parent_tree(layer)
    layer.import_bytes(TarBuilder().dir("opaque").file("opaque/before", b"mine")
                       .file("opaque/.wh..wh..opq").file("opaque/after", b"mine too")
                       .bytes(), "delete")
    assert sorted(os.listdir(layer.path("opaque"))) == ["after", "before"]


def test_delete_opaque_keeps_this_layers_files_inside_parent_directories(layer):
    parent_tree(layer)
    layer.import_bytes(TarBuilder().file("opaque/keep-not/mine", b"x")
                       .file("opaque/.wh..wh..opq").bytes(), "delete")
    assert sorted(os.listdir(layer.path("opaque"))) == ["keep-not"]
    assert os.listdir(layer.path("opaque/keep-not")) == ["mine"]


def test_delete_format_writes_no_whiteout_devices(layer):
    parent_tree(layer)
    layer.import_bytes(TarBuilder().file("etc/.wh.hosts").bytes(), "delete")
    assert sorted(os.listdir(layer.path("etc"))) == ["passwd"]
