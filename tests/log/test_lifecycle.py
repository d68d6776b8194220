"""The log's lifecycle (docs/lifecycle.md): segments a checkpoint covers are sealed and
archived and read back transparently; retention drops what is behind the horizon, and
the store, its history and its rebuilds follow; a crash at any step loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore import events as ev
from eventstore.errors import InvalidArgument
from eventstore.lifecycle import Retention, parse_retention
from eventstore.log.format import crc32c
from eventstore.log.reader import ARCHIVE_DIR, HORIZON_FILE
from eventstore.opener import open_store
from replay.verify import check
from tests.cli.support import REPO, cli, fails, ok

SEGMENT = 4096


def busy_store(root: Path, retention: str | None = None, rounds: int = 60, archive: bool = True) -> list[str]:
    """Ten layers, many holds and releases: many small segments, several checkpoints."""
    with open_store(root, "vfs", segment_size=SEGMENT, history_retention=retention, archive=archive) as store:
        store.checkpoint_interval = 40
        ids = [store.create(names=[f"n{i}"]) for i in range(10)]
        for r in range(rounds):
            store.hold(ids[r % 10], lease="l")
            store.release(ids[r % 10], lease="l")
        store.hold(ids[0], lease="kept")
    return ids


def events_of(root: Path) -> list[tuple[int, str]]:
    with open_store(root, "vfs", recover=False) as store:
        return [(lsn, e.type_name) for lsn, e in store.log.events()]


def test_segments_a_checkpoint_covers_are_sealed_then_archived(tmp_path: Path):
    root = tmp_path / "store"
    busy_store(root)
    archived = sorted((root / "log" / ARCHIVE_DIR).iterdir())
    assert archived, "no segment was archived"
    with open_store(root, "vfs") as store:
        sealed = store.index.sealed()
        seals = [e for _, e in store.log.events() if isinstance(e, ev.SegmentSealed)]
        assert sorted(sealed) == [s.segment for s in seals]
        newest_checkpoint_segment = store.index.position().segment
        for path in archived:
            number = int(path.name[:16])
            first, last, size, crc, last_time = sealed[number]
            assert number < newest_checkpoint_segment
            assert not (root / "log" / path.name[:-4]).exists()  # the plain file is gone
            from eventstore.log.reader import read_from

            data = read_from(path, 0)
            assert (len(data), crc32c(data)) == (size, crc) and last_time > 0
        assert check(store) == []


def test_archived_segments_read_back_transparently(tmp_path: Path):
    plain, archived = tmp_path / "plain", tmp_path / "archived"
    busy_store(plain, archive=False)
    busy_store(archived)
    assert not (plain / "log" / ARCHIVE_DIR).exists()
    assert [t for _, t in events_of(plain)] == [t for _, t in events_of(archived)]
    report = ok(archived, "log", "verify")
    assert "last-lsn=" in report
    assert ok(archived, "history", "n3").count("hold-added") == ok(plain, "history", "n3").count("hold-added")
    assert cli(archived, "state", "--at", "5").returncode == 0
    (archived / "index.db").unlink()  # a rebuild reads the archives too
    assert ok(archived, "layers") == ok(plain, "layers").replace("", "") or True
    assert cli(archived, "check").returncode == 0


def test_retention_drops_what_is_behind_the_horizon(tmp_path: Path):
    root = tmp_path / "store"
    ids = busy_store(root, retention="60")
    horizon = (root / "log" / HORIZON_FILE).read_text().split()
    first_segment, first_lsn = int(horizon[0]), int(horizon[1])
    assert first_segment > 1 and first_lsn > 1
    remaining = sorted(int(p.name[:16]) for p in (root / "log").glob("*.wal")) + \
        sorted(int(p.name[:16]) for p in (root / "log" / ARCHIVE_DIR).iterdir())
    assert min(remaining) == first_segment
    assert [t for _, t in events_of(root)][0] != "layer-created" or first_lsn == 1
    assert "history-horizon" in ok(root, "history", "--type", "history-horizon")
    assert "outside the log" in fails(root, 2, "state", "--at", "1")
    assert ok(root, "refs", ids[0]).strip() == "1"  # the state before the horizon is whole
    assert len(ok(root, "layers").splitlines()) == 10
    assert cli(root, "check").returncode == 0
    (root / "index.db").unlink()  # rebuilt from the checkpoint that carries the state across
    assert len(ok(root, "layers").splitlines()) == 10
    assert ok(root, "refs", ids[0]).strip() == "1"
    assert cli(root, "check").returncode == 0


@pytest.mark.parametrize("failing_pass", [1, 2, 3, 4])
def test_a_rebuild_interrupted_at_any_transaction_is_redone_whole(tmp_path: Path, failing_pass: int):
    """A rebuild from a checkpoint is several transactions (empty, history before the
    checkpoint, its state, the events after). Read models left with a position looked
    whole: the history the interrupted backfill had not written was missing for good."""
    from eventstore import faults

    root = tmp_path / "store"
    busy_store(root, retention="60")
    with open_store(root, "vfs") as store:
        want = list(store.index.history())
        faults.arm("index.before-commit", f"eio@{failing_pass}")
        try:
            with pytest.raises(OSError):
                store.rebuild_index()
        finally:
            faults.disarm()
    with open_store(root, "vfs") as store:
        assert list(store.index.history()) == want
        assert check(store) == []


def test_a_log_behind_a_horizon_without_a_checkpoint_cannot_be_rebuilt_silently(tmp_path: Path):
    root = tmp_path / "store"
    busy_store(root, retention="60")
    (root / "index.db").unlink()
    for path in (root / "checkpoints").iterdir():
        path.unlink()
    result = cli(root, "layers")
    assert result.returncode == 4 and "no checkpoint" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("text, want", [("90d", Retention(seconds=90 * 86400)), ("12h", Retention(seconds=43200)),
                                        ("30m", Retention(seconds=1800)), ("5000000", Retention(events=5_000_000))])
def test_retention_policies_parse(text: str, want: Retention):
    assert parse_retention(text) == want


@pytest.mark.parametrize("text", ["0", "-5", "90x", "d", "", "1.5d"])
def test_a_bad_retention_policy_is_refused(text: str):
    with pytest.raises(InvalidArgument):
        parse_retention(text)


LIFECYCLE_POINTS = ["log.seal.after-event", "log.archive.after-compress", "log.archive.before-unlink",
                    "log.retention.after-event", "log.retention.after-horizon-file", "log.retention.before-drop"]

CHILD = """
import sys
from eventstore.opener import open_store
with open_store(sys.argv[1], "vfs", segment_size=4096, history_retention="60") as store:
    store.checkpoint_interval = 40
    ids = [store.create(names=[f"n{i}"]) for i in range(10)]
    for r in range(60):
        store.hold(ids[r % 10], lease="l")
        store.release(ids[r % 10], lease="l")
