"""Case 2 of issue 12: layer data is not reachable by other local users.

A layer holding a setuid-root binary must not be runnable by ``nobody`` (moby's
CVE-2021-41091 is the same hole); ``nobody`` can list nothing under the root; the
store's directories are 0700 and its files 0600 whatever the umask, older stores are
fixed by the next writer open, and a user who may not read the store gets one line.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.recovery.support import diff_dir, driver_dir

from .support import as_nobody, cli_as_nobody, ok, run_shell, tar_of


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def store_dirs(root: Path, driver: str, layer: str) -> list[Path]:
    """The store's own directories (a layer's content keeps its modes)."""
    dirs = [root, root / "log", root / "checkpoints", root / "tarsplit", root / driver]
    if driver == "vfs":
        return dirs + [root / "vfs" / "dir"]
    layer_dir = root / "overlay" / layer
    return dirs + [root / "overlay" / "l", layer_dir, layer_dir / "work", layer_dir / "merged"]


def store_files(root: Path) -> list[Path]:
    files = [root / "driver", root / "index.db"]
    for name in ("log", "checkpoints", "tarsplit"):
        files += sorted((root / name).iterdir())
    return files


@pytest.fixture
def suid_tar(tmp_path: Path) -> Path:
    path = tmp_path / "suid.tar"
    path.write_bytes(tar_of({"bin/suid-id": (Path("/usr/bin/id").read_bytes(), 0o4755)}))
    return path


def make_store(root: Path, driver: str, tar: Path) -> str:
    layer = ok(root, "create", str(tar), driver=driver)
    ok(root, "checkpoint")
    return layer


def test_every_store_directory_is_0700_and_every_file_0600(root: Path, driver: str, suid_tar: Path):
    layer = make_store(root, driver, suid_tar)
    assert {str(d): oct(mode(d)) for d in store_dirs(root, driver, layer)} == \
        {str(d): "0o700" for d in store_dirs(root, driver, layer)}
    assert {str(f): oct(mode(f)) for f in store_files(root)} == {str(f): "0o600" for f in store_files(root)}
    # the layer's own "/" keeps a root directory's usual mode: it is the container's
    assert mode(diff_dir(root, driver, layer)) == 0o755


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_modes_do_not_depend_on_the_umask(root: Path, driver: str, suid_tar: Path, umask: int):
    result = run_shell(f"umask {umask:03o} && $LAYERSTORE --root {root} --driver {driver} create {suid_tar} "
                       f"&& $LAYERSTORE --root {root} checkpoint")
    assert result.returncode == 0, result.stderr.decode()
    layer = ok(root, "layers").split()[0]
    assert all(mode(d) == 0o700 for d in store_dirs(root, driver, layer))
    assert all(mode(f) == 0o600 for f in store_files(root))
    assert mode(diff_dir(root, driver, layer)) == 0o755


def test_nobody_can_neither_run_a_setuid_binary_of_a_layer_nor_list_the_store(public_dir: Path, driver: str,
                                                                           suid_tar: Path):
    root = public_dir / "store"
    layer = make_store(root, driver, suid_tar)
    binary = diff_dir(root, driver, layer) / "bin" / "suid-id"
    assert binary.stat().st_mode & stat.S_ISUID and binary.stat().st_uid == 0  # what an attacker wants
    paths = [binary]
    if driver == "overlay":  # the mounted view too (the path of CVE-2021-41091)
        paths.append(Path(ok(root, "mount", layer)) / "bin" / "suid-id")
    for path in paths:
        with pytest.raises(PermissionError):
            as_nobody([str(path), "-u"])
    every_dir = [root] + [Path(d) / n for d, names, _ in os.walk(root) for n in names]
    listed = as_nobody(["ls", "-A", *map(str, every_dir)])
    assert listed.stdout == b""
    assert listed.stderr.decode().count("Permission denied") == len(every_dir)


def test_an_older_store_gets_its_modes_fixed_on_the_next_writer_open(root: Path, driver: str, suid_tar: Path):
    layer = make_store(root, driver, suid_tar)
    for path in store_dirs(root, driver, layer)[:6]:  # what the store's first version made 0755
        path.chmod(0o755)
    for path in store_files(root):
        path.chmod(0o644)
    ok(root, "hold", "--lease", "fixer", layer)  # any command that writes
    assert all(mode(d) == 0o700 for d in store_dirs(root, driver, layer))
    assert all(mode(f) == 0o600 for f in store_files(root))
    assert mode(diff_dir(root, driver, layer)) == 0o755  # content is left as it is


def test_a_root_that_holds_other_things_keeps_its_mode(tmp_path: Path, driver: str, suid_tar: Path):
    # a store made straight in a shared directory (a home, /srv) must not change it
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o755)
    (root / "someone-elses-file").write_bytes(b"")
    layer = make_store(root, driver, suid_tar)
    assert mode(root) == 0o755
    assert all(mode(d) == 0o700 for d in store_dirs(root, driver, layer)[1:])


def test_a_user_who_may_not_read_the_store_gets_one_line_from_every_command(public_dir: Path, driver: str,
                                                                          suid_tar: Path):
    root = public_dir / "store"
    layer = ok(root, "create", "--name", "base", str(suid_tar), driver=driver)
    for args in (["layers"], ["layer", "base"], ["exists", "base"], ["history"], ["log", "verify"],
                 ["create"], ["delete", "base"], ["hold", "base"], ["mount", "base"]):
        code, err = cli_as_nobody(root, *args)
        assert code == 5, (args, err)  # a storage error (AccessDenied), not a "no"
        assert "Traceback" not in err and err.count("\n") == 1, (args, err)
        assert "permission denied" in err and str(root) in err, (args, err)
    assert driver_dir(root, driver, layer).is_dir() and ok(root, "layers").split()[0] == layer


def test_nobody_gets_nothing_from_a_copy_of_a_layer_either(public_dir: Path, driver: str, suid_tar: Path):
    # files keep their 0600 when copied out with their modes (a backup, an rsync)
    root = public_dir / "store"
    make_store(root, driver, suid_tar)
    copy = public_dir / "copy"
    shutil.copytree(root / "log", copy, copy_function=shutil.copy2)
    copy.chmod(0o755)
    segment = next(copy.glob("*.wal"))
    assert as_nobody(["cat", str(segment)]).returncode != 0
