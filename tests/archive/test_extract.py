"""What lands on disk: owners, modes, times, links, devices, xattrs."""

from __future__ import annotations

import io
import os
import stat

import pytest

from eventstore.errors import ContentRejected, InvalidArgument

from .support import MTIME, TarBuilder


def test_owners_and_special_mode_bits(layer):
    layer.import_bytes(TarBuilder()
                       .file("suid", b"x", mode=0o4755, uid=1000, gid=1001)
                       .file("sgid", b"x", mode=0o2711, uid=0, gid=42)
                       .dir("sticky", mode=0o1777, uid=5, gid=6)
                       .dir("setgid-dir", mode=0o2755, gid=77)
                       .bytes())
    for name, mode, uid, gid in [("suid", 0o4755, 1000, 1001), ("sgid", 0o2711, 0, 42),
                                 ("sticky", 0o1777, 5, 6), ("setgid-dir", 0o2755, 0, 77)]:
        st = os.lstat(layer.path(name))
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), name


def test_nanosecond_mtimes_from_pax(layer):
    layer.import_bytes(TarBuilder()
                       .file("f", b"x", pax_headers={"mtime": "1700000000.123456789",
                                                     "atime": "1600000000.5"})
                       .bytes())
    st = os.lstat(layer.path("f"))
    assert st.st_mtime_ns == 1_700_000_000_123_456_789
    assert st.st_atime_ns == 1_600_000_000_500_000_000


def test_symlink_times_are_set_on_the_link(layer):
    layer.import_bytes(TarBuilder().symlink("link", "/nowhere", mtime=MTIME - 99,
                                            uid=7, gid=8).bytes())
    st = os.lstat(layer.path("link"))
    assert st.st_mtime == MTIME - 99
    assert (st.st_uid, st.st_gid) == (7, 8)
    assert os.readlink(layer.path("link")) == "/nowhere"


def test_directory_times_are_set_after_their_contents(layer):
    layer.import_bytes(TarBuilder().dir("d", mtime=MTIME - 1000).file("d/a", b"x")
                       .dir("d/sub", mtime=MTIME - 2000).file("d/sub/b", b"y").bytes())
    assert os.lstat(layer.path("d")).st_mtime == MTIME - 1000
    assert os.lstat(layer.path("d/sub")).st_mtime == MTIME - 2000


def test_root_entry_sets_the_root_directory(layer):
    layer.import_bytes(TarBuilder().dir("./", mode=0o750, uid=3, gid=4, mtime=MTIME - 5)
                       .file("a", b"x").bytes())
    st = os.lstat(layer.target)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 3, 4)
    assert st.st_mtime == MTIME - 5


def test_hardlinks_share_an_inode(layer):
    layer.import_bytes(TarBuilder().file("a", b"shared").hardlink("b", "a")
                       .dir("d").hardlink("d/c", "a").bytes())
    inodes = {os.lstat(layer.path(n)).st_ino for n in ("a", "b", "d/c")}
    assert len(inodes) == 1
    assert os.lstat(layer.path("a")).st_nlink == 3


def test_hardlink_to_a_symlink_links_the_symlink_itself(layer):
    layer.import_bytes(TarBuilder().symlink("s", "/etc/shadow").hardlink("h", "s").bytes())
    assert os.readlink(layer.path("h")) == "/etc/shadow"
    assert os.lstat(layer.path("h")).st_ino == os.lstat(layer.path("s")).st_ino


def test_devices_and_fifos(layer):
    layer.import_bytes(TarBuilder().chardev("null", 1, 3, mode=0o666)
                       .blockdev("loop", 7, 4, mode=0o640, uid=0, gid=6)
                       .fifo("pipe", mode=0o620, uid=9).bytes())
    null, loop, pipe = (os.lstat(layer.path(n)) for n in ("null", "loop", "pipe"))
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 \
        and os.minor(null.st_rdev) == 3 and stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) \
        == (7, 4) and loop.st_gid == 6
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620 \
        and pipe.st_uid == 9


def test_xattrs_are_set(layer):
    layer.import_bytes(TarBuilder()
                       .file("f", b"x", pax_headers={"SCHILY.xattr.user.colour": "blue",
                                                     "SCHILY.xattr.trusted.t": "\x00\x01"})
                       .dir("d", pax_headers={"SCHILY.xattr.user.d": "on a dir"})
                       .bytes())
    assert os.getxattr(layer.path("f"), "user.colour") == b"blue"
    assert os.getxattr(layer.path("f"), "trusted.t") == b"\x00\x01"
    assert os.getxattr(layer.path("d"), "user.d") == b"on a dir"


def test_capability_xattr_survives_the_chown(layer):
    # a valid VFS_CAP_REVISION_2 value: cap_net_bind_service, effective
    cap = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")
    layer.import_bytes(TarBuilder()
                       .file("ping", b"x", uid=1000, pax_headers={
                           "SCHILY.xattr.security.capability": cap.decode("latin-1")})
                       .bytes())
    # tarfile encodes the str as UTF-8; what matters is that it is still there
    assert os.getxattr(layer.path("ping"), "security.capability")


