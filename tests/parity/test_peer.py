"""Against the real peer: the same command lines, given to containers-storage and to
layerstore on the same inputs, give the same answers — change lists, diff sizes,
digests, names, layer data, mount state, exit codes. (layerstore takes the peer's
spelling: ``--graph``, ``--storage-driver``, ``--run``, ``-f``, ``-n``.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.support import REPO, cli_env
from tests.store.support import unmount_everything_under

from .support import DRIVERS, base_tar, change_tar, skip_unless_driver_runs, tar_names, view

PEER = shutil.which("containers-storage")
pytestmark = pytest.mark.skipif(PEER is None, reason="containers-storage is not installed (apt-get install "
                                                     "containers-storage; .ci/run does it)")


class Tool:
    """One of the two stores, driven by containers-storage's command lines."""

    def __init__(self, name: str, base: Path, driver: str):
        self.name = name
        program = [PEER] if name == "peer" else [sys.executable, "-m", "eventstore.cli"]
        self.argv = [*program, "--graph", str(base / name / "graph"), "--run", str(base / name / "run"),
                     "--storage-driver", driver]

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run([*self.argv, *args], input=stdin, capture_output=True, timeout=120,
                              env=cli_env() if self.name == "ours" else None, cwd=REPO)

    def ok(self, *args: str, stdin: bytes = b"") -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"{self.name} {args}: exit {done.returncode}: {done.stderr!r}"
        return done.stdout.decode()

    def bytes(self, *args: str) -> bytes:
        done = self.run(*args)
        assert done.returncode == 0, f"{self.name} {args}: {done.stderr!r}"
        return done.stdout

    def layer(self, layer_id: str) -> dict:
        shown = json.loads(self.ok("layer", "--json", layer_id))
        return shown[0] if isinstance(shown, list) else shown

    def shutdown(self) -> None:
        if self.name == "peer":
            self.run("shutdown", "--force")


@pytest.fixture(params=DRIVERS)
def tools(request, tmp_path: Path):
    skip_unless_driver_runs(request.param)
    both = [Tool("peer", tmp_path, request.param), Tool("ours", tmp_path, request.param)]
    try:
        yield both
    finally:
        for tool in both:
            tool.shutdown()
        unmount_everything_under(tmp_path)


@pytest.fixture
def tars(tmp_path: Path) -> dict[str, Path]:
    paths = {"base": tmp_path / "base.tar", "change": tmp_path / "change.tar"}
    paths["base"].write_bytes(base_tar())
    paths["change"].write_bytes(change_tar())
    return paths


def on_both(tools, *args: str) -> list[str]:
    return [tool.ok(*args).strip() for tool in tools]


def write_like_a_container(tool: Tool, layer: str) -> None:
    root = Path(tool.ok("mount", layer).strip())
    (root / "new-file").write_bytes(b"0123456789")
    (root / "etc" / "os-release").write_bytes(b"ID=other-and-longer\n")
    (root / "etc" / "passwd").unlink()
    (root / "var").chmod(0o700)
    os.mkdir(root / "new-dir")
    (root / "new-dir" / "inside").write_bytes(b"abc")
    tool.ok("unmount", layer)


def lines(text: str) -> list[str]:
    return sorted(text.splitlines())  # containers-storage's order of a naive diff is a Go map's


def test_applydiff_records_the_same_digests_and_gives_the_tar_back(tools, tars):
    layers = on_both(tools, "create-layer")
    for tool, layer in zip(tools, layers):
        tool.ok("applydiff", "-f", str(tars["base"]), layer)
    peer, ours = (tool.layer(layer) for tool, layer in zip(tools, layers))
    for field in ("diff-digest", "diff-size", "compressed-diff-digest", "compressed-size"):
        assert ours[field] == peer[field], field
    diffs = [tool.bytes("diff", "-u", layer) for tool, layer in zip(tools, layers)]
    assert diffs[0] == diffs[1] == base_tar()


def test_the_same_writes_give_the_same_changes_and_sizes(tools, tars):
    results = []
    for tool in tools:
        base = tool.ok("import-layer", "-f", str(tars["base"])).strip()
        container = tool.ok("create-layer", base).strip()
        write_like_a_container(tool, container)
        results.append((lines(tool.ok("changes", container)), tool.ok("diffsize", container),
                        lines(tool.ok("changes", container, base)), lines(tool.ok("changes", base))))
    assert results[1] == results[0]
    assert 'Add "/new-dir/inside"' in results[0][0]


def test_changes_and_diffs_between_two_layers(tools, tars):
    found = []
    for tool in tools:
        base = tool.ok("import-layer", "-f", str(tars["base"])).strip()
        a, b = tool.ok("create-layer", base).strip(), tool.ok("create-layer", base).strip()
        write_like_a_container(tool, a)
        root = Path(tool.ok("mount", b).strip())
        (root / "only-in-b").write_bytes(b"b")
        tool.ok("unmount", b)
        found.append((lines(tool.ok("changes", a, b)), lines(tool.ok("changes", b, a)),
                      tool.ok("diffsize", a, b), sorted(tar_names(tool.bytes("diff", "-u", a, b)))))
    assert found[1] == found[0]


def test_applydiff_onto_a_child_gives_the_same_tree(tools, tars):
    trees = []
    for tool in tools:
        base = tool.ok("import-layer", "-f", str(tars["base"])).strip()
        child = tool.ok("create-layer", base).strip()
        tool.ok("applydiff", "-f", str(tars["change"]), child)
        root = Path(tool.ok("mount", child).strip())
        trees.append({path: entry[:3] for path, entry in view(root).items()})  # kind, content, mode
        tool.ok("unmount", child)
        trees[-1]["changes"] = lines(tool.ok("changes", child))
    assert trees[1] == trees[0]


def test_names_and_layer_data_read_back_the_same(tools, tmp_path: Path):
    item = tmp_path / "item"
    item.write_bytes(os.urandom(3000))
    seen = []
    for tool in tools:
        layer = tool.ok("create-layer").strip()
        tool.ok("add-names", "-n", "first", "-n", "second", layer)
        names = tool.ok("get-names", layer)
        tool.ok("set-names", "-n", "third", layer)
        tool.ok("set-layer-data", "-f", str(item), layer, "big-item-1")
        tool.ok("set-layer-data", layer, "big-item-2", stdin=b"small")
        seen.append((names, tool.ok("get-names", "third"), lines(tool.ok("list-layer-data", layer)),
                     tool.bytes("get-layer-data", layer, "big-item-1"), tool.bytes("get-layer-data", layer,
                                                                                   "big-item-2"),
                     tool.run("get-layer-data", layer, "no-such-item").returncode != 0))
    assert seen[1] == seen[0]
    assert seen[0][3] == item.read_bytes()


def test_mounted_exists_and_their_exit_codes(tools):
    answers = []
    for tool in tools:
        a, b = tool.ok("create-layer").strip(), tool.ok("create-layer").strip()
        tool.ok("mount", a)
        mounted = tool.ok("mounted", a, b).replace(a, "A")
        tool.ok("unmount", a)
        answers.append((mounted, tool.ok("mounted", a).replace(a, "A"),
                        tool.run("exists", "-q", a, b).returncode, tool.run("exists", "-q", a, "nothing").returncode))
    assert answers[1] == answers[0] == (("A mounted\n", "", 0, 1))
