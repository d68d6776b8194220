"""Workloads for the crash harness: a small script language, the built-in mix, the tar
fixtures it uses, and the child process that runs a workload against a store.

A workload is a text file, one operation a line (``#`` starts a comment)::

    create ALIAS [--parent REF] [--name N]... [--writable] [--tar FIXTURE|FILE]
                 [--diff-digest D] [--compressed-digest D]
    hold REF [--lease L]          release REF [--lease L]
    names REF [N]...              delete REF [--force]
    mount REF                     umount REF [--force]
    checkpoint                    reopen

An ALIAS names a layer whose id is derived from the seed (``layer_id``), so every run
of a workload uses the same ids. A REF is an alias, or anything else literally (a name,
an id prefix); ``=TEXT`` is always literal. FIXTURE is one of ``FIXTURES``; any other
``--tar`` value is a file read when the workload is parsed. ``--diff-digest wrong``
gives a digest the content does not have.

The child (``python -m replay.workload run ...``) opens the store, runs the steps,
and appends one JSON line to the ack file before (``begin``) and after (``ack``) each:
an ``ack`` line is the caller's proof that the operation returned. Step -1 is the
open itself.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shlex
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from replay.model import Content, Op

OPEN_STEP = -1
WRONG_DIGEST = "sha256:" + "0" * 64
FIXTURE_MTIME = 1_700_000_000


# --- tar fixtures ------------------------------------------------------------------------

def _tar(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """A deterministic tar: (kind, name, data or link target) with fixed owners and times."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.mode = FIXTURE_MTIME, 0, 0, 0o644
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
                tar.addfile(info)
            else:
                payload = data if isinstance(data, bytes) else data.encode()
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def _small() -> bytes:
    return _tar([
        ("dir", "etc", b""),
        ("file", "etc/hostname", b"layerstore\n"),
        ("file", "etc/motd", b"crash me if you can\n" * 40),
        ("dir", "usr", b""),
        ("dir", "usr/bin", b""),
        ("file", "usr/bin/tool", bytes(range(256)) * 9 + b"\x7fELF"),
        ("symlink", "usr/bin/alias", "tool"),
        ("hardlink", "usr/bin/tool-hard", "usr/bin/tool"),
    ])


def _whiteouts() -> bytes:
    # on top of ``small``: delete a file, make a directory opaque, add one
    return _tar([
        ("dir", "etc", b""),
        ("file", "etc/.wh.motd", b""),
        ("dir", "usr/bin", b""),
        ("file", "usr/bin/.wh..wh..opq", b""),
        ("file", "usr/bin/new", b"replaced\n"),
    ])


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


FIXTURES = {
    "small": _small,
    "small.gz": lambda: gzip.compress(_small(), mtime=0),
    "small.zst": lambda: _zstd(_small()),
    "whiteouts": _whiteouts,
}


