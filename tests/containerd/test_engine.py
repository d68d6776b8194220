"""The proof with the real engine: containerd (1.6, Debian's) with layerstore as its
proxy snapshotter imports an image, runs containers on it, commits and removes
snapshots, survives a server killed in the middle of an unpack, and builds the same
root filesystem as its own overlayfs snapshotter."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from eventstore.store import LayerStore
from tests.cli.support import ok, ok_json, ok_json_lines
from tests.interop.tree import walk

from .engine import SNAPSHOTTER, Engine, missing_tools
from .image import REF, build
from .process import wait_for

pytestmark = pytest.mark.skipif(bool(missing_tools()) or os.geteuid() != 0,
                                reason=f"containerd tests need root and {', '.join(missing_tools()) or 'nothing'}")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("containerd-image"))


@pytest.fixture(scope="module")
def engine(image):
    """One containerd + layerstore for the tests that can share it, the image imported
    into both snapshotters."""
    engine = Engine()
    try:
        engine.start()
        for snapshotter in (SNAPSHOTTER, "overlayfs"):
            engine.ctr("images", "import", "--base-name", REF.rsplit(":", 1)[0], str(image), snapshotter=snapshotter)
        yield engine
    finally:
        engine.stop()


# --- listings, compared ----------------------------------------------------------------------

def ctr_snapshots(engine: Engine) -> set[tuple[str, str, str]]:
    """(key, parent, kind) of every snapshot containerd lists for layerstore."""
    lines = engine.ctr("snapshots", "ls", snapshotter=SNAPSHOTTER).stdout.splitlines()[1:]
    rows = [line.split() for line in lines]
    return {(row[0], row[1] if len(row) == 3 else "", row[-1].lower()) for row in rows}


def store_snapshots(engine: Engine) -> set[tuple[str, str, str]]:
    """The same from ``layerstore layers``: containerd's backend keys are
    ``<namespace>/<number>/<key>``; what ``ctr`` shows is the last part."""
    layers = ok_json(engine.store_root, "layers", driver=None)
    assert all(not layer["incomplete"] for layer in layers)

    def shown(key: str) -> str:
        namespace, _, rest = key.partition("/")
        assert namespace == engine.namespace
        return rest.partition("/")[2]

    key_of = {layer["id"]: shown(layer["snapshot"]["key"]) for layer in layers}
    return {(key_of[layer["id"]], key_of.get(layer.get("parent", ""), ""), layer["snapshot"]["kind"]) for layer in layers}


def _collect_garbage(engine: Engine) -> None:
    """containerd's garbage collection, run now: deleting a lease with --sync does it."""
    lease = engine.ctr("leases", "create").stdout.split()[0]
    engine.ctr("leases", "delete", "--sync", lease)


def assert_listings_agree(engine: Engine) -> None:
    """containerd removes a snapshot from its backend when it collects garbage: after a
    collection both list the same snapshots, and the store checks clean."""
    _collect_garbage(engine)
    assert ctr_snapshots(engine) == store_snapshots(engine)
    assert ok(engine.store_root, "check", driver=None) == "ok\n"


# --- running containers ------------------------------------------------------------------------------

def test_a_container_runs_on_layerstore(engine):
    result = engine.ctr("run", "--rm", REF, "runs-once", "sh", "-c",
                        "echo written-by-the-container > /tmp/out && cat /tmp/out && cat /etc/fresh && ls /data",
                        snapshotter=SNAPSHOTTER)
    # data/text.txt was deleted by the third layer, data/empty by the fourth
    assert result.stdout.splitlines() == ["written-by-the-container", "fresh", "empty-dir", "random.bin"]
    assert_listings_agree(engine)  # --rm removed the container's snapshot
    history = ok_json_lines(engine.store_root, "history", "--type", "layer-created", driver=None)
    assert any(e["details"]["snapshot"]["key"].endswith("/runs-once") for e in history)


def test_a_container_snapshot_is_committed_built_on_and_removed(engine, tmp_path):
    engine.ctr("run", REF, "keeper", "sh", "-c", "mkdir /made && echo kept > /made/file", snapshotter=SNAPSHOTTER)
    # ctr's commit and prepare make their snapshots garbage roots (its view does not:
    # containerd's collector, running on its own, may take a view before we use it)
    engine.ctr("snapshots", "commit", "keeper-saved", "keeper", snapshotter=SNAPSHOTTER)
    engine.ctr("snapshots", "label", "keeper-saved", "containerd.io/snapshot/purpose=kept", snapshotter=SNAPSHOTTER)
    engine.ctr("containers", "delete", "keeper")
    engine.ctr("snapshots", "prepare", "keeper-child", "keeper-saved", snapshotter=SNAPSHOTTER)
    assert_listings_agree(engine)
    listed = {key: kind for key, _, kind in ctr_snapshots(engine)}
    assert (listed["keeper-saved"], listed["keeper-child"]) == ("committed", "active")
    saved = [layer for layer in ok_json(engine.store_root, "layers", driver=None)
             if layer["snapshot"]["key"].endswith("/keeper-saved")]
    assert [layer["snapshot"]["labels"] for layer in saved] == [{"containerd.io/snapshot/purpose": "kept"}]
    target = tmp_path / "child"
    with mounted_by_ctr(engine, SNAPSHOTTER, "keeper-child", target):
        assert (target / "made/file").read_text() == "kept\n"
        assert (target / "bin/busybox").is_file()
    refused = engine.ctr("snapshots", "rm", "keeper-saved", snapshotter=SNAPSHOTTER, check=False)
    assert refused.returncode != 0  # a snapshot still stands on it
    engine.ctr("snapshots", "rm", "keeper-child", snapshotter=SNAPSHOTTER)
    engine.ctr("snapshots", "rm", "keeper-saved", snapshotter=SNAPSHOTTER)
    assert_listings_agree(engine)
    assert not {"keeper-saved", "keeper-child"} & {key for key, _, _ in ctr_snapshots(engine)}


