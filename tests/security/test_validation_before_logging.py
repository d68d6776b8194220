"""Case 4 of issue 12: every argument is checked before the first event is appended.

A refused command is one line on stderr (no traceback) with its exit code, and the
log's last LSN is what it was: no ``layer-created``/``layer-deleted`` pair for an
argument that was bad from the start.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from eventstore import errors
from eventstore.store import LayerStore
from tests.recovery.support import child_env, spawn_cli, wait_for_driver_work
from tests.store.support import last_lsn_on_disk, snapshot

from .support import cli, one_line_error, run_shell, tar_of


@pytest.fixture
def tar(tmp_path: Path) -> Path:
    """A tar of 10 KiB uncompressed."""
    path = tmp_path / "layer.tar"
    path.write_bytes(tar_of({"etc/data": (b"d" * 3000, 0o644), "etc/more": (b"m" * 1000, 0o644)}))
    return path


def refused(root: Path, *args: str, code: int = 2, **kwargs) -> str:
    """``layerstore ARGS`` fails with ``code`` in one line and appends nothing."""
    lsn = last_lsn_on_disk(root)
    err = one_line_error(cli(root, *args, **kwargs), code)
    assert last_lsn_on_disk(root) == lsn, f"{args} appended events before refusing"
    return err


@pytest.mark.parametrize("size", ["-5", "0", "0k", "-1G", "ten", "1.5.5", "5X", "", "0.0001k"])
def test_a_bad_max_size_is_refused_before_anything_is_logged(made: Path, tar: Path, size: str):
    err = refused(made, "create", "--max-size", size, str(tar))
    assert "--max-size" in err


@pytest.mark.parametrize("size, limit", [("64k", 65536), ("64K", 65536), ("0.5M", 524288), ("0.5MiB", 524288),
                                         ("1k", 1024), ("2KiB", 2048), ("4096", 4096)])
def test_max_size_takes_binary_suffixes(made: Path, tar: Path, size: str, limit: int):
    # the tar is 10 KiB (padded to tar's 10240-byte record): 64k holds it, 1k does not
    assert tar.stat().st_size == 10240
    result = cli(made, "create", "--max-size", size, str(tar))
    if limit < 10240:  # refused by the limit it was given, in bytes, not by the parser
        assert f"limit of {limit} bytes" in one_line_error(result, 3)
    else:
        assert result.returncode == 0, result.stderr.decode()


def test_create_from_a_closed_stdin_is_one_line(made: Path):
    lsn = last_lsn_on_disk(made)
    result = run_shell(f"$LAYERSTORE --root {made} create - <&-")
    assert "closed" in one_line_error(result, 2)
    assert last_lsn_on_disk(made) == lsn


def test_an_empty_root_is_a_usage_error_not_the_default_root(tmp_path: Path):
    default = tmp_path / "default-root"  # what the CLI would fall back to
    env = child_env(LAYERSTORE_ROOT=str(default))
    for args in (["layers"], ["create"], ["exists", "x"]):
        result = subprocess.run([*cli_command(), "--root", "", *args], env=env, capture_output=True)
        assert "--root" in one_line_error(result, 2)
    assert not default.exists()
    with pytest.raises(errors.InvalidArgument):
        LayerStore.open("")


def cli_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "eventstore.cli"]


def test_names_given_twice_are_refused(made: Path):
    refused(made, "create", "--name", "twice", "--name", "twice")
    with LayerStore.open(made) as store:
        layer = store.create(names=["once"])
        before = snapshot(store)
        for call in (lambda: store.create(names=["x", "x"]), lambda: store.set_names(layer, ["y", "y"])):
            with pytest.raises(errors.InvalidArgument, match="twice"):
                call()
        assert snapshot(store) == before


def test_an_uppercase_id_is_refused(made: Path):
    refused(made, "create", "--id", "A" * 64)
    refused(made, "create", "--id", "a" * 63 + "\n")


def test_a_file_that_is_a_directory_a_fifo_or_missing_is_refused(made: Path, tmp_path: Path):
    assert "directory" in refused(made, "create", str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "FIFO" in refused(made, "create", str(fifo))  # refused, not blocked on open (run_cli times out)
    assert "No such file" in refused(made, "create", str(tmp_path / "missing"))
    assert "device" in refused(made, "create", "/dev/zero")


def test_a_file_this_user_may_not_read_is_refused(made: Path, tmp_path: Path, tar: Path):
    tar.chmod(0)
    lsn = last_lsn_on_disk(made)
    # root reads anything: drop the capabilities that let it (as a user without them runs)
    result = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
                             *cli_command(), "--root", str(made), "create", str(tar)],
                            env=child_env(), capture_output=True, timeout=60)
    assert "Permission denied" in one_line_error(result, 2)
    assert last_lsn_on_disk(made) == lsn


def test_a_parent_that_is_still_being_created_is_refused(made: Path, driver: str):
    parent = "ab" * 32
    creator = spawn_cli(made, "create", "--id", parent, failpoints="store.create.after-driver=sleep:60")
    try:
        wait_for_driver_work(made, driver, parent)
        assert "incomplete" in refused(made, "create", "--parent", parent, code=3)
    finally:
        creator.kill()
        creator.wait()


@pytest.mark.parametrize("max_size", [0, -5, True, 1.5, "10k"], ids=repr)
def test_the_python_api_refuses_a_bad_max_size_before_logging(made: Path, tar: Path, max_size):
    with LayerStore.open(made) as store, open(tar, "rb") as content:
        before = snapshot(store)
        with pytest.raises(errors.InvalidArgument, match="max_size"):
            store.create(content=content, max_size=max_size)
        assert snapshot(store) == before


@pytest.mark.parametrize("text, size", [("1", 1), ("4096", 4096), ("10k", 10240), ("10K", 10240), ("64M", 64 << 20),
                                        ("64G", 64 << 30), ("1.5G", 3 << 29), ("64MB", 64 << 20), ("64mib", 64 << 20),
                                        (" 7 ", 7), ("2T", 2 << 40), ("1P", 1 << 50)])
def test_sizes_are_read_in_powers_of_1024(text: str, size: int):
    from eventstore.sizes import parse_size

    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "0k", "-1", "+5", "1e3", "0x10", "k", "1.5.5", "5X", "", "10 k b",
                                  "99999999999P"])
def test_what_is_not_a_size_is_refused_in_one_line(text: str):
    from eventstore.sizes import parse_size

    with pytest.raises(errors.InvalidArgument) as caught:
        parse_size(text)
    assert str(caught.value).isprintable()
