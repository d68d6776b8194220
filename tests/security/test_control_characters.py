"""Case 3 of issue 12: no control, format or separator character in a name.

Every Unicode character of the classes Cc (C0 and C1 controls), Cf (format: bidi
overrides and isolates, zero-width characters, BOM), Zl and Zp is refused in ids,
names, leases and OCI tags, through the CLI and the Python API, before anything is
logged; error messages quote the value escaped, and no byte a terminal would act on
reaches it, even from a hostile image or a log written before the rule.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from eventstore import errors
from eventstore.store import LayerStore
from tests.store.support import last_lsn_on_disk, snapshot

from .support import cli, ok, one_line_error

BAD = {
    "CSI (U+009B, C1)": "\u009b31m",
    "NEL (U+0085, C1)": "a\u0085b",
    "ESC (C0)": "\x1b[31mred",
    "DEL": "a\x7f",
    "LINE SEPARATOR (Zl)": "a\u2028b",
    "PARAGRAPH SEPARATOR (Zp)": "a\u2029b",
    "RIGHT-TO-LEFT OVERRIDE": "evil\u202egnp.exe",
    "LEFT-TO-RIGHT EMBEDDING": "a\u202ab",
    "POP DIRECTIONAL FORMATTING": "a\u202cb",
    "RIGHT-TO-LEFT ISOLATE": "a\u2067b",
    "POP DIRECTIONAL ISOLATE": "a\u2069b",
    "ZERO WIDTH SPACE (Cf)": "ad\u200bmin",
    "BYTE ORDER MARK (Cf)": "\ufeffbase",
    "SOFT HYPHEN (Cf)": "a\u00adb",
}
CASES = list(BAD.values())
IDS = list(BAD)


def assert_quoted(err: str, bad: str) -> None:
    """The value is named, escaped: none of its forbidden characters is in the message."""
    for c in bad:
        if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}:
            assert c not in err, repr(err)


def cli_in_process(capfd, root: Path, *args: str) -> tuple[int, str]:
    """``layerstore --root ROOT ARGS`` in this process (the same code as the command,
    without a Python start per call): exit code and stderr."""
    from eventstore.cli import main

    capfd.readouterr()
    code = main(["--root", str(root), *args])
    return code, capfd.readouterr().err


def test_the_cli_refuses_every_one_in_a_name_a_lease_and_a_tag(made: Path, capfd):
    root = made
    base = ok(root, "create", "--name", "base")
    lsn = last_lsn_on_disk(root)
    for bad in CASES:
        for args in (["create", "--name", bad], ["create", "--name", "fine", "--name", bad],
                     ["hold", "--lease", bad, base], ["release", "--lease", bad, base],
                     ["import-oci", f"{root}/nowhere:{bad}"], ["export-oci", base, f"{root}/out:{bad}"]):
            code, err = cli_in_process(capfd, root, *args)
            assert code == 2, (args, err)
            assert err.count("\n") == 1 and err[:-1].isprintable(), repr(err)
            assert_quoted(err, bad)
    assert last_lsn_on_disk(root) == lsn
    assert not (root / "out").exists()


@pytest.mark.parametrize("bad", ["\u009b31m", "evil\u202egnp.exe", "a\u2028b"], ids=repr)
def test_the_command_refuses_it_in_one_printable_line(made: Path, bad: str):
    lsn = last_lsn_on_disk(made)
    assert_quoted(one_line_error(cli(made, "create", "--name", bad), 2), bad)
    assert_quoted(one_line_error(cli(made, "hold", "--lease", bad, "x"), 2), bad)
    assert last_lsn_on_disk(made) == lsn


@pytest.mark.parametrize("bad", CASES, ids=IDS)
def test_the_python_api_refuses_it_everywhere_input_enters(made: Path, bad: str):
    from eventstore.events import Holder

    with LayerStore.open(made) as store:
        base = store.create(names=["base"])
        before = snapshot(store)
        for call in (lambda: store.create(names=[bad]), lambda: store.set_names(base, ["base", bad]),
                     lambda: store.hold(base, lease=bad), lambda: store.release(base, lease=bad),
                     lambda: store.hold(base, holder=Holder(lease=bad)),
                     lambda: store.create(bad.encode().hex()[:63] + bad)):
            with pytest.raises(errors.InvalidArgument) as caught:
                call()
            assert str(caught.value).isprintable()
        assert snapshot(store) == before


def test_an_undecodable_byte_in_a_name_is_refused_not_a_traceback(made: Path):
    # what a command line with invalid UTF-8 becomes (a lone surrogate): not writable as UTF-8
    import subprocess
    import sys

    from tests.recovery.support import child_env

    lsn = last_lsn_on_disk(made)
    result = subprocess.run([sys.executable.encode(), b"-m", b"eventstore.cli", b"--root", bytes(made),
                             b"create", b"--name", b"caf\xe9"], env=child_env(), capture_output=True)
    one_line_error(result, 2)
    assert last_lsn_on_disk(made) == lsn


@pytest.mark.parametrize("bad", ["x\",upperdir=/etc", "a\\b", "l\x1babel"], ids=repr)
def test_a_mount_label_cannot_add_mount_options(made: Path, bad: str):
    with LayerStore.open(made) as store:
        before = snapshot(store)
        with pytest.raises(errors.InvalidArgument):
            store.create(mount_label=bad)
        assert snapshot(store) == before


def test_a_hostile_images_tags_reach_the_terminal_escaped(made: Path, tmp_path: Path):
    layout = tmp_path / "image"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    hostile = ["\x1b]0;owned\x07", "\u202etxt.exe", "a\u009b2J"]
    manifests = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "0" * 64,
                  "size": 2, "annotations": {"org.opencontainers.image.ref.name": tag}} for tag in hostile]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    for reference in (f"{layout}:latest", str(layout)):
        err = one_line_error(cli(made, "import-oci", reference), 1)
        for tag in hostile:
            assert_quoted(err, tag)
        assert "tags:" in err or "name one of" in err  # they are still named, escaped


def test_a_name_a_log_holds_from_before_the_rule_is_printed_escaped(made: Path):
    from eventstore import events as ev

    with LayerStore.open(made) as store:
        layer = store.create(names=["plain"])
        with store.writing() as session:  # what an older version let in
            session.append(ev.NamesChanged(layer=layer, names=["plain", "\x1b[2J\u2028evil"]))
    for args in (["layers"], ["layers", "--tree"], ["layer", layer]):
        out = ok(made, *args)
        assert "\x1b" not in out and "\u2028" not in out
        assert "\\x1b[2J\\u2028evil" in out
