"""The ``layerstore`` command line (DESIGN §8): output contract, exit codes, one-line
errors, and bad input refused with the store unchanged. Every test runs the real CLI."""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from eventstore.drivers import driver_class
from eventstore.log.format import HEADER_SIZE
from eventstore.opener import open_store
from tests.store.support import dump_index_file, is_mounted, last_lsn_on_disk, unmount_everything_under

from .support import cli, fails, ok, ok_json

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# always there; strings and lists only when not empty, sizes only when known (as
# containers-storage leaves out empty fields)
LAYER_FIELDS = {"id", "created", "incomplete", "writable", "driver", "hold-refs", "mount-count"}
CONTENT_FIELDS = {"compressed-diff-digest", "compressed-size", "diff-digest", "diff-size", "compression"}


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def create(root: Path, *args: str) -> str:
    out = ok(root, "create", *args)
    layer_id = out.strip()
    assert out == layer_id + "\n" and HEX64.match(layer_id)
    return layer_id


def store_state(root: Path) -> tuple:
    """The read models, the log's last LSN and the driver's data: what a refused command
    must leave as it found."""
    return dump_index_file(root / "index.db"), last_lsn_on_disk(root), sorted(os.listdir(root / "vfs" / "dir"))


# --- the output contract --------------------------------------------------------------------

def test_create_prints_the_new_id(root: Path):
    generated = create(root)
    given = "0123456789abcdef" * 4
    assert create(root, "--id", given, "--parent", generated, "--name", "app", "--writable") == given
    assert ok_json(root, "create", "--name", "third") .keys() == {"id"}


def test_exists_answers_with_the_exit_code(root: Path):
    layer_id = create(root, "--name", "img")
    for ref in (layer_id, "img", layer_id[:10]):
        assert ok(root, "exists", ref) == ""
    assert cli(root, "exists", "f" * 64).returncode == 1
    assert cli(root, "exists", "nothing").returncode == 1
    assert cli(root.parent / "no-store-here", "exists", layer_id).returncode == 1


def test_refs_prints_the_hold_count(root: Path):
    layer_id = create(root)
    assert ok(root, "refs", layer_id) == "0\n"
    assert ok(root, "hold", layer_id) == "1\n"
    assert ok(root, "hold", layer_id, "--lease", "ci") == "2\n"
    assert ok(root, "refs", layer_id) == "2\n"
    assert ok(root, "release", layer_id, "--lease", "ci") == "1\n"
    assert ok(root, "release", layer_id) == "0\n"
    assert ok(root, "refs", layer_id) == "0\n"
    assert ok_json(root, "refs", layer_id) == {"hold-refs": 0}


def test_mount_prints_the_path_and_the_same_path_again(root: Path):
    layer_id = create(root, "--writable")
    path = ok(root, "mount", layer_id)
    assert path.endswith("\n") and Path(path.strip()).is_dir()
    assert ok(root, "mount", layer_id) == path
    assert ok_json(root, "layer", layer_id)["mount-count"] == 2
    assert ok_json(root, "layer", layer_id)["mount-point"] == path.strip()
    assert ok(root, "umount", layer_id) == "1\n"
    assert ok(root, "umount", layer_id) == "0\n"
    assert "mount-point" not in ok_json(root, "layer", layer_id)


def test_json_layer_is_one_object_with_the_storage_field_names(root: Path):
    before = datetime.now(timezone.utc)
    base = create(root, "--name", "base")
    child = create(root, "--parent", "base", "--name", "app", "--name", "app:1", "--writable")
    ok(root, "hold", child, "--lease", "x")
    ok(root, "mount", child)
    layer = ok_json(root, "layer", "app")
    assert isinstance(layer, dict) and LAYER_FIELDS <= set(layer)
    assert layer["id"] == child and layer["parent"] == base
    assert layer["names"] == ["app", "app:1"]
    assert (layer["writable"], layer["incomplete"], layer["driver"]) == (True, False, "vfs")
    assert (layer["hold-refs"], layer["mount-count"]) == (1, 1)
    assert Path(layer["mount-point"]).is_dir()
    created = datetime.fromisoformat(layer["created"].replace("Z", "+00:00"))
    assert before <= created <= datetime.now(timezone.utc)
    assert "parent" not in ok_json(root, "layer", base) and "names" in ok_json(root, "layer", base)
    assert not ({"mount-point", "quarantined", "uidmap", "gidmap"} & set(ok_json(root, "layer", base)))


def test_json_layers_is_a_list_in_creation_order(root: Path):
    ids = [create(root, "--id", c * 64) for c in "f0a"]
    layers = ok_json(root, "layers")
    assert isinstance(layers, list) and [layer["id"] for layer in layers] == ids
    assert all(LAYER_FIELDS <= set(layer) for layer in layers)
    assert not any(CONTENT_FIELDS & set(layer) for layer in layers)  # no content: no digests, no sizes
    assert ok(root, "layers").splitlines() == ids


