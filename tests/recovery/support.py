"""Helpers for the recovery, checkpoint, audit and verify tests: child processes that die
at a failpoint (the honest way to leave a crash behind), where a layer's bytes live on
disk, the events a recovery appended, and mount cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventstore.faults import CRASH_EXIT_CODE  # noqa: F401  (re-exported for the tests)
from eventstore.log import EventLog
from tests.store.support import mounts_under, unmount_everything_under  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[2]

# --- child processes ------------------------------------------------------------------------


def child_env(failpoints: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child: ours (LAYERSTORE_BOOT_ID included), the repository on
    its path, and ``failpoints`` armed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("LAYERSTORE_FAILPOINTS", None)
    if failpoints:
        env["LAYERSTORE_FAILPOINTS"] = failpoints
    env.update(extra)
    return env


def run_cli(root: Path, *args: str, driver: str | None = None, failpoints: str | None = None,
            env: dict[str, str] | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """``layerstore --root ROOT ARGS`` in a child process."""
    command = [sys.executable, "-m", "eventstore.cli", "--root", str(root)]
    if driver:
        command += ["--driver", driver]
    return subprocess.run([*command, *args], env=env or child_env(failpoints), input=stdin,
                          capture_output=True, timeout=120)


def cli_ok(root: Path, *args: str, **kwargs) -> str:
    result = run_cli(root, *args, **kwargs)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def run_python(code: str, *args: str, failpoints: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a child process."""
    return subprocess.run([sys.executable, "-c", code, *args], env=env or child_env(failpoints),
                          capture_output=True, timeout=120)


def spawn_cli(root: Path, *args: str, failpoints: str | None = None) -> subprocess.Popen:
    """``layerstore --root ROOT ARGS`` started in the background (kill it when done)."""
    return subprocess.Popen([sys.executable, "-m", "eventstore.cli", "--root", str(root), *args],
                            env=child_env(failpoints), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def spawn_python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def crash_at(failpoint: str, root: Path, *args: str, nth: int | None = None, env: dict[str, str] | None = None,
             driver: str | None = None) -> None:
    """Run ``layerstore ARGS`` in a child armed to die at ``failpoint`` (on its ``nth``
    pass), and check that it did."""
    spec = f"{failpoint}=crash" + (f"@{nth}" if nth else "")
    result = run_cli(root, *args, driver=driver, env=child_env(spec, **(env or {})))
    assert result.returncode == CRASH_EXIT_CODE, (
        f"child was meant to die at {failpoint}: exit {result.returncode}, {result.stderr.decode()}")


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_for_driver_work(root: Path, driver: str, layer_id: str) -> None:
    """Wait until a creator paused at ``store.create.after-driver`` got there."""
    if driver == "overlay":
        wait_for(lambda: short_links_to(root, layer_id), what=f"the driver work of {layer_id}")
    else:
        wait_for(lambda: driver_dir(root, driver, layer_id).is_dir(), what=f"the driver work of {layer_id}")


# --- the log ---------------------------------------------------------------------------------


def last_lsn_on_disk(root: Path) -> int:
    """The log's last LSN as a fresh reader sees it."""
    with EventLog.open(root, writer=False, create=False) as log:
        return log.last_lsn


def events_after(store, lsn: int) -> list:
    """The events the log holds after ``lsn``, read back from disk through the store's log."""
    return [event for _, event in store.log.events(lsn + 1)]


def summary(events) -> list[tuple]:
    """(type, layer) of each event: what a recovery did, in the order it did it."""
    return [(e.type_name, getattr(e, "layer", None)) for e in events]


# --- where a layer's bytes live -----------------------------------------------------------


def driver_dir(root: Path, driver: str, layer_id: str) -> Path:
    return root / "vfs" / "dir" / layer_id if driver == "vfs" else root / "overlay" / layer_id


def diff_dir(root: Path, driver: str, layer_id: str) -> Path:
    return driver_dir(root, driver, layer_id) if driver == "vfs" else root / "overlay" / layer_id / "diff"


def short_links_to(root: Path, layer_id: str) -> list[str]:
    """The overlay short links in ``l/`` that name ``layer_id``."""
    links = root / "overlay" / "l"
    if not links.is_dir():
        return []
    return [p.name for p in links.iterdir() if os.readlink(p) == f"../{layer_id}/diff"]


def traces_of(root: Path, layer_id: str) -> list[str]:
    """Every byte of ``layer_id`` still on disk: driver dirs, short links, tar-split."""
    found = [str(p) for p in (root / "vfs" / "dir" / layer_id, root / "overlay" / layer_id,
                              root / "tarsplit" / f"{layer_id}.tar-split") if os.path.lexists(p)]
    return found + [f"l/{name}" for name in short_links_to(root, layer_id)]


def new_id() -> str:
    return os.urandom(32).hex()


# --- drivers and mounts -------------------------------------------------------------------


def overlay_or_skip(root: Path) -> None:
    from eventstore.drivers.overlay import OverlayDriver

    reason = OverlayDriver.supported(root / "overlay")
    if reason is not None:
        pytest.skip(f"overlay cannot run here: {reason}")


def clear_immutable_under(root: Path) -> None:
    """Undo ``chattr +i`` anywhere below ``root`` so tmp_path can be cleaned."""
    if root.exists():
        subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True)