def test_long_names_and_targets(layer):
    deep = "/".join(["component-%03d" % i for i in range(30)])
    layer.import_bytes(TarBuilder().file(deep, b"x").symlink("l", "y" * 1000).bytes())
    assert layer.path(deep).read_bytes() == b"x"
    assert os.readlink(layer.path("l")) == "y" * 1000


def test_implied_parent_directories_are_made(layer):
    layer.import_bytes(TarBuilder().file("a/b/c/file", b"x").bytes())
    st = os.lstat(layer.path("a/b"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755


def test_symlinked_parent_is_followed_inside_the_layer(layer):
    # merged-/usr images: lib -> usr/lib, and a later entry under lib/
    layer.import_bytes(TarBuilder().dir("usr").dir("usr/lib").symlink("lib", "usr/lib")
                       .file("lib/libx.so", b"elf").bytes())
    assert layer.path("usr/lib/libx.so").read_bytes() == b"elf"
    assert layer.path("lib").is_symlink()


def test_entry_counts(layer):
    result = layer.import_bytes(TarBuilder().dir("d").file("d/a", b"x").file(".wh.b")
                                .bytes())
    assert result.entries == 3


def test_tarsplit_is_written_and_a_failed_import_removes_it(layer, tmp_path):
    layer.import_bytes(TarBuilder().file("a", b"x").bytes())
    assert layer.tarsplit.stat().st_size > 0
    from eventstore.archive import import_layer
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ContentRejected):
        import_layer(io.BytesIO(b"not a tar at all" * 100), other, tmp_path / "other.ts",
                     whiteout_format="overlay")
    assert not (tmp_path / "other.ts").exists()


def test_bad_arguments(tmp_path):
    from eventstore.archive import import_layer
    (tmp_path / "t").mkdir()
    (tmp_path / "exists.ts").write_bytes(b"")
    cases = [
        dict(target=tmp_path / "t", tarsplit_path=tmp_path / "ts", whiteout_format="aufs"),
        dict(target=tmp_path / "missing", tarsplit_path=tmp_path / "ts",
             whiteout_format="overlay"),
        dict(target=tmp_path / "t", tarsplit_path=tmp_path / "exists.ts",
             whiteout_format="overlay"),
        dict(target=tmp_path / "t", tarsplit_path=tmp_path / "ts", whiteout_format="overlay",
             max_size=0),
    ]
    for case in cases:
        with pytest.raises(InvalidArgument):
            import_layer(io.BytesIO(b""), **case)
    assert (tmp_path / "exists.ts").read_bytes() == b""


# --- files made without fchown/fchmod (eventstore/archive/ownership.py) ----------------

def test_a_setgid_directory_does_not_give_its_group_to_root_files(layer):
    # open(2) in a setgid directory gives the directory's group: the shortcut that skips
    # fchown for root:root files must notice, for files and for directories
    layer.import_bytes(TarBuilder().dir("shared", mode=0o2775, gid=50)
                       .file("shared/f", b"x", mode=0o644).dir("shared/sub", mode=0o755)
                       .file("shared/sub/g", b"y", mode=0o644).bytes())
    for name, mode in [("shared/f", 0o644), ("shared/sub", 0o755), ("shared/sub/g", 0o644)]:
        st = os.lstat(layer.path(name))
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, 0, 0), name


def test_a_directory_made_setgid_later_is_noticed(layer):
    # the directory's setgid bit is learnt once; an entry that changes it must count
    layer.import_bytes(TarBuilder().dir("d", mode=0o755).file("d/a", b"x")
                       .dir("d", mode=0o2755, gid=60).file("d/b", b"y").bytes())
    assert os.lstat(layer.path("d/b")).st_gid == 0
    assert os.lstat(layer.path("d")).st_gid == 60


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_modes_are_exact_whatever_the_umask(layer, umask):
    modes = {"rw-rw-rw-": 0o666, "rwxr-xr-x": 0o755, "r--------": 0o400, "none": 0o000,
             "rwxrwxrwx": 0o777, "suid": 0o4755}
    builder = TarBuilder()
    for name, mode in modes.items():
        builder.file(name, b"x", mode=mode)
    old = os.umask(umask)
    try:
        layer.import_bytes(builder.bytes())
    finally:
        os.umask(old)
    assert {name: stat.S_IMODE(os.lstat(layer.path(name)).st_mode) for name in modes} == modes


def test_files_of_other_owners_get_them(layer):
    layer.import_bytes(TarBuilder().file("a", b"x", uid=1000, gid=0).file("b", b"x", uid=0, gid=1000)
                       .file("c", b"x", uid=0, gid=0).bytes())
    assert [(os.lstat(layer.path(n)).st_uid, os.lstat(layer.path(n)).st_gid) for n in "abc"] == \
        [(1000, 0), (0, 1000), (0, 0)]
