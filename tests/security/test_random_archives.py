"""Random archives over a tiny name space, so that entries collide, replace each other,
link across each other and white each other out: every import either refuses cleanly
or succeeds and exports the exact original bytes — and never writes outside."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.archive import export_layer, import_layer
from eventstore.errors import ContentRejected

from ..archive.support import tree_listing

# mostly plain names, so that most archives get through and the survivors interact
# ('..' in a name is always refused, tested on its own; here it is in link targets)
COMPONENTS = ["a"] * 5 + ["b"] * 5 + [".wh.a", ".wh..wh..opq", "."]
names = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3).map("/".join)
link_targets = st.one_of(names, st.sampled_from(["/", "/etc", "../../outside",
                                                 "OUTSIDE", "a/../../.."]))

entries = st.one_of(
    st.tuples(st.just("file"), names, st.binary(max_size=700)),
    st.tuples(st.just("dir"), names, st.just(b"")),
    st.tuples(st.just("symlink"), names, link_targets),
    st.tuples(st.just("hardlink"), names, names),
    st.tuples(st.just("fifo"), names, st.just(b"")),
)


def build(items, fmt: int, outside: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for kind, name, extra in items:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = extra.replace("OUTSIDE", str(outside))
            tar.addfile(info)
    return buffer.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(entries, max_size=12),
       fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
       whiteout_format=st.sampled_from(["overlay", "delete"]))
def test_random_archives_refuse_or_round_trip_and_never_escape(items, fmt, whiteout_format):
    base = Path(tempfile.mkdtemp(prefix="random-archive-"))
    try:
        outside = base / "outside"
        (outside / "dir").mkdir(parents=True)
        (outside / "secret").write_bytes(b"secret")
        os.symlink("secret", outside / "link")
        target = base / "target"
        target.mkdir()
        if whiteout_format == "delete":  # a vfs child starts as a copy of its parent
            (target / "a").mkdir()
            (target / "a/from-parent").write_bytes(b"p")
            os.symlink(outside, target / "b")
            os.symlink("../../outside/secret", target / "a/b")
        before = tree_listing(outside)
        try:
            data = build(items, fmt, outside)
        except ValueError:
            return  # tarfile cannot write this (e.g. a ustar name too long)
        try:
            import_layer(io.BytesIO(data), target, base / "ts", whiteout_format=whiteout_format)
        except ContentRejected as err:
            assert "\n" not in str(err)
            assert not (base / "ts").exists()
        else:
            assert b"".join(export_layer(target, base / "ts")) == data
        assert tree_listing(outside) == before
        assert sorted(os.listdir(base)) == sorted(["outside", "target"]
                                                  + (["ts"] if (base / "ts").exists() else []))
    finally:
        shutil.rmtree(base)
