"""What the server adds to containerd's contract: the status codes containerd's errdefs
reads (and that a refusal changes nothing), arbitrary keys, usage, cleanup, labels in
the log, the store's CLI beside the server, calls from many threads at once."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import grpc
import pytest

from eventstore import faults
from eventstore.containerd import keys
from eventstore.containerd.api import snapshots_pb2 as pb
from tests.cli.support import cli
from tests.store.support import snapshot

from .client import code, failure, mounted

NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def chain(served):
    """committed ``c1`` <- committed ``c2`` <- active ``a``, view ``v`` on ``c2``."""
    client = served.client
    client.prepare("c1-a")
    client.commit("c1", "c1-a")
    client.prepare("c2-a", "c1")
    client.commit("c2", "c2-a")
    client.prepare("a", "c2")
    client.view("v", "c2")
    return served


REFUSALS = [
    ("stat of an unknown key", NOT_FOUND, lambda c: c.stat("nope")),
    ("mounts of an unknown key", NOT_FOUND, lambda c: c.mounts("nope")),
    ("usage of an unknown key", NOT_FOUND, lambda c: c.usage("nope")),
    ("remove of an unknown key", NOT_FOUND, lambda c: c.remove("nope")),
    ("commit of an unknown key", NOT_FOUND, lambda c: c.commit("n", "nope")),
    ("update of an unknown key", NOT_FOUND, lambda c: c.update(pb.Info(name="nope"))),
    ("prepare on an unknown parent", NOT_FOUND, lambda c: c.prepare("k", "nope")),
    ("prepare on an active parent", INVALID, lambda c: c.prepare("k", "a")),
    ("view of a view", INVALID, lambda c: c.view("k", "v")),
    ("prepare of a key in use", EXISTS, lambda c: c.prepare("a", "c2")),
    ("view under a committed name", EXISTS, lambda c: c.view("c1")),
    ("commit to a name in use", EXISTS, lambda c: c.commit("c1", "a")),
    ("commit to its own key", EXISTS, lambda c: c.commit("a", "a")),
    ("commit of a view", PRECONDITION, lambda c: c.commit("n", "v")),
    ("commit of a committed snapshot", PRECONDITION, lambda c: c.commit("n", "c2")),
    ("commit onto another parent", INVALID, lambda c: c.commit("n", "a", parent="c1")),
    ("mounts of a committed snapshot", PRECONDITION, lambda c: c.mounts("c2")),
    ("remove of a parent", PRECONDITION, lambda c: c.remove("c2")),
    ("prepare with an empty key", INVALID, lambda c: c.prepare("")),
    ("prepare with a key over 4096 bytes", INVALID, lambda c: c.prepare("k" * 4097)),
    ("commit to an empty name", INVALID, lambda c: c.commit("", "a")),
    ("a label over 4096 bytes", INVALID, lambda c: c.prepare("k", "", {"l": "x" * 4096})),
    ("a label with an empty key", INVALID, lambda c: c.prepare("k", "", {"": "x"})),
    ("labels over 64 KiB in all", INVALID, lambda c: c.prepare("k", "", {f"l{i}": "x" * 4000 for i in range(17)})),
    ("an update to labels over 64 KiB", INVALID,
     lambda c: c.update(pb.Info(name="a", labels={f"l{i}": "x" * 4000 for i in range(17)}))),
    ("update of the name", INVALID, lambda c: c.update(pb.Info(name="a"), "name")),
    ("update of the kind", INVALID, lambda c: c.update(pb.Info(name="a"), "kind")),
    ("a filter that does not parse", INVALID, lambda c: c.list("kind=")),
]


@pytest.mark.parametrize("what,status,call", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_answer_containerds_code_and_change_nothing(chain, what, status, call):
    before = snapshot(chain.store)
    assert code(call, chain.client) == status
    assert snapshot(chain.store) == before


def test_committing_with_the_snapshots_own_parent_is_no_rebase(chain):
    chain.client.commit("c3", "a", parent="c2")
    assert chain.client.stat("c3").parent == "c2"


KEYS = [
    "default/7/sha256:" + "ab" * 32,
    "default/8/extract-285119377-Xq3b sha256:" + "cd" * 32,
    "100% / 50%", "../../etc/passwd", "é/名前/🐳", "tab\tnewline\ncontrol\x1b", "x" * 1000,
]


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_any_key_goes_through_the_whole_life_and_can_be_used_again(served, key):
    client = served.client
    parent_key = key + "/parent"
    client.prepare(parent_key + "-a")
    client.commit(parent_key, parent_key + "-a", {"k": "v"})
    for _ in range(2):  # a removed key is free at once
        mounts = client.prepare(key, parent_key, {"label": key[:100]})
        info = client.stat(key)
        assert (info.name, info.parent, dict(info.labels)) == (key, parent_key, {"label": key[:100]})
        assert client.mounts(key) == mounts
        assert [i.name for i in client.list()] == [parent_key, key]
        rec = served.store.lookup(keys.name_for(key))
        assert rec.snapshot.key == key and rec.names == [keys.name_for(key)]
        client.remove(key)
        assert code(client.stat, key) == NOT_FOUND
    client.prepare(key, parent_key)
    client.commit(key + " committed", key)
    assert client.stat(key + " committed").parent == parent_key


def test_history_shows_containerds_keys_and_labels(served):
    client = served.client
    client.prepare("default/1/extract x", "", {"containerd.io/snapshot/a": "1"})
    client.commit("default/2/sha256:abc", "default/1/extract x", {"containerd.io/snapshot.ref": "sha256:abc"})
    client.update(pb.Info(name="default/2/sha256:abc", labels={"more": "yes"}), "labels.more")
    layer_id = served.store.lookup(keys.name_for("default/2/sha256:abc")).id
    result = cli(served.root, "history", layer_id, as_json=True, driver=None)
    assert result.returncode == 0, result.stderr
    events = {e["type"]: e["details"] for e in map(json.loads, result.stdout.splitlines())}  # JSON lines
    assert events["layer-created"]["snapshot"] == {"key": "default/1/extract x", "kind": "active", "labels": {
        "containerd.io/snapshot/a": "1"}}
    assert events["hold-added"] == {"holder": {"lease": "containerd"}}
    committed = events["snapshot-committed"]
    assert committed["key"] == "default/2/sha256:abc" and committed["names"] == ["containerd:default%2F2%2Fsha256:abc"]
    assert committed["labels"] == {"containerd.io/snapshot.ref": "sha256:abc"}
    assert committed["size"] > 0 and committed["inodes"] >= 1
    assert events["snapshot-labels-changed"] == {"labels": {"containerd.io/snapshot.ref": "sha256:abc", "more": "yes"}}


def test_the_cli_sees_snapshots_and_cannot_delete_them_from_under_containerd(served):
    served.client.prepare("default/1/k", "", {"l": "v"})
    rec = served.store.lookup(keys.name_for("default/1/k"))
    shown = json.loads(cli(served.root, "layer", rec.id, as_json=True, driver=None).stdout)
    assert shown["snapshot"]["key"] == "default/1/k" and shown["snapshot"]["labels"] == {"l": "v"}
    assert shown["names"] == ["containerd:default%2F1%2Fk"] and shown["writable"] and shown["hold-refs"] == 1
    refused = cli(served.root, "delete", rec.id, driver=None)
    assert refused.returncode == 3 and "held" in refused.stderr
    assert served.client.stat("default/1/k").name == "default/1/k"
    # a layer made through the CLI is not containerd's: List leaves it out
    made = cli(served.root, "create", "--name", "from-the-cli", driver=None)
    assert made.returncode == 0, made.stderr
    assert [i.name for i in served.client.list()] == ["default/1/k"]
    assert cli(served.root, "check", driver=None).stdout == "ok\n"


def test_a_prepare_that_fails_leaves_nothing_behind(served):
    before = snapshot(served.store)
    faults.arm("store.create.after-driver", "enospc")
    try:
        failed = failure(served.client.prepare, "default/1/k", "", {"l": "v"})
    finally:
        faults.disarm()
    assert failed.code() == grpc.StatusCode.INTERNAL and "[Errno 28]" in failed.details()
    after = snapshot(served.store)
    assert after["driver_layers"] == before["driver_layers"] and after["mounts"] == before["mounts"]
    assert served.store.layers() == []
    assert [row[3] for row in served.store.index.history()] == ["layer-created", "layer-deleted"]
    served.client.prepare("default/1/k")  # and the key is free


def test_usage_measures_active_snapshots_and_records_committed_ones(served):
    client = served.client
    with mounted(client.prepare("a"), served.work / "mnt") as target:
        (target / "data").write_bytes(os.urandom(1 << 20))
        (target / "dir").mkdir()
        usage = client.usage("a")
    assert usage.size >= 1 << 20 and usage.inodes == 3  # root, data, dir
    client.commit("c", "a")
    assert client.usage("c") == usage
    assert served.store.lookup(keys.name_for("c")).snapshot.size == usage.size


def test_cleanup_moves_aside_what_no_layer_accounts_for(served):
    """containerd's Cleanup frees what no snapshot references; layerstore never deletes
    what the log does not account for (DESIGN §4): it goes to lost+found, for the
    operator to purge (docs/containerd.md)."""
    served.client.prepare("kept")
    kept = served.store.lookup(keys.name_for("kept")).id
    orphan = "0" * 64
    Path(served.store.driver.diff_path(orphan)).mkdir(parents=True)  # data no event made
    served.client.cleanup()
    assert served.store.driver.layers() == {kept}
    assert any(p.name.endswith(orphan) for p in (served.root / "lost+found").iterdir())
    types = [row[3] for row in served.store.index.history()]
    assert types[-3:] == ["recovery-started", "data-moved-aside", "recovery-finished"]
    served.client.cleanup()  # nothing left to do: nothing appended
    assert [row[3] for row in served.store.index.history()] == types


def test_calls_from_many_threads_at_once(served):
    client = served.client
    client.prepare("base-a")
    client.commit("base", "base-a")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                key = f"w{n}-{i}"
                client.prepare(key, "base", {"n": str(n)})
                client.stat(key)
                client.commit(key + "-c", key)
                client.list("labels.n==" + str(n))
                client.remove(key + "-c")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [i.name for i in client.list()] == ["base"]
    assert cli(served.root, "check", driver=None).stdout == "ok\n"


def test_a_store_that_can_no_longer_write_stops_the_server(served, monkeypatch):
    def failing_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing_sync)
    assert code(served.client.prepare, "k") == grpc.StatusCode.UNAVAILABLE
    assert served.server.stopping.is_set() and served.server.exit_code == 1


def test_a_call_after_the_stop_began_is_unavailable_not_fatal(served):
    served.server.snapshotter.close()  # what stop does once the calls in flight are done
    assert code(served.client.prepare, "k") == grpc.StatusCode.UNAVAILABLE
    assert not served.server.stopping.is_set() and served.server.exit_code == 0
    assert served.store.layers() == []


def test_a_checkpoint_keeps_what_containerd_knows(served):
    from eventstore import checkpoint

    client = served.client
    client.prepare("a", "", {"containerd.io/snapshot/x": "1"})
    client.commit("c", "a", {"containerd.io/snapshot/y": "2"})
    client.view("v", "c")
    served.store.checkpoint()
    state = checkpoint.newest(served.root, served.store.log).state  # read back, nothing replayed
    assert {rec.id: rec.snapshot for rec in state.layers.values()} == {
        rec.id: rec.snapshot for rec in served.store.layers()}
    assert sorted(rec.snapshot.kind for rec in state.layers.values()) == ["committed", "view"]


@pytest.mark.parametrize("finish", ["remove", "cleanup"])
def test_a_remove_that_failed_half_way_is_finished_by_remove_or_cleanup(served, finish):
    served.client.prepare("k")
    faults.arm("store.delete.after-mark", "eio")
    try:
        assert code(served.client.remove, "k") == grpc.StatusCode.INTERNAL
    finally:
        faults.disarm()
    assert code(served.client.stat, "k") == NOT_FOUND  # being deleted: gone for containerd
    assert [i.name for i in served.client.list()] == []
    assert code(served.client.prepare, "k") == EXISTS  # but its name is not free yet
    if finish == "remove":
        served.client.remove("k")  # ctr snapshots rm again
    else:
        served.client.cleanup()  # what containerd calls after every garbage collection
    assert served.store.layers() == [] and served.store.driver.layers() == set()
    served.client.prepare("k")
    assert cli(served.root, "check", driver=None).stdout == "ok\n"
