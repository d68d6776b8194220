"""Small files written by writer threads (eventstore/archive/writers.py) give exactly what
the reading thread alone gives: the same tree, the same tar-split (the export is the
original, byte for byte), the same refusals with the same messages, nothing outside.

The writers start only where creating a file is slow; here they are forced on from the
first file (``SLOW_CREATE_NS = 0``) and compared with a plain import of the same tar.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.archive import export_layer, extract, import_layer
from eventstore.errors import ContentRejected

from ..security.test_random_archives import build, entries
from .support import MTIME, TarBuilder, tree_listing


@pytest.fixture
def writers_forced(monkeypatch):
    """A function: (tar bytes, whiteout format, forced?) -> the import's outcome."""
    def outcome(data: bytes, whiteout_format: str, forced: bool) -> tuple:
        if forced:
            monkeypatch.setattr(extract, "SLOW_CREATE_NS", 0)
            monkeypatch.setattr(extract, "CREATES_MEASURED", 1)
        else:
            monkeypatch.setattr(extract, "SLOW_CREATE_NS", 1 << 62)
        return _import(data, whiteout_format)
    return outcome


def _import(data: bytes, whiteout_format: str) -> tuple:
    sandbox = Path(tempfile.mkdtemp(prefix="writers-"))
    try:
        (sandbox / "outside").mkdir()
        (sandbox / "outside" / "secret").write_text("keep")
        target = sandbox / "target"
        target.mkdir()
        try:
            result = import_layer(io.BytesIO(data), target, sandbox / "split", whiteout_format=whiteout_format)
        except ContentRejected as err:
            return "refused", str(err), _listing(sandbox / "outside")
        exported = b"".join(export_layer(target, sandbox / "split"))
        return result, _listing(target), exported, _listing(sandbox / "outside")
    finally:
        shutil.rmtree(sandbox)


def _listing(root: Path) -> dict:
    """tree_listing with inode numbers replaced by hardlink groups (numbered in path
    order), and the mtime of a directory no entry set (made when the import ran) as "now"."""
    listing = tree_listing(root)
    groups: dict[int, int] = {}
    return {path: (*fields[:4], "now" if fields[4] > NOW_NS else fields[4],
                   groups.setdefault(fields[5], len(groups)), fields[6])
            for path, fields in sorted(listing.items())}


NOW_NS = (MTIME + 10 ** 7) * 10 ** 9  # after every time the tars here carry


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(items=st.lists(entries, max_size=14),
       fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
       whiteout_format=st.sampled_from(["overlay", "delete"]))
def test_random_archives_give_the_same_outcome_with_writers(writers_forced, items, fmt, whiteout_format):
    data = build(items, fmt, Path("/nonexistent-outside"))
    assert writers_forced(data, whiteout_format, True) == writers_forced(data, whiteout_format, False)


def _many_directories() -> bytes:
    # more directories than the resolver keeps open (it closes some while files are in
    # flight), files replaced, linked and whited out after they were queued
    tar = TarBuilder()
    for d in range(300):
        tar.dir(f"d{d}", mode=0o755 if d % 7 else 0o2775, gid=0 if d % 7 else 40)
        for f in range(4):
            tar.file(f"d{d}/f{f}", bytes([d % 256]) * (f * 300 + d), mode=(0o644, 0o600, 0o4755, 0o664)[f],
                     uid=(0, 1000)[f % 2], mtime=MTIME - d)
    for d in range(0, 300, 10):
        tar.file(f"d{d}/f0", b"replaced " * d)           # the same name again: the first is kept in the tar-split
        tar.hardlink(f"d{d}/link", f"d{d + 1}/f1")
        tar.file(f"d{d + 2}/.wh.f2", b"")                 # a whiteout of a file queued earlier
        tar.dir(f"d{d + 3}/f3")                           # a directory over a file
    return tar.bytes()


@pytest.mark.parametrize("whiteout_format", ["overlay", "delete"])
def test_a_big_layer_with_replacements_gives_the_same_tree(writers_forced, monkeypatch, whiteout_format):
    queued = []
    submit = extract.FileWriters.submit
    monkeypatch.setattr(extract.FileWriters, "submit", lambda self, job, where: (queued.append(where),
                                                                                 submit(self, job, where)))
    data = _many_directories()
    forced = writers_forced(data, whiteout_format, True)
    assert forced[0] != "refused" and forced[2] == data
    assert len(queued) > 1000  # nearly every file went through the writers
    assert forced == writers_forced(data, whiteout_format, False)


def test_a_file_below_a_queued_file_is_refused_alike(writers_forced):
    # "f" is in flight when "f/below" asks for it as a directory
    data = TarBuilder().file("a", b"1").file("f", b"2").file("f/below", b"3").bytes()
    forced = writers_forced(data, "overlay", True)
    assert forced[0] == "refused" and "not a directory" in forced[1]
    assert forced == writers_forced(data, "overlay", False)


def test_many_directories_and_late_replacements_round_trip(writers_forced):
    tar = TarBuilder()
    for d in range(400):
        for f in range(3):
            tar.file(f"d{d}/f{f}", f"{d}/{f}".encode() * 50)
    for d in range(0, 400, 25):
        tar.file(f"d{d}/f1", b"second")
        tar.hardlink(f"d{d}/h", f"d{d}/f2")
    data = tar.bytes()
    forced = writers_forced(data, "overlay", True)
    assert forced[0] != "refused" and forced[2] == data
    assert forced == writers_forced(data, "overlay", False)


def test_a_file_the_writers_cannot_finish_is_named(writers_forced):
    # an xattr value over the kernel's 64 KiB limit fails on the writer thread; the
    # refusal names that entry, as the reading thread's would
    tar = TarBuilder()
    for f in range(40):
        tar.file(f"f{f}", b"x")
    tar.file("big-xattr", b"x", pax_headers={"SCHILY.xattr.user.big": "v" * 70000})
    for f in range(40):
        tar.file(f"g{f}", b"y")
    data = tar.bytes()
    forced = writers_forced(data, "overlay", True)
    assert forced[0] == "refused" and "big-xattr" in forced[1]
    assert forced == writers_forced(data, "overlay", False)


def test_writers_start_only_when_creating_files_is_slow(monkeypatch, tmp_path):
    started = []
    real = extract.FileWriters

    def record(*args, **kwargs):
        started.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, "FileWriters", record)
    tar = TarBuilder()
    for f in range(100):
        tar.file(f"f{f}", b"x")
    data = tar.bytes()
    monkeypatch.setattr(extract, "SLOW_CREATE_NS", 1 << 62)
    import_layer(io.BytesIO(data), _empty(tmp_path / "a"), tmp_path / "a.split", whiteout_format="overlay")
    assert started == []
    monkeypatch.setattr(extract, "SLOW_CREATE_NS", 0)
    import_layer(io.BytesIO(data), _empty(tmp_path / "b"), tmp_path / "b.split", whiteout_format="overlay")
    assert started == [True]
    # a target that is not empty (a vfs child's copy of its parent) never gets writers
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "from-the-parent").write_text("x")
    import_layer(io.BytesIO(data), tmp_path / "c", tmp_path / "c.split", whiteout_format="delete")
    assert started == [True]


def _empty(path: Path) -> Path:
    os.makedirs(path)
    return path
