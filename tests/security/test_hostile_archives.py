"""Hostile archives: each is refused or contained, and nothing outside the layer's
directory changes (the ``sandbox`` fixture checks that after every test).

docs/security.md gives the decision for each case and the reason.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import stat

import pytest

from ..archive.support import TarBuilder
from .hostile import archive, header, member, pad


def outside_path(sandbox, name: str = "") -> bytes:
    return os.fsencode(sandbox.outside / name) if name else os.fsencode(sandbox.outside)


# --- names -------------------------------------------------------------------------------

def test_dotdot_name_is_refused(sandbox):
    message = sandbox.refused(archive(member(b"../outside/pwned", b"x")), match=r"'\.\.'")
    assert "../outside/pwned" in message  # the message names the entry


def test_dotdot_inside_a_name_is_refused(sandbox):
    sandbox.refused(archive(member(b"a/b/../../../outside/pwned", b"x")))


def test_absolute_name_is_contained(sandbox):
    name = outside_path(sandbox, "pwned")
    sandbox.contained(archive(member(name, b"x")))
    assert sandbox.in_target(name).read_bytes() == b"x"


def test_nul_in_a_pax_name_is_refused(sandbox):
    sandbox.refused(archive(member(b"ok", b"x", pax={b"path": b"ok\0../../outside/pwned"})),
                    match="NUL")


def test_nul_in_a_symlink_target_is_refused(sandbox):
    sandbox.refused(archive(member(b"s", typeflag=b"2",
                                   pax={b"linkpath": b"/etc\0/passwd"})), match="NUL")


def test_overlong_name_is_refused(sandbox):
    sandbox.refused(archive(member(b"x", b"x", pax={b"path": b"a/" * 2100 + b"f"})),
                    match="limit")


def test_overlong_component_is_refused(sandbox):
    sandbox.refused(archive(member(b"x", b"x", pax={b"path": b"n" * 300})), match="255")


def test_entry_replacing_the_root_is_refused(sandbox):
    sandbox.refused(archive(member(b"./", typeflag=b"2", linkname=str(sandbox.outside)
                                   .encode())), match="root")


# --- symlinks and hardlinks --------------------------------------------------------------

def test_write_through_an_absolute_symlink_is_refused(sandbox):
    data = archive(member(b"esc", typeflag=b"2", linkname=outside_path(sandbox)),
                   member(b"esc/pwned", b"x"))
    sandbox.refused(data, match="symlink")


def test_write_through_a_symlink_to_root_stays_in_the_layer(sandbox):
    data = archive(member(b"etc", typeflag=b"5", mode=0o755),
                   member(b"root", typeflag=b"2", linkname=b"/"),
                   member(b"root/etc/pwned", b"x"))
    sandbox.contained(data)
    assert sandbox.in_target("etc/pwned").read_bytes() == b"x"


def test_write_through_a_dotdot_symlink_stays_in_the_layer(sandbox):
    data = archive(member(b"outside", typeflag=b"5", mode=0o755),
                   member(b"a", typeflag=b"5", mode=0o755),
                   member(b"a/up", typeflag=b"2", linkname=b"../../../../../../.."),
                   member(b"a/up/outside/pwned", b"x"))
    sandbox.contained(data)
    assert sandbox.in_target("outside/pwned").read_bytes() == b"x"


def test_file_over_a_symlink_replaces_the_symlink(sandbox):
    data = archive(member(b"f", typeflag=b"2", linkname=outside_path(sandbox, "secret")),
                   member(b"f", b"pwned"))
    sandbox.contained(data)
    assert not sandbox.in_target("f").is_symlink()
    assert sandbox.in_target("f").read_bytes() == b"pwned"


def test_directory_over_a_symlink_replaces_the_symlink(sandbox):
    data = archive(member(b"d", typeflag=b"2", linkname=outside_path(sandbox)),
                   member(b"d", typeflag=b"5", mode=0o777),
                   member(b"d/pwned", b"x"))
    sandbox.contained(data)
    assert sandbox.in_target("d/pwned").read_bytes() == b"x"


def test_hardlink_outside_by_dotdot_is_refused(sandbox):
    sandbox.refused(archive(member(b"h", typeflag=b"1", linkname=b"../outside/secret")),
                    match=r"'\.\.'")


def test_hardlink_outside_by_absolute_name_is_refused(sandbox):
    sandbox.refused(archive(member(b"h", typeflag=b"1",
                                   linkname=outside_path(sandbox, "secret"))),
                    match="does not exist")


def test_hardlink_to_a_symlink_pointing_outside_links_the_symlink(sandbox):
    data = archive(member(b"s", typeflag=b"2", linkname=outside_path(sandbox, "secret")),
                   member(b"h", typeflag=b"1", linkname=b"s"),
                   member(b"h", b"overwrite attempt"),
                   member(b"s", b"second attempt"))
    sandbox.contained(data)
    assert sandbox.in_target("h").read_bytes() == b"overwrite attempt"


def test_hardlink_through_a_symlinked_directory_stays_in_the_layer(sandbox):
    data = archive(member(b"etc", typeflag=b"5", mode=0o755),
                   member(b"etc/passwd", b"layer's own"),
                   member(b"r", typeflag=b"2", linkname=b"/"),
                   member(b"h", typeflag=b"1", linkname=b"r/etc/passwd"))
    sandbox.contained(data)
    assert os.lstat(sandbox.in_target("h")).st_ino == os.lstat(
        sandbox.in_target("etc/passwd")).st_ino


def test_hardlink_to_a_directory_is_refused(sandbox):
    sandbox.refused(archive(member(b"d", typeflag=b"5"),
                            member(b"h", typeflag=b"1", linkname=b"d")), match="directory")


def test_symlink_loop_is_refused(sandbox):
    sandbox.refused(archive(member(b"a", typeflag=b"2", linkname=b"b"),
                            member(b"b", typeflag=b"2", linkname=b"a"),
                            member(b"a/x", b"x")), match="symlinks")


def test_replacing_a_directory_holding_an_escaping_symlink(sandbox):
    data = archive(member(b"d", typeflag=b"5"),
                   member(b"d/esc", typeflag=b"2", linkname=outside_path(sandbox)),
                   member(b"d/esc2", typeflag=b"2", linkname=b"../../outside"),
                   member(b"d", b"now a file"))
    sandbox.contained(data)
    assert sandbox.in_target("d").read_bytes() == b"now a file"


# --- whiteouts ----------------------------------------------------------------------------

@pytest.mark.parametrize("whiteout_format", ["overlay", "delete"])
@pytest.mark.parametrize("name", [b".wh..", b".wh...", b"sub/.wh..", b".wh."])
def test_whiteout_naming_dot_dotdot_or_nothing_is_refused(sandbox, whiteout_format, name):
    sandbox.refused(archive(member(name)), whiteout_format=whiteout_format,
                    match="whiteout")


@pytest.mark.parametrize("whiteout_format", ["overlay", "delete"])
def test_whiteout_with_dotdot_path_is_refused(sandbox, whiteout_format):
    sandbox.refused(archive(member(b"../.wh.outside")), whiteout_format=whiteout_format)


def test_delete_whiteout_through_a_symlink_to_outside_is_refused(sandbox):
    data = archive(member(b"s", typeflag=b"2", linkname=outside_path(sandbox)),
                   member(b"s/.wh.secret"))
    sandbox.refused(data, whiteout_format="delete")


def test_delete_whiteout_of_a_symlink_removes_only_the_symlink(sandbox):
    data = archive(member(b"s", typeflag=b"2", linkname=outside_path(sandbox)),
                   member(b".wh.s"))
    sandbox.contained(data, whiteout_format="delete")
    assert not os.path.lexists(sandbox.in_target("s"))


def test_opaque_root_in_delete_format_empties_only_the_layer(sandbox):
    (sandbox.target / "from-parent").mkdir()
    os.symlink(sandbox.outside, sandbox.target / "from-parent/esc")
    sandbox.contained(archive(member(b".wh..wh..opq"), member(b"kept", b"k")),
                      whiteout_format="delete")
    assert os.listdir(sandbox.target) == ["kept"]


def test_overlay_whiteout_over_a_symlink_replaces_the_symlink(sandbox):
    data = archive(member(b"s", typeflag=b"2", linkname=outside_path(sandbox, "secret")),
                   member(b".wh.s"))
    sandbox.contained(data, whiteout_format="overlay")
    st = os.lstat(sandbox.in_target("s"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# --- numbers and sizes ---------------------------------------------------------------------

def test_negative_size_is_refused(sandbox):
    sandbox.refused(archive(header(b"f", size=-1), end=True), match="negative")


def test_huge_size_is_refused(sandbox):
    sandbox.refused(archive(header(b"f", size=1 << 62)), match="limit")


def test_size_over_max_size_is_refused_before_reading(sandbox):
    sandbox.refused(archive(header(b"f", size=10_000_000)), max_size=1_000_000,
                    match="limit")
    assert not sandbox.in_target("f").exists()


def test_huge_pax_header_is_refused(sandbox):
    sandbox.refused(archive(header(b"PaxHeaders/x", size=2 << 20, typeflag=b"x")),
                    match="extension header")


def test_huge_uid_is_refused(sandbox):
    sandbox.refused(archive(member(b"f", b"x", pax={b"uid": b"%d" % (1 << 40)})),
                    match="uid")


@pytest.mark.parametrize("major, minor", [(1 << 40, 0), (1 << 31, 0), (4096, 1), (1, 1 << 20)])
def test_device_number_out_of_range_is_refused(sandbox, major, minor):
    sandbox.refused(archive(header(b"dev", typeflag=b"3", devmajor=major, devminor=minor)),
                    match="device")


def test_mtime_out_of_range_is_refused(sandbox):
    sandbox.refused(archive(member(b"f", b"x", pax={b"mtime": b"1" + b"0" * 30})),
                    match="time")


def test_overlay_private_xattrs_are_refused(sandbox):
    sandbox.refused(archive(member(b"d", typeflag=b"5", pax={
        b"SCHILY.xattr.trusted.overlay.redirect": b"/etc"})), match="overlay")


# --- broken streams --------------------------------------------------------------------------

def test_bad_header_checksum_is_refused(sandbox):
    sandbox.refused(archive(header(b"f", checksum_delta=1)), match="checksum")


def test_truncated_inside_a_payload_is_refused(sandbox):
    data = archive(member(b"f", b"x" * 5000))
    sandbox.refused(data[:512 + 3000], match="truncated")


def test_truncated_inside_a_header_is_refused(sandbox):
    data = archive(member(b"a", b"x"), member(b"b", b"y"))
    sandbox.refused(data[:1024 + 100], match="truncated")


def test_truncated_gzip_is_refused(sandbox):
    data = gzip.compress(TarBuilder().file("f", os.urandom(20000)).bytes())
    sandbox.refused(data[:len(data) // 2], match="truncated")


def test_corrupt_gzip_is_refused(sandbox):
    data = bytearray(gzip.compress(TarBuilder().file("f", os.urandom(20000)).bytes()))
    data[len(data) // 2:len(data) // 2 + 50] = b"\xff" * 50
    sandbox.refused(bytes(data), match="gzip")


def test_gzip_bomb_stops_at_max_size(sandbox):
    bomb = gzip.compress(TarBuilder().file("zeros", bytes(64 << 20)).bytes(), 9)
    assert len(bomb) < 100_000
    sandbox.refused(bomb, max_size=8 << 20, match="limit")


def test_trailing_garbage_after_end_of_archive_is_refused(sandbox):
    data = TarBuilder().file("f", b"x").bytes() + b"garbage"
    sandbox.refused(data, match="after the end-of-archive")


def test_trailing_garbage_after_the_gzip_stream_is_refused(sandbox):
    data = gzip.compress(TarBuilder().file("f", b"x").bytes()) + b"garbage"
    sandbox.refused(data, match="after the end of the gzip stream")


def test_zero_block_followed_by_an_entry_is_refused(sandbox):
    data = bytes(512) + member(b"hidden", b"x")
    sandbox.refused(data, match="end-of-archive")


def test_not_a_tar_is_refused(sandbox):
    sandbox.refused(b"<html>this is an error page, not a layer</html>" * 20,
                    match="not a tar")


def test_duplicate_entries_are_contained(sandbox):
    data = archive(member(b"f", b"1"), member(b"f", typeflag=b"2",
                                                  linkname=outside_path(sandbox, "secret")),
                   member(b"f", b"3"), member(b"f", typeflag=b"5"), member(b"f/g", b"4"))
    sandbox.contained(data)
    assert sandbox.in_target("f/g").read_bytes() == b"4"


def test_extension_header_without_an_entry_is_refused(sandbox):
    records = b"20 path=dangling...\n"
    data = header(b"PaxHeaders/x", size=len(records), typeflag=b"x") + pad(records)
    sandbox.refused(data + bytes(1024), match="not followed by an entry")


def test_unknown_entry_type_is_refused(sandbox):
    sandbox.refused(archive(member(b"f", typeflag=b"M")), match="unsupported entry type")


def test_pax_global_header_does_not_rename_later_entries(sandbox):
    records = b"".join([b"%d path=%s\n" % (len(b" path=hijack\n") + 2, b"hijack")])
    data = archive(header(b"PaxHeaders/g", size=len(records), typeflag=b"g") + pad(records),
                   member(b"f", b"x"))
    sandbox.contained(data)
    assert sandbox.in_target("f").read_bytes() == b"x"
    assert not sandbox.in_target("hijack").exists()


def test_refused_import_leaves_no_thread_running(sandbox):
    import threading
    bomb = gzip.compress(bytes(32 << 20), 1)
    sandbox.refused(TarBuilder().file("a", b"x" * 2000).bytes()[:1000])
    sandbox.refused(bomb, max_size=1 << 20)
    assert not [t for t in threading.enumerate() if t.name == "layer-decompress"]


def test_very_deep_names_do_not_run_out_of_descriptors(sandbox):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(400, hard), hard))
    try:
        deep = b"/".join([b"d"] * 2000)  # 3999 bytes: under PATH_MAX, 2000 levels
        up = b"d/" * 600 + b"../" * 590  # down 600 levels, back up to the tenth
        data = archive(member(b"x", b"bottom", pax={b"path": deep + b"/f"}),
                       member(b"up", typeflag=b"2", pax={b"linkpath": up}),
                       member(b"up/g", b"through the link"),
                       member(b".wh.d"))
        sandbox.contained(data, whiteout_format="delete")
        assert os.listdir(sandbox.target) == ["up"]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_very_deep_names_land_where_they_say(sandbox):
    deep = b"/".join([b"d"] * 1500)
    up = b"d/" * 600 + b"../" * 590
    sandbox.contained(archive(member(b"x", b"bottom", pax={b"path": deep + b"/f"}),
                              member(b"up", typeflag=b"2", pax={b"linkpath": up}),
                              member(b"up/g", b"through the link")))
    try:
        assert (sandbox.target / os.fsdecode(deep) / "f").read_bytes() == b"bottom"
        assert (sandbox.target / "/".join(["d"] * 10) / "g").read_bytes() == b"through the link"
    finally:
        # 1,500 levels: deeper than the recursion shutil.rmtree (and so pytest's own
        # tmp cleanup) can manage; rm removes it iteratively
        subprocess.run(["rm", "-rf", "--", str(sandbox.target / "d")], check=True)