# --- the same tree through containerd's overlayfs and through layerstore ------------------------------

class mounted_by_ctr:
    """The mounts ``ctr snapshots mounts`` prints for ``key``, run for real on ``target``."""

    def __init__(self, engine: Engine, snapshotter: str, key: str, target: Path):
        self.engine, self.snapshotter, self.key, self.target = engine, snapshotter, key, target

    def __enter__(self) -> Path:
        self.target.mkdir(parents=True, exist_ok=True)
        command = self.engine.ctr("snapshots", "mounts", str(self.target), self.key,
                                  snapshotter=self.snapshotter).stdout
        subprocess.run(["sh", "-ec", command], check=True, capture_output=True)
        return self.target

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", str(self.target)], check=False, capture_output=True)


def root_tree(engine: Engine, snapshotter: str, work: Path) -> tuple[dict, list]:
    container = f"tree-{snapshotter}"
    engine.ctr("containers", "create", REF, container, snapshotter=snapshotter)
    try:
        with mounted_by_ctr(engine, snapshotter, container, work / snapshotter) as root:
            entries, links = walk(root)
    finally:
        engine.ctr("containers", "delete", container)
    for path, facts in entries.items():
        if facts["type"] == "dir":
            facts.pop("mtime")  # made at extraction time when a tar has no entry for them
    return entries, links


def test_the_root_filesystem_is_the_one_containerds_overlayfs_makes(engine, tmp_path):
    ours, our_links = root_tree(engine, SNAPSHOTTER, tmp_path)
    theirs, their_links = root_tree(engine, "overlayfs", tmp_path)
    assert sorted(ours) == sorted(theirs)
    assert [p for p in ours if ours[p] != theirs[p]] == []
    assert our_links == their_links
    # the tree is the image's, not an empty one that would compare equal
    assert ours["dev/loop0"]["rdev"] == (7, 0) and ours["fifo"]["type"] == "fifo"
    assert ours["xattrs/file"]["xattrs"]["user.comment"] == b"changed"  # (umoci leaves trusted.* out)
    assert ["hl/link1", "hl/link2", "hl/orig"] in our_links
    assert "gone" not in ours and "replaced/old" not in ours and "etc/passwd" not in ours
    assert ours["etc/fresh"]["xattrs"] == {"user.layer": b"four"}
    assert ours["home/user/own"]["uid"] == 1000 and ours["usr/bin/setuid"]["mode"] == oct(0o6755)


# --- SIGKILL in the middle of an unpack ------------------------------------------------------------------

def _import_until_it_works(engine: Engine, image: Path) -> None:
    """containerd redials the restarted server with a back-off of up to 3 s."""
    deadline = time.monotonic() + 120  # a wait, not a timing assertion: the machine may be loaded
    while True:
        result = engine.ctr("images", "import", "--base-name", REF.rsplit(":", 1)[0], str(image),
                            snapshotter=SNAPSHOTTER, check=False)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the import never worked again: {result.stderr}\n{engine.logs()}")
        time.sleep(0.5)


@pytest.mark.parametrize("failpoint,nth", [
    ("store.create.after-driver", 3),       # inside Prepare of the third layer
    ("containerd.commit.before-event", 2),  # after containerd filled the second layer
], ids=["mid-prepare", "mid-commit"])
def test_a_server_killed_mid_unpack_loses_nothing(image, failpoint, nth):
    engine = Engine()
    importing = None
    try:
        engine.start(failpoints=f"{failpoint}=sleep:120@{nth}")
        importing = subprocess.Popen(
            ["ctr", "--address", str(engine.socket), "--namespace", engine.namespace, "images", "import",
             "--snapshotter", SNAPSHOTTER, "--base-name", REF.rsplit(":", 1)[0], str(image)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def reached() -> bool:
            if importing.poll() is not None:
                raise AssertionError(f"the import ended before {failpoint} #{nth}: {importing.stdout.read()}\n"
                                     f"{engine.logs()}")
            return engine.server.passed_times(failpoint) >= nth

        try:
            wait_for(reached, timeout=90, what=f"the unpack to reach {failpoint} #{nth}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{engine.logs()}") from None
        engine.server.kill()
        output, _ = importing.communicate(timeout=120)
        assert importing.returncode != 0, output

        engine.start_server()  # a writer open: recovery finishes what the kill left
        _import_until_it_works(engine, image)
        result = engine.ctr("run", "--rm", REF, "after-kill", "cat", "/etc/fresh", snapshotter=SNAPSHOTTER)
        assert result.stdout == "fresh\n"
        assert_listings_agree(engine)  # nothing containerd does not know of
        with LayerStore.open(engine.store_root, readonly=True) as store:
            layers = {rec.id for rec in store.layers()}
            assert store.driver.layers() == layers  # no orphan driver data
        recovered = ok_json_lines(engine.store_root, "history", "--type", "layer-marked-incomplete", driver=None)
        reasons = [event["details"]["reason"] for event in recovered]
        assert reasons.count("recovery") == (1 if failpoint == "store.create.after-driver" else 0)
    finally:
        if importing is not None and importing.poll() is None:
            importing.kill()
            importing.wait(10)
        engine.stop()
