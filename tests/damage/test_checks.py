"""The damage harness's own judgements, on made-up results: each check must fail when
its invariant is broken (a harness that cannot fail is worthless) and pass when it holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.damage import checks
from replay.damage.workload import WRITE_LEASE
from replay.damage.bytes import Skip, flip, swap, truncate
from replay.damage.caserun import CaseRun
from replay.damage.commands import ALLOWED, STORAGE, CommandResult, command_name, conduct_problems
from replay.damage.fixture import Fixture, Layer
from replay.damage.workload import marker_path
from replay.damage.logbytes import SEGMENT_HEADER_SIZE, record_spans

APP = "a" * 64
LEAF = "b" * 64


def result(args: str, exit: int = 0, stdout: str = "", stderr: str = "", phase: str = "reads") -> CommandResult:
    return CommandResult(phase, args.split(), exit, stdout, stderr)


@pytest.fixture
def run(tmp_path: Path) -> CaseRun:
    fixture = Fixture("vfs", [], 1, 2048, 16, tmp_path / "fixture")
    fixture.layers = {"app": Layer("app", APP, "token-app", True), "leaf": Layer("leaf", LEAF, "token-leaf", True)}
    fixture.truth = {f"refs {APP}": (0, "1\n"), "layers": (0, f"{APP}  app\n{LEAF}  leaf\n"),
                     f"exists {LEAF}": (0, "")}
    root = tmp_path / "root"
    root.mkdir()
    return CaseRun(fixture, tmp_path, root)


# --- (b) how a command ends ---------------------------------------------------------------------

def test_a_traceback_is_reported_even_with_an_allowed_exit_code():
    tb = "Traceback (most recent call last):\n  File x\nsqlite3.DatabaseError: malformed\n"
    problems = conduct_problems(result("check --content", 4, stderr=tb))
    assert len(problems) == 1 and "Python traceback: sqlite3.DatabaseError: malformed" in problems[0]


def test_more_than_one_line_on_stderr_is_reported():
    assert conduct_problems(result("layers", 4, stderr="layerstore: log: corruption\nand more\n"))
    assert not conduct_problems(result("layers", 4, stderr="layerstore: log: corruption in 1.wal\n"))


@pytest.mark.parametrize("args, code", [("layers", 1), ("layers", 2), ("history", 3), ("log verify", 1),
                                         ("hold --lease x ID", 2), ("recover", 137)])
def test_an_exit_code_the_docs_do_not_give_the_command_is_reported(args: str, code: int):
    problems = conduct_problems(result(args, code, stderr="layerstore: no\n"))
    assert problems and f"exit {code}, not one of" in problems[0]


@pytest.mark.parametrize("args, code", [("layers", 0), ("layers", 4), ("layers", STORAGE), ("exists ID", 1),
                                         ("hold --lease x ID", 3), ("log repair", 0)])
def test_documented_exit_codes_pass(args: str, code: int):
    assert not conduct_problems(result(args, code, stderr="layerstore: a reason\n" if code else ""))


def test_a_hung_command_is_reported():
    assert "hung" in conduct_problems(result("recover", -1))[0]


def test_every_command_the_harness_runs_has_a_row_in_the_table():
    from replay.damage.harness import read_commands
    from replay.damage.matrix import MATRIX

    words = [*read_commands("leaf"), "check --content", "log verify", "hold --lease x ID", "mount ID", "umount ID"]
    words += [step for case in MATRIX for step in case.remedy if step != "undo"]
    assert all(command_name(w.split()) in ALLOWED for w in words)
    assert all(2 not in codes for codes in ALLOWED.values())  # usage is never the store's answer to damage


# --- (c) and (d): check ---------------------------------------------------------------------------

def test_check_saying_ok_on_damage_it_cannot_heal_is_reported(run: CaseRun):
    assert "says ok" in checks.check_named(run, result("check --content", 0, "ok\n", phase="check"), ["b" * 12])[0]


def test_check_must_name_the_damage(run: CaseRun):
    vague = result("check --content", 4, "history: rows for 6 LSN(s) are missing\n", phase="check")
    assert "without naming the damage" in checks.check_named(run, vague, ["bbbbbbbbbbbb"])[0]
    named = result("check --content", 4, f"layer {LEAF}: content differs\n", phase="check")
    assert checks.check_named(run, named, ["bbbbbbbbbbbb"]) == []
    on_stderr = result("check --content", 4, stderr="layerstore: log: corruption in 0000000000000002.wal\n")
    assert checks.check_named(run, on_stderr, ["0000000000000002.wal"]) == []


def test_check_after_the_remedy_must_pass():
    assert checks.check_remedied(result("check --content", 4, "layer x: tar-split missing\n"))
    assert checks.check_remedied(result("check --content", 0, "ok\n")) == []


# --- (f) reads tell the truth ----------------------------------------------------------------------

def test_a_read_that_answers_otherwise_than_the_log_is_reported(run: CaseRun):
    forgot = result("layers", 0, f"{APP}  app\n")
    assert "answers what the log does not say" in checks.check_truth(run, [forgot], True, True)[0]
    denies = result(f"exists {LEAF}", 1)
    assert "exit 1, the undamaged store exits 0" in checks.check_truth(run, [denies], True, True)[0]


def test_a_refusal_is_allowed_only_where_reads_may_refuse(run: CaseRun):
    refused = result("layers", 4, stderr="layerstore: log: corruption\n")
    assert checks.check_truth(run, [refused], True, True) == []
    assert "refuses (exit 4)" in checks.check_truth(run, [refused], False, True)[0]
    # exit 1 from a command that looks nothing up is a failure, not an answer: (b) reports it
    assert "refuses (exit 1)" in checks.check_truth(run, [result("layers", 1)], False, True)[0]


def test_the_truth_passes(run: CaseRun):
    assert checks.check_truth(run, [result("layers", 0, f"{APP}  app\n{LEAF}  leaf\n")], False, True) == []


# --- (g) writes ---------------------------------------------------------------------------------------

def holds(*events: tuple[str, str]) -> str:
    """``history --json`` of hold events: (type, lease) each."""
    import json

    return "".join(json.dumps({"lsn": i + 1, "type": kind, "layer": APP, "details": {"holder": {"lease": lease}}})
                   + "\n" for i, (kind, lease) in enumerate(events))


HISTORY = f"--json history {APP} --type hold-added --type hold-released"


def test_an_acknowledged_write_lost_by_the_remedy_is_reported(run: CaseRun):
    hold = result(f"hold --lease {WRITE_LEASE} {APP}", 0, "2\n", phase="write")
    assert "is lost" in checks.check_write(run, hold, result(HISTORY, 0, holds(("hold-added", "other"))))[0]
    assert "is lost" in checks.check_write(run, hold, result(HISTORY, 0, holds(
        ("hold-added", WRITE_LEASE), ("hold-released", WRITE_LEASE))))[0]
    assert "cannot be found" in checks.check_write(run, hold, result(HISTORY, 1, stderr="not found"))[0]
    assert checks.check_write(run, hold, result(HISTORY, 0, holds(("hold-added", WRITE_LEASE)))) == []


def test_older_holds_lost_to_the_damage_are_not_the_writes_fault(run: CaseRun):
    hold = result(f"hold --lease {WRITE_LEASE} {APP}", 0, "2\n", phase="write")
    assert checks.check_write(run, hold, result(HISTORY, 0, holds(("hold-added", WRITE_LEASE)))) == []


def test_a_failed_write_that_took_effect_is_reported(run: CaseRun):
    failed = result(f"hold --lease {WRITE_LEASE} {APP}", 5, stderr="layerstore: no space\n", phase="write")
    assert "yet took effect" in checks.check_write(run, failed, result(HISTORY, 0, holds(("hold-added", WRITE_LEASE))))[0]
    assert checks.check_write(run, failed, result(HISTORY, 0, holds(("hold-added", "other")))) == []


def test_a_write_saying_an_acknowledged_layer_is_not_found_is_reported(run: CaseRun):
    denied = result(f"hold --lease {WRITE_LEASE} {APP}", 1, stderr="layerstore: not found\n", phase="write")
    assert "is not found" in checks.check_write(run, denied, result(HISTORY, 0, holds()))[0]


# --- (a) data -------------------------------------------------------------------------------------------

def _marker(root: Path, where: str, alias: str, token: str) -> None:
    path = root / where / marker_path(alias)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")


def test_data_found_in_its_own_directory_or_in_lost_and_found(run: CaseRun):
    _marker(run.root, f"vfs/dir/{APP}", "app", "token-app")
    _marker(run.root, f"lost+found/20261130T000000Z-driver-{LEAF}", "leaf", "token-leaf")
    assert checks.check_data(run, set()) == []


def test_destroyed_data_is_reported_and_a_copy_in_a_child_does_not_count(run: CaseRun):
    _marker(run.root, f"vfs/dir/{APP}", "app", "token-app")
    _marker(run.root, f"vfs/dir/{APP}", "leaf", "token-leaf")  # vfs: a child holds its parent's files
    problems = checks.check_data(run, set())
    assert len(problems) == 1 and "leaf" in problems[0] and "copies only in other layers' data" in problems[0]


def test_data_removed_by_the_damage_or_deleted_by_the_remedy_is_excused(run: CaseRun):
    _marker(run.root, f"vfs/dir/{APP}", "app", "token-app")
    assert checks.check_data(run, {"leaf"}) == []
    run.removed.add("leaf")
    assert checks.check_data(run, set()) == []


def test_planted_files_may_move_but_not_vanish(run: CaseRun, tmp_path: Path):
    _marker(run.root, f"vfs/dir/{APP}", "app", "token-app")
    _marker(run.root, f"vfs/dir/{LEAF}", "leaf", "token-leaf")
    stray = run.plant(run.root, "stray")
    lost = run.root / "lost+found" / "x-stray"
    lost.mkdir(parents=True)
    stray.rename(lost / stray.name)
    assert checks.check_data(run, set()) == []
    (lost / stray.name).unlink()
    assert "destroyed" in checks.check_data(run, set())[0]


def test_something_outside_the_store_changed_is_reported(run: CaseRun, tmp_path: Path):
    _marker(run.root, f"vfs/dir/{APP}", "app", "token-app")
    _marker(run.root, f"vfs/dir/{LEAF}", "leaf", "token-leaf")
    outside = tmp_path / "outside-file"
    outside.write_text("keep\n")
    run.outside[outside] = "keep\n"
    assert checks.check_data(run, set()) == []
    outside.unlink()
    assert "outside the store" in checks.check_data(run, set())[0]


def test_leftover_temp_files_and_mounts_are_reported(run: CaseRun):
    run.tmpdir.mkdir()
    assert checks.check_leftovers(run, set()) == []
    (run.tmpdir / "tmpabc").write_text("")
    run.own_mounts.append("/x/ours")
    problems = checks.check_leftovers(run, {"/x/ours", "/x/leaked"})
    assert problems == ["a kernel mount is left behind: /x/leaked", "temp files left behind in TMPDIR: tmpabc"]


# --- the byte damage and the record reader ------------------------------------------------------------

def test_record_spans_read_a_real_segment_record_by_record(tmp_path: Path):
    from eventstore import events as ev
    from eventstore.log import EventLog

    with EventLog.open(tmp_path) as log:
        for i in range(5):
            log.append(ev.NamesChanged(layer="a" * 64, names=[f"name-{i}" * (i + 1)]))
    segment = next((tmp_path / "log").glob("*.wal"))
    spans = record_spans(segment)
    assert [s.lsn for s in spans] == [1, 2, 3, 4, 5]
    assert spans[0].offset == SEGMENT_HEADER_SIZE and spans[-1].end == segment.stat().st_size
    assert all(a.end == b.offset for a, b in zip(spans, spans[1:]))


def test_byte_damage_refuses_what_it_cannot_do(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    flip(path, 1)
    assert path.read_bytes() == b"a\x9dc"
    with pytest.raises(Skip):
        flip(path, 3)
    with pytest.raises(Skip):
        truncate(path, 3)
    with pytest.raises(Skip):
        swap(path, None, "stale")
    copy = tmp_path / "g"
    copy.write_bytes(path.read_bytes())
    with pytest.raises(Skip, match="identical"):
        swap(path, copy, "stale")


# --- (i) reads change nothing ---------------------------------------------------------------------------

def test_a_read_that_changes_the_store_is_reported(tmp_path: Path):
    root = tmp_path / "root"
    (root / "log").mkdir(parents=True)
    (root / "log" / "1.wal").write_bytes(b"records")
    before = checks.fingerprint(root, tmp_path / "scratch")
    assert checks.check_unchanged(before, checks.fingerprint(root, tmp_path / "scratch")) == []
    (root / "log" / "1.wal").write_bytes(b"record")  # a reader "cut a torn tail"
    (root / "index.db").write_bytes(b"")
    problems = checks.check_unchanged(before, checks.fingerprint(root, tmp_path / "scratch"))
    assert problems == ["read-only commands changed the store: changed log/1.wal; created index.db"]


def test_sqlite_folding_its_wal_into_index_db_is_no_change_but_new_rows_are(tmp_path: Path):
    import sqlite3

    root = tmp_path / "root"
    root.mkdir()
    writer = sqlite3.connect(root / "index.db", isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE layers (id TEXT)")
    writer.execute("INSERT INTO layers VALUES ('a')")
    assert (root / "index.db-wal").stat().st_size > 0  # the rows live in the WAL for now
    before = checks.fingerprint(root, tmp_path / "scratch")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what a last reader's close does
    assert checks.check_unchanged(before, checks.fingerprint(root, tmp_path / "scratch")) == []
    writer.execute("INSERT INTO layers VALUES ('b')")
    writer.close()
    assert "changed index.db" in checks.check_unchanged(before, checks.fingerprint(root, tmp_path / "scratch"))[0]