def test_layers_tree_shows_the_chain(root: Path):
    base = create(root, "--name", "base")
    child = create(root, "--parent", base)
    grandchild = create(root, "--parent", child)
    sibling = create(root, "--parent", base)
    lines = ok(root, "layers", "--tree").splitlines()
    assert lines == [
        f"└── {base[:12]} (base)",
        f"    ├── {child[:12]}",
        f"    │   └── {grandchild[:12]}",
        f"    └── {sibling[:12]}",
    ]


def test_history_lists_what_happened_to_a_layer(root: Path):
    layer_id = create(root)
    ok(root, "hold", layer_id, "--lease", "a")
    ok(root, "mount", layer_id)
    ok(root, "umount", layer_id)
    ok(root, "release", layer_id, "--lease", "a")
    history = [json.loads(line) for line in ok(root, "history", layer_id, as_json=True).splitlines()]  # JSON lines
    assert [h["type"] for h in history] == ["layer-created", "layer-completed", "hold-added", "layer-mounted",
                                            "layer-unmounted", "hold-released"]
    assert all(h["layer"] == layer_id and h["actor"]["pid"] > 0 for h in history)
    assert [h["lsn"] for h in history] == sorted(h["lsn"] for h in history)
    assert len(ok(root, "history", layer_id).splitlines()) == len(history)


def test_log_verify_reports_the_log(root: Path):
    for _ in range(3):
        create(root)
    report = ok_json(root, "log", "verify")
    assert report["last-lsn"] == report["events"] == 6
    assert report["torn-tail"] is None and report["segments"] == 1
    assert "last-lsn=6" in ok(root, "log", "verify")
    assert len(ok(root, "log", "dump").splitlines()) == 6


def test_log_verify_exits_4_on_corruption(root: Path):
    for _ in range(3):
        create(root)
    segment = root / "log" / "0000000000000001.wal"
    data = bytearray(segment.read_bytes())
    data[HEADER_SIZE + 40] ^= 0xFF  # inside the first record, with valid records after it
    segment.write_bytes(bytes(data))
    line = fails(root, 4, "log", "verify")
    assert "0000000000000001.wal" in line


def test_by_digest_of_an_unknown_digest_prints_nothing(root: Path):
    create(root)
    assert ok(root, "by-digest", "sha256:" + "1" * 64) == ""
    assert ok(root, "by-digest", "--compressed", "sha256:" + "1" * 64) == ""
    assert ok_json(root, "by-digest", "sha256:" + "1" * 64) == []


def test_fs_info_and_metadata(root: Path):
    layer_id = create(root, "--writable")
    info = ok_json(root, "fs-info", layer_id)
    assert info["inodes-used"] >= 1 and info["used-bytes"] >= 0
    meta = ok_json(root, "metadata", layer_id)
    assert set(meta) == {"Dir"} and Path(meta["Dir"]).is_dir()
    assert info["mountpoint"] == meta["Dir"]


def test_delete_removes_the_layer(root: Path):
    base = create(root)
    child = create(root, "--parent", base)
    assert ok(root, "delete", child) == child + "\n"
    assert cli(root, "exists", child).returncode == 1
    ok(root, "delete", base)
    assert ok_json(root, "layers") == []


# --- exit codes and errors ------------------------------------------------------------------

@pytest.mark.parametrize("args", [["no-such-command"], ["layer"], ["hold"], ["create", "--bogus"],
                                  ["umount"], ["log", "explode"]])
def test_bad_usage_exits_2(root: Path, args: list[str]):
    result = cli(root, *args)
    assert result.returncode == 2 and result.stdout == ""
    # one line, like every error, pointing at the help of the command that was misused
    assert len(result.stderr.splitlines()) == 1
    assert re.match(r"^layerstore: .+ \(see 'layerstore( [a-z-]+)? --help'\)$", result.stderr.strip())


def test_an_unknown_layer_exits_1_with_one_line(root: Path):
    create(root)
    for command in (["layer"], ["refs"], ["hold"], ["release"], ["mount"], ["umount"], ["delete"],
                    ["fs-info"], ["metadata"], ["history"]):
        line = fails(root, 1, *command, "e" * 64)
        assert "e" * 64 in line and "not found" in line


def test_an_ambiguous_prefix_exits_2(root: Path):
    create(root, "--id", "ab1" + "0" * 61)
    create(root, "--id", "ab2" + "0" * 61)
    assert "ab" in fails(root, 2, "layer", "ab")
    assert cli(root, "exists", "ab").returncode == 1


def test_a_read_on_a_missing_store_finds_nothing_and_creates_nothing(tmp_path: Path):
    missing = tmp_path / "nothing-here"
    assert ok(missing, "layers") == ""
    fails(missing, 1, "layer", "x")
    fails(missing, 1, "history")
    assert cli(missing, "exists", "x").returncode == 1
    assert not missing.exists()


