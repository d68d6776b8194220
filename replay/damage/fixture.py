"""The store the damage harness attacks, built once per run, and what it knows of it.

A workload in ``replay.workload``'s script format, run in phases by its child process
(``python -m replay.workload run``) so that every file class exists:

- layers made from real tars, each holding a file unique to it (``marker_path``: the
  alias's name, a token as its content), so that its data can be found again anywhere
  under the root; parent chains; names; holds by lease and by process; mounts; a
  deleted layer; a writable layer written through its mount;
- several log segments and automatic checkpoints (small segment size and interval);
- a *snapshot* of the metadata after each phase but the last: older versions of the
  same files (stale copies);
- a *clone* of the metadata taken at the last snapshot that then got other events
  (diverged copies), and a *foreign* store built from the same workload with another
  seed (same file names, another store uuid, other layer ids and tokens).

The workload itself is ``replay.damage.workload``. The acknowledged layers are the ones
whose create returned and that no acknowledged delete removed; the build checks that
the store lists exactly those, complete.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from replay.damage.commands import cli_argv
from replay.damage.logbytes import RecordSpan, record_spans
from replay.damage.workload import (CLONE_AFTER, DIVERGENT, PHASES, TAR_ALIASES, WRITTEN_ALIASES, layer_id,
                                    layer_tar, marker_path, marker_token)
from replay.workload import load_driver_modules, read_acks

REPO = Path(__file__).resolve().parent.parent.parent
CHILD_TIMEOUT = 300

@dataclass(frozen=True)
class Layer:
    alias: str
    id: str
    token: str
    content: bool  # made from a tar: has a tar-split and a diff digest


@dataclass
class Fixture:
    """A built store and its companions, all unmounted."""

    driver: str
    driver_modules: list[str]
    seed: int
    segment_size: int
    checkpoint_interval: int
    base: Path
    layers: dict[str, Layer] = field(default_factory=dict)  # acknowledged, by alias
    deleted: list[str] = field(default_factory=list)  # aliases the workload deleted
    foreign_ids: dict[str, str] = field(default_factory=dict)
    truth: dict[str, tuple[int, str]] = field(default_factory=dict)  # read command -> (exit, stdout)

    @property
    def pristine(self) -> Path:
        return self.base / "store"

    @property
    def foreign(self) -> Path:
        return self.base / "foreign"

    @property
    def clone(self) -> Path:
        return self.base / "clone"

    @property
    def tars(self) -> Path:
        return self.base / "tars"

    def snapshot(self, k: int) -> Path:
        return self.base / f"snapshot-{k}"

    @property
    def snapshots(self) -> list[Path]:
        return [self.snapshot(k) for k in range(len(PHASES) - 1)]

    # --- where things are, relative to a root ------------------------------------------------

    def segments(self) -> list[str]:
        return sorted(f"log/{n}" for n in os.listdir(self.pristine / "log") if n.endswith(".wal"))

    def checkpoints(self) -> list[str]:
        directory = self.pristine / "checkpoints"
        return sorted(f"checkpoints/{n}" for n in os.listdir(directory) if n.endswith(".ckpt"))

    def records(self, segment: str) -> list[RecordSpan]:
        return record_spans(self.pristine / segment)

    def tarsplit(self, alias: str, root_id: str | None = None) -> str:
        return f"tarsplit/{root_id or self.layers[alias].id}.tar-split"

    def driver_paths(self, root: Path):
        """The driver, opened on ``root`` (only its path methods are used)."""
        from eventstore.drivers import open_driver

        load_driver_modules(self.driver, self.driver_modules)
        return open_driver(self.driver, root, check=False)

    def diff_dir(self, root: Path, alias: str) -> Path:
        return self.driver_paths(root).diff_path(self.layers[alias].id)

    def layer_dir(self, root: Path, alias: str) -> Path:
        """The directory holding every byte the driver keeps for the layer: the
        outermost ancestor of its diff dir (inside the driver's home) named by its id."""
        driver = self.driver_paths(root)
        layer = self.layers[alias].id
        path = Path(driver.diff_path(layer))
        found = path
        while path != driver.home and path != path.parent:
            if path.name == layer:
                found = path
            path = path.parent
        return found

    def stale_version(self, rel: str) -> Path | None:
        """The newest snapshot's copy of ``rel`` that differs from the store's, if any."""
        current = (self.pristine / rel).read_bytes() if (self.pristine / rel).exists() else None
        for snapshot in reversed(self.snapshots):
            candidate = snapshot / rel
            if candidate.is_file() and candidate.read_bytes() != current:
                return candidate
        return None


# --- building ---------------------------------------------------------------------------------

class BuildError(Exception):
    """The store could not be built as the harness needs it."""


def build(fixture: Fixture) -> Fixture:
    """Build the store, its snapshots, the clone and the foreign store under
    ``fixture.base``; fill in what the harness needs to know. Leaves nothing mounted."""
    from eventstore.mounts import detach_all

    fixture.tars.mkdir(parents=True, exist_ok=True)
    try:
        acked = _build_store(fixture, fixture.pristine, fixture.seed, snapshots=True)
        _build_store(fixture, fixture.foreign, fixture.seed + 1, snapshots=False)
    finally:
        for root in (fixture.pristine, fixture.foreign, fixture.clone):
            detach_all(root)
    fixture.foreign_ids = {alias: layer_id(fixture.seed + 1, alias) for alias in acked}
    fixture.layers = {alias: Layer(alias, layer_id(fixture.seed, alias), marker_token(fixture.seed, alias),
                                   alias in TAR_ALIASES) for alias in acked}
    _check_built(fixture)
    return fixture


def _build_store(fixture: Fixture, root: Path, seed: int, snapshots: bool) -> list[str]:
    from eventstore.mounts import detach_all

    root.mkdir(parents=True)
    acked: list[str] = []
    for k, phase in enumerate(PHASES):
        _run_phase(fixture, root, seed, phase, f"{root.name}-{k}", acked)
        if "mount {rw}" in phase and k < CLONE_AFTER:
            _write_through_mounts(fixture, root, seed)
        if snapshots and k < len(PHASES) - 1:
            _copy_metadata(root, fixture.snapshot(k))
        if snapshots and k == CLONE_AFTER:
            # a whole copy, so that both open alike (same recovery, same LSNs) and then differ
            detach_all(root)
            subprocess.run(["cp", "-a", "--", str(root), str(fixture.clone)], check=True)
            _run_phase(fixture, fixture.clone, seed, DIVERGENT, "clone", [])
    return acked


def _run_phase(fixture: Fixture, root: Path, seed: int, template: str, name: str, acked: list[str]) -> None:
    """Run one phase's script in the workload's child process; track acknowledged layers."""
    lines = [line for line in _expand(fixture, seed, template).splitlines() if line.strip()]
    script = fixture.base / f"{name}.txt"
    script.write_text("\n".join(lines) + "\n")
    acks = fixture.base / f"{name}.acks"
    argv = [sys.executable, "-m", "replay.workload", "run", "--root", str(root), "--driver", fixture.driver,
            "--script", str(script), "--ack", str(acks), "--seed", str(seed),
            "--segment-size", str(fixture.segment_size), "--checkpoint-interval", str(fixture.checkpoint_interval)]
    for spec in fixture.driver_modules:
        argv += ["--driver-module", spec]
    done = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    if done.returncode != 0:
        raise BuildError(f"building the store: phase {name} failed (exit {done.returncode}): "
                         f"{done.stderr.strip()[-2000:]}")
    steps, _ = read_acks(acks)
    aliases = {layer_id(seed, a): a for a in (*TAR_ALIASES, *WRITTEN_ALIASES)}
    for index, line in enumerate(lines):
        ack = steps.get(index)
        if ack is None or ack.get("error"):
            raise BuildError(f"building the store: phase {name}, {line!r}: "
                             f"{(ack or {}).get('message') or 'no acknowledgement'}")
        words = line.split() + [""]
        alias = aliases.get(words[1].lstrip("="))
        if words[0] == "create" and alias not in acked:
            acked.append(alias)
        elif words[0] == "delete":
            acked.remove(alias)


def _expand(fixture: Fixture, seed: int, template: str) -> str:
    text = template
    for alias in (*TAR_ALIASES, *WRITTEN_ALIASES):
        text = text.replace("{tar:" + alias + "}", str(_tar_file(fixture, seed, alias)))
        text = text.replace("{" + alias + "}", "=" + layer_id(seed, alias))
    return text


def _tar_file(fixture: Fixture, seed: int, alias: str) -> Path:
    """A tar holding the layer's unique file; gzip for some layers, plain for others."""
    path = fixture.tars / f"{seed}-{alias}.tar"
    if not path.exists():
        data = layer_tar(alias, marker_token(seed, alias))
        if alias in ("base", "tools", "spare"):
            data = gzip.compress(data, mtime=0)
        path.write_bytes(data)
    return path


def _write_through_mounts(fixture: Fixture, root: Path, seed: int) -> None:
    """A container writes its marker into each writable layer, through the mount."""
    driver = fixture.driver_paths(root)
    for alias in WRITTEN_ALIASES:
        target = Path(driver.mount_path(layer_id(seed, alias))) / marker_path(alias)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(marker_token(seed, alias) + "\n")
        os.sync()


def _copy_metadata(root: Path, target: Path) -> None:
    """Everything but the driver's data (which may be mounted): log, read models,
    checkpoints, tar-splits, the driver marker."""
    target.mkdir(parents=True)
    for name in ("log", "checkpoints", "tarsplit"):
        if (root / name).is_dir():
            shutil.copytree(root / name, target / name, symlinks=True)
    for path in root.iterdir():
        if path.is_file() and (path.name.startswith("index.db") or path.name == "driver"):
            shutil.copy2(path, target / path.name)


def _check_built(fixture: Fixture) -> None:
    segments, checkpoints = fixture.segments(), fixture.checkpoints()
    if len(segments) < 3 or len(checkpoints) < 2:
        raise BuildError(f"the store has {len(segments)} segment(s) and {len(checkpoints)} checkpoint(s); "
                         f"the matrix needs 3 and 2: use a smaller --segment-size or --checkpoint-interval")
    argv = cli_argv(fixture.driver, fixture.driver_modules, fixture.pristine, ["--json", "layers"])
    listed = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    if listed.returncode != 0:
        raise BuildError(f"the built store cannot be listed: {listed.stderr.strip()}")
    layers = json.loads(listed.stdout)
    have = {r["id"]: r for r in layers}
    want = {layer.id for layer in fixture.layers.values()}
    if set(have) != want or any(r["incomplete"] for r in have.values()):
        raise BuildError(f"the built store lists {sorted(have)}, the workload acknowledged {sorted(want)}")


def child_env(tmpdir: Path | None = None) -> dict[str, str]:
    """The environment of every process the harness starts: this source tree first,
    no failpoints, no default root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSTORE_")}
    # sealed segments stay plain: the segment cases damage their bytes, record by record;
    # the archive cases archive one themselves (docs/damage-testing.md)
    env["LAYERSTORE_ARCHIVE"] = "0"
    # a user's driver module is importable from the working directory, as for the crash harness
    paths = [str(REPO), os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env