def decompressed(data: bytes) -> bytes:
    """The tar inside ``data`` (plain, gzip or zstd, by magic bytes)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def content_of(data: bytes) -> Content:
    """What the model needs to know of a tar stream: its two digests and sizes."""
    tar = decompressed(data)
    return Content("sha256:" + hashlib.sha256(data).hexdigest(), "sha256:" + hashlib.sha256(tar).hexdigest(),
                   len(data), len(tar))


def archive_available() -> bool:
    """True when eventstore.archive can import layers (creates from a tar need it)."""
    try:
        from eventstore.archive import import_layer  # noqa: F401
    except ImportError:
        return False
    return True


# --- the built-in workload ---------------------------------------------------------------

BUILTIN_WITHOUT_CONTENT = """\
# every operation of DESIGN §1, the refusals included
create base --name base
create app --parent base --writable --name app
create app --parent base                  # exists with that parent: takes a hold (the seed's rule)
hold base --lease build
hold app --lease ci
release app
mount app
mount app                                 # a second mount only counts
names app app web
umount app
create leaf --parent app --writable
delete app                                # refused: held, mounted and a parent
create other --parent leaf --name web     # refused: the name is taken
checkpoint
create scratch
mount scratch
hold scratch
release scratch
delete scratch --force                    # forced: unmounted first
reopen
release nosuch                            # refused: not found
release app --lease ci
release base                              # refused: only a lease holds it
delete leaf
umount app --force
delete base                               # refused: held by the lease
release base --lease build
delete app
create spare --name spare
hold spare
mount base
"""

BUILTIN_CONTENT = """\
create tools --tar small.gz --name tools
create tools-again --tar small.zst        # the same tar, another compression
create patch --parent tools --tar whiteouts
mount patch
create bad --tar small --diff-digest wrong   # refused: digest mismatch, half-made layer removed
delete tools-again
"""


def builtin_workload(with_content: bool | None = None) -> str:
    """The built-in mix; with tar creates when the archive module can import them."""
    if with_content is None:
        with_content = archive_available()
    return BUILTIN_WITHOUT_CONTENT + (BUILTIN_CONTENT if with_content else "")


# --- parsing -------------------------------------------------------------------------------

def layer_id(seed: int, alias: str) -> str:
    """The id an alias stands for in a run with ``seed``."""
    return hashlib.sha256(f"layerstore-crash:{seed}:{alias}".encode()).hexdigest()


@dataclass(frozen=True)
class Step:
    index: int
    line: str
    op: Op
    data: bytes | None = None  # the tar stream of a create


class WorkloadError(ValueError):
    """A workload line cannot be understood."""


def _parser(kind: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=kind, add_help=False, exit_on_error=False)
    if kind == "create":
        p.add_argument("alias")
        p.add_argument("--parent")
        p.add_argument("--name", action="append", default=[])
        p.add_argument("--writable", action="store_true")
        p.add_argument("--tar")
        p.add_argument("--diff-digest")
        p.add_argument("--compressed-digest")
    elif kind in ("hold", "release"):
        p.add_argument("ref")
        p.add_argument("--lease")
    elif kind == "names":
        p.add_argument("ref")
        p.add_argument("names", nargs="*")
    elif kind in ("delete", "umount"):
        p.add_argument("ref")
        p.add_argument("--force", action="store_true")
    elif kind == "mount":
        p.add_argument("ref")
    return p


KINDS = ("create", "hold", "release", "names", "delete", "mount", "umount", "checkpoint", "reopen")


def parse(text: str, seed: int, base_dir: Path | None = None) -> list[Step]:
    """The steps of a workload script (see the module docstring)."""
    aliases: set[str] = set()
    steps: list[Step] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = shlex.split(raw, comments=True)
        if not words:
            continue
        kind, rest = words[0], words[1:]
        if kind not in KINDS:
            raise WorkloadError(f"line {number}: unknown operation {kind!r} (known: {', '.join(KINDS)})")
        try:
            args = _parser(kind).parse_args(rest)
        except (argparse.ArgumentError, SystemExit) as exc:
            raise WorkloadError(f"line {number}: {raw.strip()!r}: {exc}") from None

        def ref(token: str) -> str:
            if token.startswith("="):
                return token[1:]
            return layer_id(seed, token) if token in aliases else token

        data = None
        if kind == "create":
            if args.alias.startswith("="):
                new_id = args.alias[1:]
            else:
                aliases.add(args.alias)
                new_id = layer_id(seed, args.alias)
            content = None
            if args.tar:
                data = _tar_data(args.tar, base_dir, number)
                content = content_of(data)
            diff_digest = args.diff_digest
            if diff_digest == "wrong":
                diff_digest = WRONG_DIGEST
            op = Op.make("create", layer_id=new_id, parent=ref(args.parent) if args.parent else None,
                         names=tuple(args.name), writable=args.writable, content=content,
                         diff_digest=diff_digest, compressed_digest=args.compressed_digest)
        elif kind in ("hold", "release"):
            op = Op.make(kind, ref=ref(args.ref), lease=args.lease)
        elif kind == "names":
            op = Op.make(kind, ref=ref(args.ref), names=tuple(args.names))
        elif kind in ("delete", "umount"):
            op = Op.make(kind, ref=ref(args.ref), force=args.force)
        elif kind == "mount":
            op = Op.make(kind, ref=ref(args.ref))
        else:
            op = Op.make(kind)
        steps.append(Step(len(steps), raw.split("#", 1)[0].strip(), op, data))
    return steps


def _tar_data(name: str, base_dir: Path | None, number: int) -> bytes:
    if name in FIXTURES:
        return FIXTURES[name]()
    path = Path(name)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WorkloadError(f"line {number}: --tar {name}: {exc.strerror}") from None


# --- running a step against the real store ---------------------------------------------------

def run_on_store(store, step_op: Op, data: bytes | None = None) -> object:
    """Do ``step_op`` on an open LayerStore; the result ``normalize`` compares."""
    k = step_op.kwargs
    kind = step_op.kind
    if kind == "create":
        return store.create(k["layer_id"], parent=k.get("parent"), names=list(k.get("names") or ()),
                            writable=bool(k.get("writable")),
                            content=io.BytesIO(data) if data is not None else None,
                            compressed_digest=k.get("compressed_digest"), diff_digest=k.get("diff_digest"))
    if kind == "hold":
        return store.hold(k["ref"], lease=k.get("lease"))
    if kind == "release":
        return store.release(k["ref"], lease=k.get("lease"))
    if kind == "names":
        return store.set_names(k["ref"], list(k.get("names") or ()))
    if kind == "delete":
        return store.delete(k["ref"], force=bool(k.get("force")))
    if kind == "mount":
        return store.mount(k["ref"])
    if kind == "umount":
        return store.umount(k["ref"], force=bool(k.get("force")))
    if kind == "checkpoint":
        store.checkpoint()
        return None
    raise ValueError(f"run_on_store cannot do {kind!r}")


def normalize(kind: str, result: object) -> object:
    """The part of a result both the store and the model give: ids and counts."""
    return result if kind in ("create", "hold", "release", "umount") else None


# --- the child process -------------------------------------------------------------------------

class AckWriter:
    """Appends JSON lines to the ack file (outside the store: it survives any crash)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **fields: object) -> None:
        os.write(self.fd, (json.dumps(fields) + "\n").encode())


