"""``layerstore check``: exit 0 on a healthy store; exit 4, naming what is wrong, when the
read models disagree with the log, when a layer's data is missing, and (``--content``)
when a layer's files no longer regenerate its tar."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from eventstore.errors import CorruptStore
from eventstore.opener import open_store
from replay.verify import check
from tests.recovery.support import archive_or_skip, run_cli, small_tar, workload

BAD = CorruptStore.exit_code


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def ids(root: Path) -> dict[str, str]:
    with open_store(root, "vfs") as store:
        ids = workload(store)
        store.hold(ids["base"])
    return ids


def run_check(root: Path, *args: str) -> tuple[int, list[str]]:
    result = run_cli(root, "--json", "check", *args)
    assert result.returncode in (0, BAD), result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["ok"] == (result.returncode == 0)
    return result.returncode, report["problems"]


def tamper(root: Path, sql: str, *params) -> None:
    conn = sqlite3.connect(root / "index.db")
    try:
        assert conn.execute(sql, params).rowcount == 1
        conn.commit()
    finally:
        conn.close()


def test_a_healthy_store_checks_ok(root: Path, ids: dict[str, str]):
    assert run_check(root) == (0, [])
    result = run_cli(root, "check")
    assert (result.returncode, result.stdout) == (0, b"ok\n")


def move_a_name(root: Path, ids: dict[str, str]) -> None:
    conn = sqlite3.connect(root / "index.db")
    (name,) = conn.execute("SELECT name FROM names WHERE layer = ? LIMIT 1", (ids["base"],)).fetchone()
    conn.close()
    tamper(root, "UPDATE names SET layer = ? WHERE name = ?", ids["child"], name)


def by_sql(sql: str, role: str | None = None):
    return lambda root, ids: tamper(root, sql, *([ids[role]] if role else []))


# how to damage the read models, which layer's id the report must name (if any), what it says
TAMPERING = {
    "record-changed": (by_sql("UPDATE layers SET record = json_set(record, '$.names', json('[\"x\"]')) WHERE id = ?",
                              "base"), "base", "read model differs from the log in names"),
    "row-deleted": (by_sql("DELETE FROM layers WHERE id = ?", "last"), "last",
                    "in the log but missing from the read models"),
    "row-invented": (by_sql("INSERT INTO layers SELECT 'f' || substr(id, 2), parent, created, compressed_digest, "
                            "diff_digest, incomplete, mount_count, hold_refs, process_holds, created_lsn, "
                            "json_set(record, '$.id', 'f' || substr(id, 2)) FROM layers WHERE id = ?", "child"),
                     None, "in the read models but not in the log"),
    "name-moved": (move_a_name, None, "names: "),
    "history-row-deleted": (by_sql("DELETE FROM history WHERE lsn = 3"), None,
                            "history: rows for 1 LSN(s) are missing"),
    "history-row-changed": (by_sql("UPDATE history SET type = 'layer-deleted' WHERE lsn = 3"), None,
                            "history: rows for 1 LSN(s) differ from the log"),
    "attention-column": (by_sql("UPDATE layers SET process_holds = 0 WHERE id = ?", "base"), "base",
                         "read model columns differ from the log in process_holds"),
    "digest-column": (by_sql("UPDATE layers SET diff_digest = 'sha256:' || hex(zeroblob(32)) WHERE id = ?", "child"),
                      "child", "read model columns differ from the log in diff_digest"),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_read_models_that_disagree_with_the_log_exit_4(root: Path, ids: dict[str, str], how: str):
    damage, named, expected = TAMPERING[how]
    damage(root, ids)
    code, problems = run_check(root)
    assert code == BAD
    matching = [p for p in problems if expected in p]
    assert matching, problems
    if named:
        assert all(ids[named] in p for p in matching)


def test_missing_driver_data_exits_4(root: Path, ids: dict[str, str]):
    shutil.rmtree(root / "vfs" / "dir" / ids["child"])
    code, problems = run_check(root)
    assert code == BAD
    assert problems == [f"layer {ids['child']}: driver data missing"]


# --- content ------------------------------------------------------------------------------------

FILES = {"etc/motd": b"welcome\n", "usr/bin/tool": b"\x7fELF" + bytes(4000), "var/lib/data": b"x" * 70_000}


@pytest.fixture
def made_from_tar(root: Path, tmp_path: Path) -> str:
    archive_or_skip("import_layer", "export_layer")
    tar = tmp_path / "layer.tar"
    tar.write_bytes(small_tar(FILES))
    with open_store(root, "vfs") as store, open(tar, "rb") as content:
        layer_id = store.create(content=content)
        store.create()  # made otherwise: no tar to regenerate
        assert check(store, content=True) == []
    return layer_id


def test_check_content_passes_on_untouched_layers(root: Path, made_from_tar: str):
    assert run_check(root, "--content") == (0, [])


@pytest.mark.parametrize("change", ["same-size", "longer"])
def test_check_content_names_a_layer_whose_files_changed(root: Path, made_from_tar: str, change: str):
    victim = root / "vfs" / "dir" / made_from_tar / "usr" / "bin" / "tool"
    data = bytearray(victim.read_bytes())
    if change == "same-size":
        data[100] ^= 0xFF
    else:
        data += b"!"
    victim.write_bytes(bytes(data))
    assert run_check(root) == (0, [])  # without --content the bytes are not read
    code, problems = run_check(root, "--content")
    assert code == BAD
    assert len(problems) == 1 and made_from_tar in problems[0]
    if change == "longer":
        assert "usr/bin/tool" in problems[0]


def test_a_missing_tar_split_exits_4(root: Path, made_from_tar: str):
    (root / "tarsplit" / f"{made_from_tar}.tar-split").unlink()
    code, problems = run_check(root)
    assert code == BAD and problems == [f"layer {made_from_tar}: tar-split missing"]
