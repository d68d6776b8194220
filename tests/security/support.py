"""Helpers for the security cases (issue 12): mounts made by a test, trees to compare,
a user who is not root, and stores whose log must not move.

Running as another user: ``subprocess`` with ``user=``/``group=`` (or ``os.setuid`` in a
forked child) drops every capability. ``setpriv --reuid`` does not do that in time —
it keeps its capabilities up to the ``execve`` — so a test built on it can pass for
the wrong reason.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.recovery.support import child_env, run_cli

NOBODY = 65534


# --- mounts -----------------------------------------------------------------------------------

def bind_mount(source: Path, target: Path) -> None:
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True, capture_output=True)


def tmpfs_mount(target: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)], check=True,
                   capture_output=True)


def unmount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=True, capture_output=True)


# --- trees ------------------------------------------------------------------------------------

def make_volume(path: Path) -> Path:
    """A directory standing for a container volume: files at several depths."""
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "precious").write_bytes(b"keep me\n")
    (path / "sub" / "b").write_bytes(b"b" * 5000)
    (path / "sub" / "deeper" / "c").write_bytes(b"c\n")
    os.symlink("precious", path / "link")
    return path


def listing(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: kind, mode, inode and content digest (never following
    a symlink), to prove a tree untouched."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                facts = ("link", os.readlink(path))
            elif path.is_file():
                facts = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                facts = ("dir", "")
            found[str(path.relative_to(root))] = (*facts, st.st_mode, st.st_ino)
    return found


# --- content ----------------------------------------------------------------------------------

def tar_of(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of ``name -> (data, mode)`` regular files owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, 0, 0, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- the CLI ------------------------------------------------------------------------------------

def cli(root: Path, *args: str, driver: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    return run_cli(root, *args, driver=driver, **kwargs)


def ok(root: Path, *args: str, **kwargs) -> str:
    result = cli(root, *args, **kwargs)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The stderr of a command that must fail with ``code``: one printable line, no
    traceback, no byte a terminal would act on."""
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code, f"exit {result.returncode}, want {code}: {err}"
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err[:-1].isprintable(), repr(err)
    return err


def run_shell(command: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``sh -c COMMAND`` with ``$LAYERSTORE`` set to the CLI (for redirections like ``<&-``)."""
    env = dict(env or child_env())
    env["LAYERSTORE"] = f"{sys.executable} -m eventstore.cli"
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=timeout)


# --- another user ---------------------------------------------------------------------------------

def as_nobody(argv: list[str]) -> subprocess.CompletedProcess:
    """``argv`` run as nobody:nogroup with no supplementary groups and no capabilities."""
    return subprocess.run(argv, user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True,
                          timeout=60)


def cli_as_nobody(root: Path, *args: str) -> tuple[int, str]:
    """``layerstore --root ROOT ARGS`` in a forked child that became nobody (exit code,
    stderr). In-process: the interpreter itself lives where nobody cannot go, so what
    the command needs is imported before the fork."""
    import importlib

    import eventstore.cli as cli_module

    for name in ("eventstore.store", "eventstore.query", "eventstore.access", "eventstore.private",
                 "eventstore.inputs", "eventstore.sizes", "eventstore.log.repair", "replay.audit", "replay.verify"):
        importlib.import_module(name)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody from here on, and out without Python's cleanup
        code = 125
        try:
            os.dup2(write_end, 2)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0, closefd=False), write_through=True)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = cli_module.main(["--root", str(root), *args])
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is the bug
            os.write(2, f"Traceback (escaped main): {exc!r}\n".encode())
        finally:
            os._exit(code if isinstance(code, int) else 125)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        err = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err