def read_acks(path: str | os.PathLike) -> tuple[dict[int, dict], int | None]:
    """The ``ack`` lines by step, and the step that began without an ack (if any)."""
    acked: dict[int, dict] = {}
    begun: list[int] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}, None
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by the crash
        if entry.get("event") == "begin":
            begun.append(entry["step"])
        elif entry.get("event") == "ack":
            acked[entry["step"]] = entry
    in_flight = next((s for s in reversed(begun) if s not in acked), None)
    return acked, in_flight


def load_driver_modules(driver: str, specs: list[str]) -> None:
    """Make a user's driver known: ``MOD:CLASS`` registers CLASS under ``driver``;
    ``MOD`` is imported (and registers its drivers itself)."""
    import importlib

    from eventstore import drivers

    for spec in specs:
        module, _, attr = spec.partition(":")
        loaded = importlib.import_module(module)  # now: its failpoints are declared before any is armed
        if attr:
            drivers.register(driver, getattr(loaded, attr))


def arm_crash(spec: str, crash=None) -> None:
    """Crash at ``spec`` ("NAME@N": the N-th pass of NAME; "@N": the N-th failpoint
    passed): call ``crash``, or end the process as an armed failpoint does."""
    from eventstore import faults

    name, _, nth = spec.partition("@")
    target = int(nth or 1)
    original = faults.point
    passes = 0

    def point(point_name: str) -> None:
        nonlocal passes
        original(point_name)  # the trace records the point first
        if not name or point_name == name:
            passes += 1
            if passes == target:
                (crash or (lambda: os._exit(faults.CRASH_EXIT_CODE)))()

    faults.point = point


def _open(args):
    from eventstore.opener import open_store

    store = open_store(args.root, args.driver, segment_size=args.segment_size)
    if args.checkpoint_interval:
        store.checkpoint_interval = args.checkpoint_interval
    return store


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


def child_main(argv: list[str] | None = None) -> int:
    """``python -m replay.workload run|open ...``: the process the harness crashes."""
    p = argparse.ArgumentParser(prog="python -m replay.workload")
    p.add_argument("action", choices=["run", "open"])
    p.add_argument("--root", required=True)
    p.add_argument("--driver", required=True)
    p.add_argument("--driver-module", action="append", default=[])
    p.add_argument("--script", help="the workload file (run)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ack", required=True)
    p.add_argument("--segment-size", type=int, default=64 * 1024 * 1024)
    p.add_argument("--checkpoint-interval", type=int, default=0)
    p.add_argument("--power-loss", choices=["drop", "random", "torn"],
                   help="lose power at the crash instead of just dying (replay.powerloss)")
    p.add_argument("--crash-at", help="NAME@N: crash at the N-th pass of failpoint NAME; @N: at the N-th "
                                      "failpoint passed, whatever its name")
    p.add_argument("--power-seed", type=int, default=0)
    p.add_argument("--stop-on-error", action="store_true",
                   help="an operation failing with anything but a refusal (an injected EIO...) ends the run, "
                        "exit 3, its outcome unknown (no ack)")
    args = p.parse_args(argv)

    load_driver_modules(args.driver, args.driver_module)
    # relative --tar files are relative to the working directory, as for the harness
    steps = parse(Path(args.script).read_text(), args.seed, Path.cwd()) if args.script else []
    crash = None
    if args.power_loss:
        from replay import powerloss

        crash = powerloss.arm(args.root, args.power_loss, args.power_seed).crash
    if args.crash_at:
        arm_crash(args.crash_at, crash)
    from eventstore.errors import LayerStoreError, StorageError

    acks = AckWriter(args.ack)
    acks.write(event="begin", step=OPEN_STEP)
    try:
        store = _open(args)
    except (OSError, StorageError) as exc:
        if not args.stop_on_error:
            raise
        acks.write(event="failed", step=OPEN_STEP, error=_error_name(exc), message=str(exc))
        return 3
    acks.write(event="ack", step=OPEN_STEP, lsn=store.log.last_lsn)

    for step in steps if args.action == "run" else []:
        acks.write(event="begin", step=step.index)
        result, error, message = None, None, None
        try:
            if step.op.kind == "reopen":
                store.close()
                store = _open(args)
            else:
                result = normalize(step.op.kind, run_on_store(store, step.op, step.data))
        except Exception as exc:
            if args.stop_on_error and (isinstance(exc, (OSError, StorageError)) or
                                       not isinstance(exc, LayerStoreError)):
                acks.write(event="failed", step=step.index, error=_error_name(exc), message=str(exc))
                return 3
            if not isinstance(exc, LayerStoreError):
                raise
            error, message = _error_name(exc), str(exc)
        acks.write(event="ack", step=step.index, result=result, error=error, message=message,
                   lsn=store.log.last_lsn)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
