"""Workload scripts: parsing, fixtures, and the child's acknowledgements."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from replay.model import Model
from replay.workload import (FIXTURES, WRONG_DIGEST, WorkloadError, builtin_workload, content_of, decompressed,
                             layer_id, parse, read_acks)

REPO = Path(__file__).resolve().parents[2]


def test_aliases_become_seeded_ids_and_other_refs_stay_literal():
    steps = parse("create base --name web\ncreate app --parent base\nhold web --lease ci\nmount =ab\n", seed=7)
    base = layer_id(7, "base")
    assert steps[0].op.kwargs["layer_id"] == base and steps[0].op.kwargs["names"] == ("web",)
    assert steps[1].op.kwargs["parent"] == base
    assert steps[2].op.kwargs == {"ref": "web", "lease": "ci"}
    assert steps[3].op.kwargs == {"ref": "ab"}
    assert layer_id(7, "base") != layer_id(8, "base")


def test_comments_blank_lines_and_a_wrong_digest():
    steps = parse("# setup\n\ncreate t --tar small.gz --diff-digest wrong  # refused\ncheckpoint\nreopen\n", 1)
    assert [s.op.kind for s in steps] == ["create", "checkpoint", "reopen"]
    assert steps[0].op.kwargs["diff_digest"] == WRONG_DIGEST
    assert steps[0].line == "create t --tar small.gz --diff-digest wrong"


@pytest.mark.parametrize("line", ["frobnicate x", "create", "hold a --lease", "delete a --bogus",
                                  "create a --tar /no/such/file"])
def test_a_bad_line_names_its_line_number(line: str):
    with pytest.raises(WorkloadError, match="line 2"):
        parse("checkpoint\n" + line + "\n", 1)


def test_fixtures_are_deterministic_and_share_one_diff_digest():
    assert FIXTURES["small.gz"]() == FIXTURES["small.gz"]()
    small = content_of(FIXTURES["small"]())
    for name in ("small.gz", "small.zst"):
        data = FIXTURES[name]()
        assert decompressed(data) == FIXTURES["small"]()
        info = content_of(data)
        assert info.diff_digest == small.diff_digest
        assert info.compressed_digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_the_builtin_workload_does_every_operation_and_agrees_with_the_model():
    steps = parse(builtin_workload(with_content=True), 1)
    assert {s.op.kind for s in steps} == {"create", "hold", "release", "names", "delete", "mount", "umount",
                                          "checkpoint", "reopen"}
    model, refused = Model(), []
    for step in steps:
        try:
            model.run(step.op, "pid:workload") if step.op.kind != "reopen" else None
        except Exception as exc:
            refused.append((step.line.split()[0], type(exc).__name__))
    assert {error for _, error in refused} >= {"LayerInUse", "NameInUse", "NotHeld", "LayerNotFound",
                                               "DigestMismatch"}


def test_the_child_acknowledges_each_step_after_it_returns(tmp_path: Path):
    script = tmp_path / "w.txt"
    script.write_text("create a\nhold a\nrelease nosuch\n")
    acks = tmp_path / "acks"
    subprocess.run([sys.executable, "-m", "replay.workload", "run", "--root", str(tmp_path / "root"),
                    "--driver", "vfs", "--script", str(script), "--ack", str(acks)],
                   check=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    acked, in_flight = read_acks(acks)
    assert in_flight is None
    assert acked[0]["result"] == layer_id(1, "a") and acked[1]["result"] == 1
    assert acked[2]["error"] == "LayerNotFound"
    lines = [json.loads(line) for line in acks.read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in lines][:4] == [("begin", -1), ("ack", -1), ("begin", 0), ("ack", 0)]


def test_an_unacknowledged_step_is_in_flight(tmp_path: Path):
    acks = tmp_path / "acks"
    acks.write_text('{"event": "begin", "step": -1}\n{"event": "ack", "step": -1}\n{"event": "begin", "step": 0}\n'
                    '{"event": "ack", "step": 0, "result": null}\n{"event": "begin", "step": 1}\n{"event": "ac')
    acked, in_flight = read_acks(acks)
    assert sorted(acked) == [-1, 0] and in_flight == 1
