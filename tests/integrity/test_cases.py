"""Issue #11, case by case: damage and stale state that lost acknowledged layers or left
the store unusable. Each test follows the sequence the issue reports, through the real
CLI, and asserts what DESIGN §2-§4 now promise (docs/integrity.md)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from eventstore.opener import open_store
from tests.cli.support import cli, cli_command, fails, ok
from tests.recovery.support import (child_env, driver_dir, in_lost_found, mounts_under,
                                    overlay_or_skip, spawn_cli, wait_for, wait_for_driver_work)

SEGMENT_SIZE = 2048


def layers_of(root: Path) -> list[str]:
    return [line.split()[0] for line in ok(root, "layers").splitlines()]


def a_store(root: Path, driver: str = "vfs", segment_size: int = SEGMENT_SIZE) -> dict[str, str]:
    """Layers a, b (child of a, held by two leases), c: made through the API with small
    segments, so the log has several."""
    with open_store(root, driver, segment_size=segment_size) as store:
        ids = {"a": store.create(names=["a"])}
        ids["b"] = store.create(names=["b"], parent=ids["a"])
        ids["c"] = store.create(names=["c"])
        for lease in ("one", "two"):
            store.hold(ids["b"], lease=lease)
        for _ in range(6):  # more events: more segments
            store.hold(ids["c"], lease="spin")
            store.release(ids["c"], lease="spin")
    return ids


def data_kept(root: Path, driver: str, layer_id: str) -> bool:
    """The layer's data is still under the root: in place, or in lost+found."""
    return driver_dir(root, driver, layer_id).is_dir() or in_lost_found(root, layer_id) is not None


def segments(root: Path) -> list[Path]:
    return sorted((root / "log").glob("*.wal"))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# 1 ------------------------------------------------------------------------------------------------

def test_1_a_flipped_byte_is_refused_and_the_documented_repair_keeps_every_layer(tmp_path: Path):
    root = tmp_path / "store"
    ids = a_store(root)
    flip(segments(root)[0], 200)
    before = segments(root)[-1].read_bytes()
    for args in (["layers"], ["history"], ["hold", "--lease", "late", "a"], ["log", "verify"], ["check"]):
        assert "corruption" in fails(root, 4, *args)
    assert segments(root)[-1].read_bytes() == before  # no hold acknowledged on top of the damage
    ok(root, "log", "repair", "--dry-run")
    ok(root, "log", "repair")
    ok(root, "recover")
    assert all(data_kept(root, "vfs", layer_id) for layer_id in ids.values())
    assert cli(root, "check").returncode == 0
    listed = layers_of(root)
    assert ids["b"] in listed and ids["c"] in listed  # the layers past the damage are all there


# 2 ------------------------------------------------------------------------------------------------

def test_2_a_lost_last_segment_is_lost_records_not_a_rebuild(tmp_path: Path):
    root = tmp_path / "store"
    ids = a_store(root)
    assert len(segments(root)) >= 3
    segments(root)[-1].unlink()
    assert "records lost" in fails(root, 4, "layers")
    assert "records lost" in fails(root, 4, "hold", "--lease", "x", "c")
    assert all(driver_dir(root, "vfs", layer_id).is_dir() for layer_id in ids.values())  # nothing swept
    ok(root, "log", "repair")
    ok(root, "recover")
    assert all(data_kept(root, "vfs", layer_id) for layer_id in ids.values())
    assert cli(root, "check").returncode == 0


def test_2_a_lost_middle_segment_and_index_is_corruption_not_a_rebuild(tmp_path: Path):
    root = tmp_path / "store"
    ids = a_store(root)
    segments(root)[1].unlink()
    (root / "index.db").unlink()
    assert "missing" in fails(root, 4, "layers")
    assert "missing" in fails(root, 4, "check")
    ok(root, "log", "repair")
    ok(root, "recover")
    assert all(data_kept(root, "vfs", layer_id) for layer_id in ids.values())
    assert cli(root, "check").returncode == 0


# 3 ------------------------------------------------------------------------------------------------

def test_3_read_models_copied_from_a_clone_are_not_trusted(tmp_path: Path):
    root, clone = tmp_path / "store", tmp_path / "clone"
    with open_store(root, "vfs") as store:
        held = store.create(names=["held"])
    shutil.copytree(root, clone, symlinks=True)
    ok(root, "hold", "--lease", "one", "held")
    ok(root, "hold", "--lease", "two", "held")
    ok(clone, "create", "--name", "other")  # the clone's log has other events
    ok(clone, "create", "--name", "more")
    for suffix in ("", "-wal", "-shm"):
        if (clone / f"index.db{suffix}").exists():
            shutil.copy(clone / f"index.db{suffix}", root / f"index.db{suffix}")
    assert ok(root, "refs", "held").strip() == "2"
    assert "held" in fails(root, 3, "delete", "held")
    assert driver_dir(root, "vfs", held).is_dir()