# --- refused by a rule (exit 3) or invalid (exit 2): the store is unchanged ---------------------

@pytest.fixture
def busy(root: Path) -> dict[str, str]:
    """A held base named "base", its mounted child named "child", an idle "leaf" (made
    through the API: the commands under test are the refused ones)."""
    ids = {"base": "ab" + "0" * 62, "child": "ac" + "0" * 62, "leaf": "ad" + "0" * 62}
    with open_store(root, "vfs") as store:
        store.create(ids["base"], names=["base"])
        store.create(ids["child"], parent=ids["base"], names=["child"], writable=True)
        store.create(ids["leaf"], names=["leaf"])
        store.hold("base", lease="keep")
        store.mount("child")
    return ids


REFUSED = [
    (3, ["delete", "base"], "held"),
    (3, ["delete", "--force", "base"], "held"),
    (3, ["delete", "child"], "mounted"),
    (3, ["release", "leaf"], "not held"),
    (3, ["release", "base", "--lease", "other"], "lease other"),
    (3, ["umount", "leaf"], "not mounted"),
    (3, ["create", "--name", "base"], "base"),
    (3, ["create", "--id", "ac" + "0" * 62], "exists"),
    (2, ["create", "--id", "../x"], "../x"),
    (2, ["create", "--id", "a/b"], "a/b"),
    (2, ["create", "--id", "0" * 65], "0" * 65),
    (2, ["create", "--id", ""], "invalid layer id"),
    (2, ["create", "--id", "A" * 64], "invalid layer id"),
    (2, ["create", "--name", "../x"], "../x"),
    (2, ["create", "--name", "a/b"], "a/b"),
    (2, ["create", "--name", ""], "invalid name"),
    (2, ["create", "--name", "esc\x1b[31mred"], "invalid name"),
    (2, ["create", "--name", "tab\there"], "invalid name"),
    (2, ["create", "--name", "new\nline"], "invalid name"),
    (2, ["hold", "leaf", "--lease", "a/b"], "invalid lease"),
    (2, ["hold", "leaf", "--lease", ""], "invalid lease"),
    (2, ["by-digest", "sha256:xyz"], "invalid digest"),
    (2, ["layer", "a"], "ambiguous"),
    (1, ["hold", "../x"], "not found"),
    (1, ["delete", "a/b"], "not found"),
    (1, ["mount", "esc\x1b[31m"], "not found"),
    (1, ["create", "--parent", "0" * 65], "not found"),
]


@pytest.mark.parametrize("code, args, reason", REFUSED, ids=[repr(" ".join(a)) for _, a, _ in REFUSED])
def test_refused_commands_change_nothing(root: Path, busy: dict[str, str], code: int, args: list[str], reason: str):
    before = store_state(root)
    line = fails(root, code, *args)
    assert reason in line
    assert store_state(root) == before


@pytest.mark.parametrize("code, args, ids", [
    (3, ["delete", "base"], ["base"]),
    (3, ["delete", "child"], ["child"]),
    (3, ["release", "leaf"], ["leaf"]),
])
def test_refusals_name_the_layer(root: Path, busy: dict[str, str], code: int, args: list[str], ids: list[str]):
    line = fails(root, code, *args)
    assert all(busy[name] in line for name in ids)


# --- overlay through the CLI ---------------------------------------------------------------------

def _overlay_unsupported() -> str | None:
    return driver_class("overlay").supported(Path(tempfile.gettempdir()) / "layerstore-probe" / "overlay")


@pytest.mark.skipif(_overlay_unsupported() is not None, reason=f"overlay unsupported: {_overlay_unsupported()}")
def test_an_overlay_mount_outlives_the_cli_call(root: Path):
    base = ok(root, "create", driver="overlay").strip()
    child = ok(root, "create", "--parent", base, "--writable", driver="overlay").strip()
    path = ok(root, "mount", child, driver="overlay").strip()
    assert is_mounted(path)
    assert ok(root, "mount", child, driver=None).strip() == path  # the store remembers its driver
    assert ok(root, "umount", child, driver=None) == "1\n"
    assert is_mounted(path)
    assert ok(root, "umount", child, driver=None) == "0\n"
    assert not is_mounted(path)
    assert ok_json(root, "metadata", child, driver=None)["LowerDir"].endswith(f"{base}/diff")


@pytest.mark.parametrize("command", [["layers"], ["exists", "base"], ["hold", "base"]])
def test_a_damaged_index_file_is_rebuilt_by_any_command(root: Path, command: list[str]):
    base = create(root, "--name", "base")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / 'index.db'}{suffix}").unlink(missing_ok=True)
    (root / "index.db").write_bytes(b"not a database" * 512)
    ok(root, *command)
    assert ok(root, "layers") == f"{base}  base\n"
