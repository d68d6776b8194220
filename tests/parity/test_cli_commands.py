"""Every layer command containers-storage has, through the real CLI, on vfs and overlay:
what it prints, what it changes, and how it refuses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.cli.support import cli_command, cli_env, fails, ok
from tests.store.support import unmount_everything_under

from .support import DRIVERS, base_tar, change_tar, skip_unless_driver_runs, tar_members, tar_names


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


@pytest.fixture(params=DRIVERS)
def driver(request) -> str:
    skip_unless_driver_runs(request.param)
    return request.param


class Store:
    """The CLI on one root and driver."""

    def __init__(self, root: Path, driver: str):
        self.root, self.driver = root, driver

    def ok(self, *args: str, **kwargs) -> str:
        return ok(self.root, *args, driver=self.driver, **kwargs)

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json"))  # --json after the command, as podman takes it

    def fails(self, code: int, *args: str) -> str:
        return fails(self.root, code, *args, driver=self.driver)

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run(cli_command(self.root, *args, driver=self.driver), input=stdin, env=cli_env(),
                              capture_output=True, timeout=120)


@pytest.fixture
def s(tmp_path: Path, driver: str) -> Store:
    return Store(tmp_path / "store", driver)


@pytest.fixture
def tars(tmp_path: Path) -> dict[str, Path]:
    paths = {"base": tmp_path / "base.tar", "change": tmp_path / "change.tar"}
    paths["base"].write_bytes(base_tar())
    paths["change"].write_bytes(change_tar())
    return paths


def image(s: Store, tars) -> str:
    return s.ok("import-layer", "-f", str(tars["base"])).strip()


def container_with_writes(s: Store, tars) -> tuple[str, str]:
    base = image(s, tars)
    container = s.ok("create-layer", base).strip()
    root = Path(s.ok("mount", container).strip())
    (root / "new-file").write_bytes(b"0123456789")
    (root / "etc" / "passwd").unlink()
    s.ok("umount", container)
    return base, container


# --- creating ----------------------------------------------------------------------------

def test_create_layer_is_writable_unless_readonly(s: Store):
    writable = s.ok("create-layer", "-n", "w").strip()
    assert s.json("layer", writable)["writable"] is True
    readonly = s.ok("create-layer", "--readonly", "-n", "r", writable).strip()
    layer = s.json("layer", "r")
    assert layer["id"] == readonly and layer["writable"] is False
    assert layer["parent"] == writable and layer["names"] == ["r"]


def test_import_layer_reads_stdin_or_file(s: Store, tars):
    from_file = image(s, tars)
    result = s.run("import-layer", "--name", "piped", stdin=base_tar())
    assert result.returncode == 0
    assert s.json("layer", "piped")["diff-digest"] == s.json("layer", from_file)["diff-digest"]
    assert "cannot read" in s.fails(2, "import-layer", "-f", str(tars["base"]) + "-missing")
    assert "not a tar archive" in s.fails(3, "import-layer", "-f", __file__)


def test_create_with_an_id_mapping_owns_files_by_host_ids(s: Store, tars):
    layer = s.ok("create", "--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536", str(tars["base"])).strip()
    shown = s.json("layer", layer)
    assert shown["uidmap"] == [{"container-id": 0, "host-id": 100000, "size": 65536}]
    assert shown["gidmap"] == [{"container-id": 0, "host-id": 200000, "size": 65536}]
    data = Path(s.json("metadata", layer).get("UpperDir") or s.json("metadata", layer)["Dir"])
    assert (os.stat(data / "etc" / "passwd").st_uid, os.stat(data / "etc" / "passwd").st_gid) == (100000, 200000)
    assert "--uidmap" in s.fails(2, "create", "--uidmap", "0:1", str(tars["base"]))


# --- what changed ---------------------------------------------------------------------------------

def test_changes_prints_add_modify_delete(s: Store, tars):
    base, container = container_with_writes(s, tars)
    assert s.ok("changes", container).splitlines() == ['Modify "/etc"', 'Delete "/etc/passwd"', 'Add "/new-file"']
    assert s.ok("changes", "--letters", container).splitlines() == ["C /etc", "D /etc/passwd", "A /new-file"]
    assert s.json("changes", container) == [{"path": "/etc", "kind": "modify", "kind-number": 0},
                                            {"path": "/etc/passwd", "kind": "delete", "kind-number": 2},
                                            {"path": "/new-file", "kind": "add", "kind-number": 1}]
    assert s.ok("changes", container, base) == s.ok("changes", container)
    assert s.ok("changes", base).count("Add ") == 11


def test_diffsize_counts_added_and_modified_bytes(s: Store, tars):
    base, container = container_with_writes(s, tars)
    assert s.ok("diffsize", container) == "10\n"
    assert s.ok("diff-size", container, base) == "10\n"
    assert s.json("diffsize", container) == {"diff-size": 10}
    assert s.json("layer", container)["diff-size"] == 10  # measured: the log has no size for a mount's writes


def test_diff_against_another_layer(s: Store, tars):
    base, container = container_with_writes(s, tars)
    other = s.ok("create-layer", base).strip()
    out = s.root.parent / "diff.tar"
    s.ok("diff", container, other, "-f", str(out))
    assert sorted(tar_names(out.read_bytes())) == ["etc", "etc/.wh.passwd", "new-file"]
    assert tar_names(s.run("diff", "-u", container).stdout) == tar_names(out.read_bytes())
    gz = s.run("diff", "-c", container).stdout
    assert gz[:2] == b"\x1f\x8b"


def test_applydiff_from_a_file_stdin_or_file_option(s: Store, tars):
    layer = s.ok("create-layer").strip()
    assert s.ok("applydiff", layer, str(tars["base"])) == ""
    assert s.run("diff", layer).stdout == base_tar()
    again = s.ok("create-layer").strip()
    assert s.run("apply-diff", again, stdin=base_tar()).returncode == 0
    third = s.ok("create-layer").strip()
    s.ok("applydiff", "-f", str(tars["base"]), third)
    s.ok("applydiff", third, str(tars["change"]))
    assert "new-file" in tar_members(s.run("diff", third).stdout)
    assert "read-only" in s.fails(3, "applydiff", image(s, tars), str(tars["change"]))
    assert "not a tar archive" in s.fails(3, "applydiff", layer, __file__)


# --- names -------------------------------------------------------------------------------------------

def test_names_add_set_remove(s: Store, tars):
    layer = image(s, tars)
    assert s.ok("add-names", "-n", "a", "--name", "b", layer) == ""
    assert s.ok("names", layer).splitlines() == ["a", "b"]
    assert s.json("get-names", "a") == ["a", "b"]
    assert s.json("set-names", "-n", "c", layer) == {"id": layer, "names": ["c"]}
    assert s.json("add-names", "-n", "d", "c")["names"] == ["c", "d"]
    assert s.json("remove-names", "-n", "c", layer)["names"] == ["d"]
    other = s.ok("create-layer").strip()
    assert "already belongs" in s.fails(3, "add-names", "-n", "d", other)
    assert "required" in s.fails(2, "add-names", layer)


# --- layer data ---------------------------------------------------------------------------------------

def test_layer_data_set_get_list_remove(s: Store, tars, tmp_path: Path):
    layer = image(s, tars)
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1234))
    assert s.ok("set-layer-data", "-f", str(blob), layer, "big-item-1") == ""
    assert s.run("set-layer-data", layer, "big-item-2", stdin=b"piped").returncode == 0
    s.ok("set-layer-data", layer, "big-item-3", str(blob))
    assert s.ok("list-layer-data", layer).splitlines() == ["big-item-1", "big-item-2", "big-item-3"]
    assert s.run("layer-data", layer, "big-item-1").stdout == blob.read_bytes()
    s.ok("get-layer-data", "-f", str(tmp_path / "out"), layer, "big-item-2")
    assert (tmp_path / "out").read_bytes() == b"piped"
    assert s.json("list-layer-data", layer)["big-item-1"]["size"] == 1234
    assert s.json("layer", layer)["big-data-names"] == ["big-item-1", "big-item-2", "big-item-3"]
    s.ok("remove-layer-data", layer, "big-item-3")
    assert "no data item 'big-item-3'" in s.fails(1, "layer-data", layer, "big-item-3")
    assert "not found" in s.fails(1, "layer-data", "no-such-layer", "big-item-1")


# --- mounts and the store ------------------------------------------------------------------------------

def test_mounted_prints_the_mounted_ones(s: Store):
    a = s.ok("create-layer").strip()
    b = s.ok("create-layer").strip()
    s.ok("mount", a)
    assert s.ok("mounted", a, b) == f"{a} mounted\n"
    assert s.json("mounted", a, b) == [{"id": a, "mount-count": 1}, {"id": b, "mount-count": 0}]
    s.ok("umount", a)
    assert s.ok("mounted", a) == ""


def test_status_and_version(s: Store, tars):
    image(s, tars)
    status = dict(line.split(": ", 1) for line in s.ok("status").splitlines())
    assert status["Driver Name"] == s.driver and status["Layers"] == "1" and status["Root"] == str(s.root)
    assert s.json("status")["driver-name"] == s.driver
    version = s.json("version")
    assert version["version"] and version["event-schema"] == "3"


def test_layer_parent_owners(s: Store):
    mapped = s.ok("create-layer", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536").strip()
    plain = s.ok("create-layer").strip()
    shown = s.json("layer-parent-owners", mapped)
    assert 0 in shown["uids"] and 0 in shown["gids"]  # root owns the directories above: not mapped
    assert s.json("layer-parent-owners", plain) == {"id": plain, "uids": [], "gids": []}
    assert s.ok("layer-parent-owners", mapped).splitlines()[1].startswith("UIDs: [0")


def test_wipe_deletes_every_layer_leaves_first(s: Store, tars):
    base, container = container_with_writes(s, tars)
    s.ok("mount", container)
    assert "mounted" in s.fails(3, "wipe")
    assert s.ok("wipe", "--force").splitlines() == [container, base]
    assert s.ok("layers") == ""


def test_shutdown_unmounts_with_force(s: Store):
    layer = s.ok("create-layer").strip()
    s.ok("mount", layer)
    s.ok("mount", layer)
    assert "--force" in s.fails(3, "shutdown")
    s.ok("shutdown", "--force")
    assert s.json("layer", layer)["mount-count"] == 0


def test_copy_into_a_layer_from_the_host_and_from_a_layer(s: Store, tars, tmp_path: Path):
    source = s.ok("import-layer", "-f", str(tars["base"])).strip()
    target = s.ok("create-layer", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536").strip()
    host_file = tmp_path / "host-file"
    host_file.write_bytes(b"from the host")
    os.chown(host_file, 5, 6)
    s.ok("copy", str(host_file), f"{target}:/copied")
    s.ok("copy", f"{source}:/etc/os-release", f"{target}:/os-release")
    s.ok("copy", "--chown", "7:8", str(host_file), f"{target}:/chowned")
    root = Path(s.ok("mount", target).strip())
    try:
        assert (root / "copied").read_bytes() == b"from the host"
        assert (os.stat(root / "copied").st_uid, os.stat(root / "copied").st_gid) == (100005, 100006)
        assert (root / "os-release").read_bytes() == b"ID=test\n"
        assert os.stat(root / "chowned").st_uid == 100007
    finally:
        s.ok("umount", target)
    assert "read-only" in s.fails(3, "copy", str(host_file), f"{source}:/x")
    assert "symlink" in s.fails(2, "copy", f"{source}:/bin/tool", f"{target}:/x")


# --- several ids -----------------------------------------------------------------------------------------

def test_layer_exists_and_delete_take_several_ids(s: Store, tars):
    a, b = image(s, tars), s.ok("create-layer").strip()
    shown = s.json("layer", a, b)
    assert [layer["id"] for layer in shown] == [a, b]
    assert s.ok("layer", a, b).count("id: ") == 2
    assert s.ok("exists", a, b) == ""
    assert s.run("exists", a, "nothing").returncode == 1
    assert s.json("exists", a, "-q") == {a: True}
    result = s.run("exists", "--json", a, "nothing")
    assert result.returncode == 1 and json.loads(result.stdout) == {a: True, "nothing": False}
    result = s.run("delete", b, "nothing", a)
    assert result.returncode == 1 and result.stdout.decode().split() == [b, a]
    assert result.stderr.decode().count("\n") == 1 and "nothing" in result.stderr.decode()
    assert s.ok("layers") == ""


def test_a_file_that_cannot_be_read_is_a_usage_error(s: Store):
    layer = s.ok("create-layer").strip()
    assert "cannot read" in s.fails(2, "applydiff", layer, "/no/such/file")
    assert "cannot read" in s.fails(2, "set-layer-data", layer, "k", "/no/such/file")
    assert stat.S_ISDIR(os.stat(s.root).st_mode)