def test_3_a_position_inside_a_record_cuts_nothing(tmp_path: Path):
    root = tmp_path / "store"
    with open_store(root, "vfs") as store:
        store.create(names=["x"])
        store.hold("x", lease="L" * 200)
    size = segments(root)[-1].stat().st_size
    import sqlite3

    conn = sqlite3.connect(root / "index.db")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'position'", (f"1:{size - 40}:4",))
    conn.commit()
    conn.close()
    ok(root, "hold", "--lease", "after", "x")
    assert segments(root)[-1].stat().st_size > size  # the acknowledged record is still there
    assert ok(root, "refs", "x").strip() == "2"
    assert not list((root / "log").glob("*.broken-*"))


# 4 ------------------------------------------------------------------------------------------------

def test_4_damaged_index_pages_are_set_aside_and_rebuilt(tmp_path: Path):
    root = tmp_path / "store"
    with open_store(root, "vfs") as store:
        for i in range(30):
            store.create(names=[f"n{i}"])
        store.hold("n3", lease="a")
    with open(root / "index.db", "r+b") as f:
        f.seek(3 * 4096)
        f.write(os.urandom(2 * 4096))
    for args in (["layers"], ["refs", "n3"], ["hold", "--lease", "b", "n3"], ["history", "n3"], ["check"]):
        result = cli(root, *args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert ok(root, "refs", "n3").strip() == "2"
    assert len(layers_of(root)) == 30


# 5 ------------------------------------------------------------------------------------------------

@pytest.fixture
def read_only_root(tmp_path: Path):
    """A store, then its root bind-mounted read-only (a read-only medium)."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    root = tmp_path / "store"
    with open_store(root, "vfs") as store:
        store.create(names=["x"])
        store.hold("x", lease="l")
    view = tmp_path / "ro"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(root), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


@pytest.mark.parametrize("args", [["layers"], ["layer", "x"], ["refs", "x"], ["exists", "x"], ["check"],
                                  ["history"], ["history", "x"], ["log", "verify"]])
def test_5_reads_work_on_a_read_only_medium(read_only_root: Path, args: list[str]):
    result = cli(read_only_root, *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_5_a_write_on_a_read_only_medium_is_one_line(read_only_root: Path):
    line = fails(read_only_root, 5, "hold", "--lease", "m", "x")
    assert "read-only" in line.lower()


# 6 ------------------------------------------------------------------------------------------------

def test_6_a_full_disk_while_sqlite_grows_reports_what_really_happened(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        root = mnt / "store"
        with open_store(root, "vfs") as store:
            store.create(names=["x"])
        filler = mnt / "filler"
        with open(filler, "wb") as f:  # fill the disk, then give back a few KiB for the log
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        for step in range(40):
            result = cli(root, "hold", "--lease", f"l{step}", "x")
            assert "Traceback" not in result.stderr and "rollback" not in result.stderr
            assert result.returncode in (0, 5), result.stderr
            refs_claimed = result.stdout.strip()
            filler.unlink()
            real = ok(root, "refs", "x").strip()
            if result.returncode == 0:
                assert real == refs_claimed  # reported as done: it is in the log
            else:
                assert real == str(step)  # reported as failed: it did not happen
            if result.returncode != 0:
                break
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# 7 ------------------------------------------------------------------------------------------------

def test_7_a_stray_entry_in_the_store_blocks_nothing(tmp_path: Path, monkeypatch):
    root = tmp_path / "store"
    with open_store(root, "vfs") as store:
        store.create(names=["x"], content=None)
    (root / "tarsplit").mkdir(exist_ok=True)
    (root / "tarsplit" / "keep").mkdir()
    ok(root, "hold", "--lease", "a", "x")
    env = {**child_env(), "LAYERSTORE_BOOT_ID": "another-boot"}  # the first open after a reboot sweeps
    result = cli(root, "hold", "--lease", "b", "x", env=env)
    assert result.returncode == 0, result.stderr
    assert in_lost_found(root, "keep") is not None


# 8 ------------------------------------------------------------------------------------------------

def test_8_a_mount_whose_event_was_never_written_is_unmounted_by_recovery(tmp_path: Path):
    root = tmp_path / "store"
    overlay_or_skip(root)
    with open_store(root, "overlay") as store:
        layer = store.create(names=["x"])
    env = child_env("store.mount.after-driver=crash")
    assert cli(root, "mount", "x", driver="overlay", env=env).returncode == 137
    assert mounts_under(root)
    assert "no mount" in cli(root, "check", driver="overlay").stdout
    assert "unmounted" in ok(root, "recover", driver="overlay")
    assert not mounts_under(root)
    ok(root, "mount", "x", driver="overlay")
    assert ok(root, "umount", "x", driver="overlay").strip() == "0"
    assert layer


# 9 ------------------------------------------------------------------------------------------------

def test_9_a_creator_killed_but_not_reaped_is_dead(tmp_path: Path):
    root = tmp_path / "store"
    open_store(root, "vfs").close()
    layer = "9" * 64
    child = spawn_cli(root, "--driver", "vfs", "create", "--id", layer,
                      failpoints="store.create.after-driver=sleep:60")
    try:
        wait_for_driver_work(root, "vfs", layer)
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] == "Z", what="a zombie")
        assert "removed incomplete layer" in ok(root, "recover")  # while the zombie is not reaped
        assert not driver_dir(root, "vfs", layer).exists()
    finally:
        child.wait()


# 10 -----------------------------------------------------------------------------------------------

def test_10_reads_never_report_a_layer_whose_creator_died_half_way(tmp_path: Path):
    root = tmp_path / "store"
    open_store(root, "vfs").close()
    layer = "a" * 64
    env = child_env("store.create.after-driver=crash")
    assert cli(root, "create", "--id", layer, env=env).returncode == 137
    assert cli(root, "exists", layer).returncode == 1
    assert layer not in ok(root, "layers")
    assert "not found" in fails(root, 1, "layer", layer)


# 11 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["links", "merged", "lower"])
def test_11_overlay_metadata_is_rebuilt_from_the_log(tmp_path: Path, damage: str):
    root = tmp_path / "store"
    overlay_or_skip(root)
    with open_store(root, "overlay") as store:
        base = store.create(names=["base"])
        child = store.create(names=["child"], parent=base)
    if damage == "links":
        for link in (root / "overlay" / "l").iterdir():
            link.unlink()
    elif damage == "merged":
        (root / "overlay" / child / "merged").rmdir()
    else:
        (root / "overlay" / child / "lower").write_text("l/NOSUCHLINKNOSUCHLINK00000")
    assert cli(root, "check", driver="overlay").returncode == 4
    mounted = cli(root, "mount", "child", driver="overlay")  # repaired on the way, and said so
    assert mounted.returncode == 0 and "rebuilt" in mounted.stderr and len(mounted.stderr.splitlines()) == 1
    assert Path(mounted.stdout.strip()).is_dir()
    ok(root, "umount", "child", driver="overlay")
    ok(root, "recover", driver="overlay")
    assert cli(root, "check", driver="overlay").returncode == 0


# 12 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_12_check_content_finds_a_file_added_to_a_layer(tmp_path: Path, driver: str):
    import io
    import tarfile

    root = tmp_path / "store"
    if driver == "overlay":
        overlay_or_skip(root)
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"box\n"))
    data.seek(0)
    with open_store(root, driver) as store:
        layer = store.create(names=["x"], content=data)
        top = store.driver.diff_path(layer)
    assert cli(root, "check", "--content", driver=driver).returncode == 0
    (top / "etc" / "sneaky").write_bytes(b"#!/bin/sh\n")
    result = cli(root, "check", "--content", driver=driver)
    assert result.returncode == 4 and "etc/sneaky" in result.stdout


# 13 -----------------------------------------------------------------------------------------------

def test_13_two_first_opens_with_different_drivers_one_wins(tmp_path: Path):
    root = tmp_path / "store"
    overlay_or_skip(root)
    results = [subprocess.Popen(cli_command(root, "create", driver=d), env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for d in ("vfs", "overlay")]
    outcomes = [(p.wait(), p.stderr.read()) for p in results]
    assert sorted(code for code, _ in outcomes) in ([0, 0], [0, 2])
    winner = (root / "driver").read_text().strip()
    assert all(code == 0 or f"uses driver {winner}" in err for code, err in outcomes)
    assert cli(root, "check", driver=None).returncode == 0
    other = {"vfs": "overlay", "overlay": "vfs"}[winner]
    assert not (root / other).exists() or not any((root / other).iterdir())


def test_13_an_unknown_driver_on_a_new_root_leaves_nothing(tmp_path: Path):
    root = tmp_path / "store"
    assert "unknown driver" in fails(root, 2, "create", driver="nosuch")
    assert not root.exists()


# 14 -----------------------------------------------------------------------------------------------

def test_14_a_storage_error_is_not_a_no(tmp_path: Path):
    root = tmp_path / "store"
    with open_store(root, "vfs") as store:
        store.create(names=["x"])
    segment = segments(root)[0]
    data = segment.read_bytes()
    segment.unlink()
    segment.mkdir()  # reading it fails: EISDIR, as a failing disk fails a read
    try:
        result = cli(root, "exists", "x")
        assert result.returncode not in (0, 1), result
        assert result.returncode in (4, 5) and len(result.stderr.splitlines()) == 1
    finally:
        segment.rmdir()
        segment.write_bytes(data)
