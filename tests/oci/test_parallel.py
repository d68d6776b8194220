"""import-oci filling an image's layers side by side (overlay; eventstore/oci/parallel.py).

What the parallel path must give is what the sequential one gives: the same ids,
digests, trees and byte-exact diffs; a layer that fails leaves the layers below it
complete and removes it and the layers above it; a crash anywhere (a child process
killed at each failpoint it passes) leaves, after recovery, the base of the chain
complete and nothing else.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import sys

import pytest

from eventstore import errors, faults
from eventstore import events as ev
from eventstore.oci import ImageRejected, chain_ids, import_oci
from eventstore.oci.progress import ImageProgress
from eventstore.opener import open_store
from replay.invariants import check_recovered
from replay.model import Content, Model
from replay.verify import check
from tests.archive.support import tree_listing
from tests.recovery.support import CRASH_EXIT_CODE, child_env, cli_ok, overlay_or_skip, unmount_everything_under

from .test_oci import LayoutWriter, diff_ids, layer_tar, nothing_half_made

#: five layers of different sizes (the biggest is filled first), whiteouts in the fourth
LAYERS = [
    {f"base/f{i}": os.urandom(1000 + 37 * i) for i in range(60)},
    {"app/a": b"a" * 5000, "base/f1": b"changed\n"},
    {f"data/d{i // 10}/{i}": bytes([i % 251]) * (20_000 + i) for i in range(40)},
    {"base/.wh.f2": b"", "data/d1/.wh..wh..opq": b"", "data/d1/new": b"new\n"},
    {"top": b"the top\n"},
]


@pytest.fixture
def overlay(tmp_path):
    overlay_or_skip(tmp_path)
    yield tmp_path
    unmount_everything_under(tmp_path)


@pytest.fixture
def layout(tmp_path) -> LayoutWriter:
    layout = LayoutWriter(tmp_path / "layout")
    layout.tag(layout.image(LAYERS), "v1")
    return layout


def ids_of(layout: LayoutWriter) -> list[str]:
    return chain_ids(diff_ids(layout, layout.manifest(layout.index[0])))


def records(store) -> list[tuple]:
    return [(r.id, r.parent, tuple(r.names), r.compressed_digest, r.compressed_size, r.diff_digest, r.diff_size,
             r.compression, r.incomplete, r.hold_refs, r.has_tarsplit) for r in store.layers()]


def trees(store) -> list[dict]:
    return [tree_listing(store.driver.diff_path(r.id)) for r in store.layers()]


def same_tree_shape(listing: dict) -> dict:
    """A tree listing without inode numbers or directory mtimes (these tars have no
    directory entries: their directories are made, and dated, by the import)."""
    return {path: (mode, uid, gid, size, None if stat.S_ISDIR(mode) else mtime, content)
            for path, (mode, uid, gid, size, mtime, _ino, content) in listing.items()}


def event_types(store) -> list[tuple[str, str | None]]:
    return [(e.type_name, getattr(e, "layer", None)) for _, e in store.log.events(1)]


# --- the same result as one after the other ------------------------------------------------

def test_parallel_and_sequential_imports_give_the_same_layers(overlay, layout):
    with open_store(overlay / "one", "overlay") as one, open_store(overlay / "many", "overlay") as many:
        sequential = import_oci(one, layout.path, "v1", jobs=1, name="app")
        parallel = import_oci(many, layout.path, "v1", jobs=4, name="app")
        assert parallel == sequential
        assert [layer.id for layer in parallel.layers] == ids_of(layout)
        assert records(many) == records(one)
        assert [same_tree_shape(t) for t in trees(many)] == [same_tree_shape(t) for t in trees(one)]
        for rec, files in zip(many.layers(), LAYERS):
            assert b"".join(many.diff(rec.id)) == layer_tar(files)
        assert check(many, content=True) == [] and check(one, content=True) == []
        # in parallel: every intent first (one record), completions base first
        kinds = [t for t in event_types(many) if t[0] in ("layer-created", "layer-completed")]
        assert kinds == [("layer-created", i) for i in ids_of(layout)] + \
            [("layer-completed", i) for i in ids_of(layout)]


def test_vfs_imports_one_layer_after_the_other(tmp_path, layout):
    with open_store(tmp_path / "store", "vfs") as store:
        import_oci(store, layout.path, "v1", jobs=4)
        kinds = [t[0] for t in event_types(store) if t[0] in ("layer-created", "layer-completed")]
        assert kinds == ["layer-created", "layer-completed"] * len(LAYERS)


def test_layers_the_store_has_are_held_and_the_rest_filled_in_parallel(overlay, layout):
    ids = ids_of(layout)
    base = LayoutWriter(overlay / "base-layout")
    base.tag(base.image(LAYERS[:2]), "v1")
    with open_store(overlay / "store", "overlay") as store:
        import_oci(store, base.path, "v1", jobs=4)
        for desc in base.manifest(base.index[0])["layers"]:  # not read again: need not be there
            layout.blob_path(desc["digest"]).unlink()
        result = import_oci(store, layout.path, "v1", jobs=4)
        assert [layer.imported for layer in result.layers] == [False, False, True, True, True]
        assert [r.id for r in store.layers()] == ids and not any(r.incomplete or r.hold_refs for r in store.layers())
        assert check(store, content=True) == []


@pytest.mark.parametrize("jobs", [0, -1, True, "2", 1.5])
def test_jobs_must_be_a_whole_number_of_at_least_one(tmp_path, layout, jobs):
    with open_store(tmp_path / "store", "vfs") as store:
        with pytest.raises(errors.InvalidArgument, match="jobs"):
            import_oci(store, layout.path, "v1", jobs=jobs)
        assert store.layers() == []


def test_the_cli_takes_jobs(overlay, layout):
    out = cli_ok(overlay / "store", "--driver", "overlay", "import-oci", "--jobs", "3", f"{layout.path}:v1")
    assert out.strip() == ids_of(layout)[-1]


# --- a layer that fails -----------------------------------------------------------------------

def corrupt(layout: LayoutWriter, number: int) -> None:
    """Layer ``number``'s blob gets other bytes of the same size: a valid gzip of
    another tar, so that only the digests tell."""
    desc = layout.manifest(layout.index[0])["layers"][number - 1]
    blob = layout.blob_path(desc["digest"])
    other = gzip.compress(layer_tar({"not": b"what the manifest says"}), mtime=0)
    blob.write_bytes(other.ljust(desc["size"], b"\0")[:desc["size"]])


@pytest.mark.parametrize("number", [1, 3, 5])
def test_a_corrupt_layer_keeps_the_layers_below_and_removes_itself_and_those_above(overlay, layout, number):
    corrupt(layout, number)
    ids = ids_of(layout)
    with open_store(overlay / "store", "overlay") as store:
        with pytest.raises(ImageRejected, match=f"layer {number}/5"):
            import_oci(store, layout.path, "v1", jobs=4)
        assert [r.id for r in store.layers()] == ids[:number - 1]
        assert not any(r.incomplete or r.hold_refs for r in store.layers())
        nothing_half_made(store)
        assert check(store, content=True) == []
        events = [e for _, e in store.log.events(1)]
        assert [e.layer for e in events if isinstance(e, ev.ContentRejected)] == [ids[number - 1]]
        assert sorted(e.layer for e in events if isinstance(e, ev.LayerDeleted)) == sorted(ids[number - 1:])
        # and the image imports once the blob is right again
        layout.blob_path(layout.manifest(layout.index[0])["layers"][number - 1]["digest"]).write_bytes(
            gzip.compress(layer_tar(LAYERS[number - 1]), mtime=0))
        import_oci(store, layout.path, "v1", jobs=4)
        assert [r.id for r in store.layers()] == ids and check(store, content=True) == []


def test_of_two_corrupt_layers_the_lower_is_reported(overlay, layout):
    corrupt(layout, 2)
    corrupt(layout, 4)
    with open_store(overlay / "store", "overlay") as store:
        with pytest.raises(ImageRejected, match="layer 2/5"):
            import_oci(store, layout.path, "v1", jobs=4)
        assert [r.id for r in store.layers()] == ids_of(layout)[:1]
        nothing_half_made(store)


def test_a_hostile_entry_fails_its_layer_on_its_thread(overlay, tmp_path):
    # digests right, content refused by the extraction itself
    layers = [*LAYERS[:2], {**LAYERS[2], "../escape": b"x"}, *LAYERS[3:]]
    hostile = LayoutWriter(tmp_path / "hostile")
    hostile.tag(hostile.image(layers), "v1")
    with open_store(overlay / "store", "overlay") as store:
        with pytest.raises(ImageRejected, match="layer 3/5 .*'..' in the name"):
            import_oci(store, hostile.path, "v1", jobs=4)
        assert [r.id for r in store.layers()] == ids_of(hostile)[:2]
        nothing_half_made(store)
    assert not (tmp_path / "escape").exists() and not (overlay / "store" / "overlay" / "escape").exists()


# --- what the chain may not do ----------------------------------------------------------------

def test_a_completion_durable_before_an_error_keeps_its_layers(overlay, layout):
    """An error after a completion record became durable (here the checkpoint that
    follows it fails) is not a reason to remove the layers the log has complete: their
    data stays, and the holds of this import go."""
    with open_store(overlay / "store", "overlay") as store:
        store.checkpoint_interval = 1  # a checkpoint after every record: the 2nd follows a completion
        faults.arm("checkpoint.before-write", "enospc@2")
        try:
            with pytest.raises(OSError):
                import_oci(store, layout.path, "v1", jobs=4)
        finally:
            faults.disarm()
    with open_store(overlay / "store", "overlay") as store:
        complete = [r for r in store.layers() if not r.incomplete]
        assert complete, "the first completion record is durable: its layers are complete"
        assert check(store, content=True) == []
        for rec in complete:
            assert os.path.isdir(store.driver.diff_path(rec.id))
            assert rec.hold_refs == 0
        nothing_half_made(store)


def test_a_chain_on_a_parent_with_other_id_mappings_is_refused(overlay, layout):
    """As one create after the other refuses it: on overlay a child maps ids as its
    parent does (the image's layers have no mapping; a parent made with one)."""
    base = ids_of(layout)[0]
    with open_store(overlay / "store", "overlay") as store:
        store.create(base, uid_map=[ev.IDMapping(0, 100000, 65536)], gid_map=[ev.IDMapping(0, 100000, 65536)])
        for jobs in (1, 4):
            with pytest.raises(errors.InvalidArgument, match="maps ids as its parent does"):
                import_oci(store, layout.path, "v1", jobs=jobs)
            assert [r.id for r in store.layers()] == [base]


def test_a_chain_is_checked_before_anything_is_recorded(overlay):
    from eventstore.oci.parallel import NewLayer, create_chain

    with open_store(overlay / "store", "overlay") as store:
        lsn = store.log.last_lsn
        bad = [[NewLayer(id="../x", parent=None, content=io.BytesIO())],
               [NewLayer(id="a" * 64, parent=None, content=io.BytesIO()),
                NewLayer(id="b" * 64, parent="c" * 64, content=io.BytesIO())],
               [NewLayer(id="a" * 64, parent=None, content=io.BytesIO(), names=["bad\u0085"])]]
        for layers in bad:
            with pytest.raises(errors.InvalidArgument):
                create_chain(store, layers, workers=2, hold=store.process, held=[])
        with pytest.raises(errors.LayerNotFound):
            create_chain(store, [NewLayer(id="a" * 64, parent="d" * 64, content=io.BytesIO())],
                         workers=2, hold=store.process, held=[])
        assert store.log.last_lsn == lsn and store.layers() == []


# --- progress from several threads -------------------------------------------------------------

def test_one_progress_line_for_layers_read_side_by_side(overlay, layout):
    out = io.StringIO()
    with open_store(overlay / "store", "overlay") as store:
        import_oci(store, layout.path, "v1", jobs=4, progress=ImageProgress(out))
    text = out.getvalue()
    assert text.endswith("\n") and "layers " in text and "/5" in text
    assert text.count("\n") == 1  # one line, redrawn, ended once when the last layer ended


# --- a crash anywhere --------------------------------------------------------------------------

CHILD = """
import sys
from eventstore.oci import import_oci
from eventstore.opener import open_store
with open_store(sys.argv[1], "overlay") as store:
    import_oci(store, sys.argv[2], "v1", jobs=3)
"""


def crash_points(trace: list[str]) -> list[tuple[str, int]]:
    """Every pass of the log's write and sync (each record of the import: the intents,
    the completions, the releases), the first and last pass of the per-layer points, the
    first of the rest. (Which layer passes when varies from run to run, and so does the
    number of completion records: a point not reached in a run is not a failure.)"""
    points = []
    for name in dict.fromkeys(trace):
        count = trace.count(name)
        if name in ("log.append.after-write", "log.append.after-fsync"):
            passes = range(1, count + 1)
        elif name.startswith("store.create."):
            passes = sorted({1, count})
        else:
            passes = [1]
        points += [(name, n) for n in passes]
    return points


def outcomes(layout: LayoutWriter) -> list[tuple[str, Model]]:
    """What a crash may leave: the first k layers complete, for every k."""
    ids = ids_of(layout)
    descs = layout.manifest(layout.index[0])["layers"]
    found, model = [("0 complete", Model())], Model()
    for k, (layer_id, desc, diff) in enumerate(zip(ids, descs, diff_ids(layout, layout.manifest(layout.index[0]))), 1):
        model.create(layer_id, parent=ids[k - 2] if k > 1 else None, content=Content(desc["digest"], diff))
        found.append((f"{k} complete", model.after_crash()))
    return found


def test_a_crash_at_any_failpoint_leaves_a_complete_base_of_the_chain(overlay, layout):
    trace_file = overlay / "trace"
    learn = subprocess.run([sys.executable, "-c", CHILD, str(overlay / "learn"), str(layout.path)],
                           env=child_env(LAYERSTORE_FAILPOINT_TRACE=str(trace_file)), capture_output=True)
    assert learn.returncode == 0, learn.stderr.decode()
    trace = trace_file.read_text().split()
    assert trace.count("store.create.after-content") == len(LAYERS)
    crashed = 0
    for i, (name, nth) in enumerate(crash_points(trace)):
        root = overlay / f"crash-{i}"
        run = subprocess.run([sys.executable, "-c", CHILD, str(root), str(layout.path)],
                             env=child_env(f"{name}=crash@{nth}"), capture_output=True)
        assert run.returncode in (CRASH_EXIT_CODE, 0), run.stderr.decode()  # 0: not reached this time
        crashed += run.returncode == CRASH_EXIT_CODE
        label, problems, _ = check_recovered(lambda: open_store(root, "overlay"), root, outcomes(layout),
                                             0, content=True)
        assert problems == [], f"crash at {name}@{nth}: {problems}"
        assert run.returncode or label == f"{len(LAYERS)} complete"
        with open_store(root, "overlay") as store:  # and the import then finishes
            import_oci(store, layout.path, "v1", jobs=3)
            assert [r.id for r in store.layers()] == ids_of(layout)
            assert check(store, content=True) == []
    assert crashed >= 0.8 * len(crash_points(trace))