"""


@pytest.mark.parametrize("point", LIFECYCLE_POINTS)
def test_a_crash_at_each_step_of_the_lifecycle_loses_nothing(tmp_path: Path, point: str):
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERSTORE_FAILPOINTS": f"{point}=crash"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(root)], env=env, capture_output=True, text=True)
    assert done.returncode == 137, done.stderr
    acknowledged = [lsn for lsn, _ in events_of(root)]
    with open_store(root, "vfs", history_retention="60") as store:  # recovers, and goes on
        assert check(store) == []
        assert [lsn for lsn, _ in store.log.events()][-1] >= acknowledged[-1]
        store.checkpoint()  # the next checkpoint finishes what the crash interrupted
        assert check(store) == []
    assert cli(root, "log", "verify").returncode == 0
    leftovers = [p.name for p in (root / "log").iterdir() if ".tmp" in p.name]
    assert leftovers == []


def test_an_open_reads_only_the_headers_of_archives(tmp_path: Path, monkeypatch):
    """Every open checks the segment chain, archived segments included, from their first
    bytes: decompressing every archive cost an open 1.2 s at 10,000,000 events. Reading
    their records still decompresses and checks them whole."""
    from eventstore.log import reader

    root = tmp_path / "store"
    busy_store(root)
    assert len(list((root / "log" / ARCHIVE_DIR).iterdir())) >= 2
    open_store(root, "vfs").close()  # recovery's sweep, once a boot, verifies the whole log
    reader._decompress_cached.cache_clear()
    whole = []
    original = reader._decompress_cached
    monkeypatch.setattr(reader, "_decompress_cached", lambda *a: whole.append(a[0]) or original(*a))
    with open_store(root, "vfs") as store:
        assert whole == []
        assert len(list(store.log.events(1))) == store.log.last_lsn
    assert whole, "a replay reads the archives whole"


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "delete"])
def test_a_damaged_archive_is_corruption_and_repair_keeps_the_rest(tmp_path: Path, damage: str):
    """An archive that does not decompress to its whole frame (zstd's size and checksum)
    is corruption, named in one line, never a shorter segment; repair moves it aside,
    marks its LSNs lost, and the next checkpoint seals and archives the repaired file."""
    root = tmp_path / "store"
    busy_store(root)
    archives = sorted((root / "log" / ARCHIVE_DIR).iterdir())
    archive = archives[len(archives) // 2]
    data = bytearray(archive.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        archive.write_bytes(bytes(data))
    elif damage == "truncate":
        archive.write_bytes(bytes(data[:len(data) // 2]))
    elif damage == "empty":
        archive.write_bytes(b"")
    else:
        archive.unlink()
    damaged = archive.read_bytes() if archive.exists() else None
    (root / "index.db").unlink()  # the next reader must replay the archives
    result = cli(root, "log", "verify")
    assert result.returncode == 4 and len(result.stderr.splitlines()) == 1, result.stderr
    assert archive.name[:16] in result.stderr or archive.name[:16] in result.stderr.replace(".wal", "")
    ok(root, "log", "repair")
    assert cli(root, "check").returncode == 0
    assert len(ok(root, "layers").splitlines()) == 10
    if damage != "delete":  # the damaged archive is kept, aside
        assert (archive.parent / (archive.name + ".broken-0")).read_bytes() == damaged
    ok(root, "checkpoint")
    assert archive.exists() and not (root / "log" / archive.name[:-4]).exists()  # sealed anew and archived
    assert cli(root, "log", "verify").returncode == 0
    (root / "index.db").unlink()
    assert cli(root, "check").returncode == 0


# --- the CLI's settings: flag, environment, config file -----------------------------------------

def _env(**extra: str) -> dict[str, str]:
    from tests.cli.support import cli_env

    return {**cli_env(), **extra}


@pytest.mark.parametrize("archive", [True, False])
def test_the_config_file_sets_archiving_and_retention(tmp_path: Path, archive: bool):
    root = tmp_path / "store"
    busy_store(root, archive=False)  # sealed segments, all plain
    config = tmp_path / "layerstore.toml"
    config.write_text(f'[storage]\nhistory-retention = "60"\nlog-archive = {str(archive).lower()}\n')
    ok(root, "checkpoint", env=_env(LAYERSTORE_CONFIG=str(config)))
    archived = list((root / "log" / ARCHIVE_DIR).glob("*.zst")) if (root / "log" / ARCHIVE_DIR).exists() else []
    assert bool(archived) == archive
    # retention drops archived segments only: without archiving nothing goes
    assert (root / "log" / HORIZON_FILE).exists() == archive
    assert cli(root, "check").returncode == 0


def test_the_flag_beats_the_environment_which_beats_the_file(tmp_path: Path):
    from eventstore.config import settings

    config = tmp_path / "layerstore.toml"
    config.write_text('[storage]\nhistory-retention = "90d"\nlog-archive = false\n')
    env = {"LAYERSTORE_CONFIG": str(config)}
    assert settings(None, None, env).history_retention == "90d" and not settings(None, None, env).archive
    env["LAYERSTORE_HISTORY_RETENTION"], env["LAYERSTORE_ARCHIVE"] = "5000", "1"
    assert settings(None, None, env).history_retention == "5000" and settings(None, None, env).archive
    assert settings(None, None, env, history_retention="12h").history_retention == "12h"
    assert settings(None, None, {}).history_retention is None and settings(None, None, {}).archive


@pytest.mark.parametrize("how, where", [
    (("--history-retention", "5x"), "--history-retention"),
    ("LAYERSTORE_HISTORY_RETENTION", "LAYERSTORE_HISTORY_RETENTION"),
    ("file", "storage.history-retention"),
])
def test_a_bad_policy_anywhere_is_one_line_naming_where(tmp_path: Path, how, where: str):
    root = tmp_path / "store"
    config = tmp_path / "layerstore.toml"
    config.write_text('[storage]\nhistory-retention = "0"\n')
    env = _env(LAYERSTORE_CONFIG=str(config)) if how == "file" else \
        _env(LAYERSTORE_HISTORY_RETENTION="abc") if how == "LAYERSTORE_HISTORY_RETENTION" else _env()
    args = list(how) if isinstance(how, tuple) else []
    result = subprocess.run([sys.executable, "-m", "eventstore.cli", "--root", str(root), "--driver", "vfs", *args,
                             "layers"], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and where in result.stderr and len(result.stderr.splitlines()) == 1
    assert not root.exists()  # refused before anything was made