# --- content -------------------------------------------------------------------------------


def archive_or_skip(*names: str):
    """The archive module's functions, or a skip naming what is missing."""
    try:
        import eventstore.archive as archive
    except ImportError as exc:
        pytest.skip(f"eventstore.archive is not importable yet ({exc}): content import/export is "
                    f"being written in another issue")
    missing = [n for n in names if not hasattr(archive, n)]
    if missing:
        pytest.skip(f"eventstore.archive has no {', '.join(missing)} yet (being written in another issue)")
    return [getattr(archive, n) for n in names]


def small_tar(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- a small workload and the fold to compare with ---------------------------------------


def workload(store, pause: float = 0.0) -> dict[str, str]:
    """Every kind of event on a few layers: creates (a chain, names), holds and a lease,
    mounts, a rename, a delete, and a create refused for its content. The layer ids by
    role. ``pause`` seconds between operations give every event its own microsecond."""
    steps = []
    ids: dict[str, str] = {}
    tag = f"-{store.log.last_lsn}"  # names stay unique when the workload runs again

    def step(fn):
        steps.append(fn)

    step(lambda: ids.__setitem__("base", store.create(names=["base" + tag])))
    step(lambda: ids.__setitem__("child", store.create(parent=ids["base"], names=["child" + tag], writable=True)))
    step(lambda: store.hold(ids["base"]))
    step(lambda: store.hold(ids["child"], lease="pinned"))
    step(lambda: store.mount(ids["child"]))
    step(lambda: store.mount(ids["child"]))
    step(lambda: ids.__setitem__("doomed", store.create(names=["doomed" + tag])))
    step(lambda: store.set_names(ids["base"], ["base" + tag, "renamed" + tag]))
    step(lambda: store.umount(ids["child"]))
    step(lambda: store.release(ids["base"]))
    step(lambda: store.delete(ids["doomed"]))
    step(lambda: store.umount(ids["child"], force=True))
    step(lambda: ids.__setitem__("last", store.create(parent=ids["child"])))
    step(lambda: store.release(ids["child"], lease="pinned"))
    for fn in steps:
        fn()
        if pause:
            time.sleep(pause)
    return ids


def fold_until(store, lsn: int):
    """The fold of the log's events up to and including ``lsn``."""
    from eventstore.state import fold

    return fold((n, e) for n, e in store.log.events() if n <= lsn)


def as_data(state) -> dict:
    """A State as plain data, for equality with a readable diff."""
    import msgspec

    return {
        "layers": {k: msgspec.to_builtins(v) for k, v in state.layers.items()},
        "names": dict(state.names),
        "children": {k: sorted(v) for k, v in state.children.items() if v},
        "lsn": state.lsn,
    }


def in_lost_found(root: Path, name: str) -> Path | None:
    """The lost+found entry that holds ``name`` (a layer id or a file name), if any."""
    directory = root / "lost+found"
    found = [p for p in directory.iterdir() if p.name.endswith(f"-{name}")] if directory.is_dir() else []
    return found[0] if found else None


def reboot(root: Path, monkeypatch, boot: str) -> None:
    """What a reboot does to a store: a new boot id, and no mount survives."""
    from eventstore.mounts import detach_all

    detach_all(root)
    monkeypatch.setenv("LAYERSTORE_BOOT_ID", boot)
