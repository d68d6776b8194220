"""``layerstore``: the command line (DESIGN §8), in the style of containers-storage.

Every command is declared once, with ``@command``: its name and aliases, its arguments,
what it needs of the store, and its handler. What it needs decides how it is run:

- ``FAST``  read models alone when they are current (no log replay, no msgspec); the
            handler gets a ``Reader``, from the fast path or from an opened store alike;
- ``READ``  a read-only store (no lock, no recovery, nothing changed);
- ``WRITE`` a writer open: the log's lock, the read models caught up, recovery;
- ``NONE``  no store at all (the handler opens what it needs itself).

Exit codes: 0 success, 1 "no" (not found; ``exists`` says no), 2 usage, 3 refused by a
rule, 4 corruption, 5 storage error. Errors are one line on stderr. Commands import only
what they need: a CLI call must start fast. The commands beyond the seed's
(containers-storage's other layer commands, ``events``, ``completion``) are declared the
same way in ``COMMAND_MODULES``, loaded only when one of them (or help) is asked for.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

FAST, READ, WRITE, NONE = "fast", "read", "write", "none"


#: modules declaring more commands with ``@command``, imported only when needed
COMMAND_MODULES = ("eventstore.cli_layers",)


def default_root() -> str:
    """The store root when neither ``--root`` nor the config file names one."""
    from eventstore.config import settings

    return settings(None, None).root


# --- the command table ----------------------------------------------------------------------------

class Arg:
    """One ``add_argument`` call, kept until the command's parser is built. (Plain
    classes here, not dataclasses: importing ``dataclasses`` costs every CLI call ~8 ms,
    docs/benchmarks.md "Start-up".)"""

    __slots__ = ("flags", "options")

    def __init__(self, flags: tuple[str, ...], options: dict):
        self.flags = flags
        self.options = options


def arg(*flags: str, **options) -> Arg:
    """An argument of a command, as ``add_argument`` takes it (give it a ``help``)."""
    return Arg(flags, options)


class Command:
    """One command: its parser's arguments, its handler, what access it needs.
    ``prepare`` checks (and opens) the command's input before the store is opened:
    nothing is logged, not even by recovery, for a command whose arguments are wrong."""

    __slots__ = ("name", "help", "handler", "arguments", "aliases", "access", "prepare")

    def __init__(self, name: str, help: str, handler: Callable[..., int], arguments: tuple[Arg, ...] = (),
                 aliases: tuple[str, ...] = (), access: str = WRITE, prepare: Callable[..., None] | None = None):
        self.name = name
        self.help = help
        self.handler = handler
        self.arguments = arguments
        self.aliases = aliases
        self.access = access
        self.prepare = prepare


COMMANDS: dict[str, Command] = {}  # by name and by every alias


def command(name: str, help: str, *arguments: Arg, aliases: tuple[str, ...] = (), access: str = WRITE,
            prepare: Callable[..., None] | None = None):
    """Declare the decorated function as the handler of command ``name``."""
    def register(handler: Callable[..., int]) -> Callable[..., int]:
        declared = Command(name, help, handler, arguments, aliases, access, prepare)
        for word in (name, *aliases):
            COMMANDS[word] = declared
        return handler
    return register


REF = arg("ref", metavar="ID", help="a layer: its id, a name, or a unique prefix of its id")
REFS = arg("refs", metavar="ID", nargs="+", help="layers: ids, names, or unique prefixes of ids")
GLOBAL_WITH_VALUE = {"--root", "-g", "--graph", "--driver", "-s", "--storage-driver", "--run", "-R"}
JSON_HELP = "machine-readable output (also before the command)"


def load_commands(word: str | None) -> None:
    """Import the modules of ``COMMAND_MODULES`` unless ``word`` is a command declared
    here (None, for help or completion: every command)."""
    if word in COMMANDS:
        return
    for module in COMMAND_MODULES:
        __import__(module)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every error."""

    def error(self, message: str):
        self.exit(2, f"layerstore: {message} (see '{self.prog} --help')\n")

    def _get_formatter(self):
        # argparse asks shutil for the terminal's width at every add_argument; importing
        # shutil (with bz2 and lzma) costs every call ~3.5 ms. The same width, from os.
        return self.formatter_class(prog=self.prog, width=_help_width())


def _help_width() -> int:
    """The width argparse would wrap help to: $COLUMNS, else the terminal's, else 80;
    less two, as argparse takes it."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
    return columns - 2


def find_command(argv: list[str]) -> str | None:
    """The command word in ``argv`` (skipping global options and their values)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in GLOBAL_WITH_VALUE:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def jobs_argument(text: str) -> int:
    """A count of parallel jobs: a whole number of at least 1 (refused by the parser,
    before any store is opened)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def size_argument(text: str) -> int:
    from eventstore.sizes import size_argument

    return size_argument(text)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv`` naming a known command, with that command's parser
    only (argparse spends milliseconds building thirty of them at every call)."""
    from eventstore import __version__

    p = _Parser(prog="layerstore", description="A crash-safe, event-sourced layer store, in the style of "
                                               "containers-storage. 'layerstore COMMAND --help' for a command.")
    p.add_argument("--root", "-g", "--graph", default=None, metavar="DIR",
                   help="store root (default: $LAYERSTORE_ROOT, the config file, /var/lib/layerstore as root)")
    p.add_argument("--driver", "-s", "--storage-driver", default=None, metavar="NAME",
                   help="storage driver for a new store: overlay, fuse-overlayfs, btrfs or vfs (default: "
                        "$LAYERSTORE_DRIVER, the config file, overlay where it works, else fuse-overlayfs, else vfs)")
    p.add_argument("--json", "-j", action="store_true", help=JSON_HELP)
    p.add_argument("--history-retention", metavar="POLICY", default=None,
                   help="drop archived log history older than this: a time (90d, 12h) or an event count "
                        "(default: $LAYERSTORE_HISTORY_RETENTION, the config file, keep everything)")
    p.add_argument("--run", "-R", metavar="DIR", default=None,
                   help="ignored: accepted for containers-storage scripts (mount state lives in the log)")
    p.add_argument("--version", action="version", version=f"layerstore {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=False, metavar="COMMAND", parser_class=_Parser,
                           help="what to do ('layerstore COMMAND --help' for its options)")
    wanted = find_command(argv) if argv is not None else None
    declared = dict.fromkeys(COMMANDS.values())  # each once, in declaration order
    for cmd in declared:
        if wanted in COMMANDS and COMMANDS[wanted] is not cmd:
            continue
        parser = sub.add_parser(cmd.name, aliases=list(cmd.aliases), help=cmd.help, description=cmd.help)
        for a in cmd.arguments:
            parser.add_argument(*a.flags, **a.options)
        # --json after the command too, as containers-storage and podman take it
        parser.add_argument("--json", "-j", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    return p


# --- output ---------------------------------------------------------------------------------------

def iso_time(ns: int) -> str:
    """RFC 3339 with every nanosecond digit: a time copied into --since/--until/--at
    lands on the same side of each event as the event it was copied from."""
    from datetime import datetime, timezone

    return f"{datetime.fromtimestamp(ns // 10**9, tz=timezone.utc):%Y-%m-%dT%H:%M:%S}.{ns % 10**9:09d}Z"


def as_dict(rec) -> dict:
    """A layer record as a plain dict (a ``Reader`` has dicts already)."""
    if isinstance(rec, dict):
        return rec
    import msgspec

    return msgspec.to_builtins(rec)


def layer_json(rec, diff_size: int | None = None) -> dict:
    """A layer with containers/storage's field names, in its style: strings and lists
    are left out when empty, sizes when unknown; counts and flags are always there.
    ``diff_size``: a measured size that replaces the recorded one (writable layers)."""
    r = as_dict(rec)
    get = r.get
    size = get("diff_size", -1) if diff_size is None else diff_size
    fields = {
        "id": r["id"], "names": get("names", []), "parent": get("parent") or "",
        "created": iso_time(get("created", 0)),
        "compressed-diff-digest": get("compressed_digest", ""), "compressed-size": get("compressed_size", -1),
        "diff-digest": get("diff_digest", ""), "diff-size": size,
        "compression": get("compression", ""),
        "uidmap": [_id_mapping(m) for m in get("uid_map", [])], "gidmap": [_id_mapping(m) for m in get("gid_map", [])],
        "incomplete": get("incomplete", True), "writable": get("writable", False), "driver": get("driver", ""),
        "hold-refs": len(get("holds", [])), "mount-count": get("mount_count", 0),
        "mount-point": get("mount_point", ""), "quarantined": get("quarantined", ""),
        **({"snapshot": get("snapshot")} if get("snapshot") else {}),
        "big-data-names": sorted(get("data", {}) or {}),
    }
    return {k: v for k, v in fields.items() if not (v == "" or v == [] or (k.endswith("-size") and v < 0))}


def _id_mapping(m: dict) -> dict:
    return {"container-id": m.get("container_id", 0), "host-id": m.get("host_id", 0), "size": m.get("size", 0)}


def text_value(value) -> str:
    """A value as text output shows it: lists comma-separated, flags true/false, no Python repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(text_value(v) if not isinstance(v, dict) else ":".join(str(x) for x in v.values())
                         for v in value)
    if value is None:
        return "none"
    return str(value)


def emit_json(value) -> None:
    import json

    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def emit(args, value: dict, text: str) -> None:
    """``value`` as JSON with ``--json``, else ``text`` as a line."""
    emit_json(value) if args.json else print(text)


def print_fields(fields: dict) -> None:
    """A layer's fields as text, ``key: value`` lines, every value escaped (a name an
    older version logged unchecked stays one harmless line)."""
    from eventstore.names import shown

    for key, value in fields.items():
        if isinstance(value, dict):  # a containerd snapshot's facts
            import json

            text = json.dumps(value, ensure_ascii=False)
        else:
            text = text_value(value)
        print(f"{key}: {shown(text)}")


def flags(rec: dict) -> str:
    """`` [quarantined]`` or `` [incomplete]`` after a layer in a listing."""
    return " [quarantined]" if rec.get("quarantined") else " [incomplete]" if rec["incomplete"] else ""


def print_tree(layers: list[dict]) -> None:
    """Draw the parent/child forest (layers as from ``listing``), iteratively: chains
    can be deeper than Python's recursion limit."""
    from eventstore.names import shown

    ids = {r["id"] for r in layers}
    by_parent: dict[str | None, list] = {}
    for rec in layers:
        by_parent.setdefault(rec["parent"] if rec["parent"] in ids else None, []).append(rec)
    stack = [(rec, "", i == len(by_parent.get(None, [])) - 1) for i, rec in enumerate(by_parent.get(None, []))]
    stack.reverse()
    out = []
    while stack:
        rec, prefix, last = stack.pop()
        label = rec["id"][:12] + (f" ({shown(', '.join(rec['names']))})" if rec["names"] else "") + flags(rec)
        out.append(f"{prefix}{'└── ' if last else '├── '}{label}")
        children = by_parent.get(rec["id"], [])
        child_prefix = prefix + ("    " if last else "│   ")
        stack.extend(reversed([(c, child_prefix, i == len(children) - 1) for i, c in enumerate(children)]))
    if out:
        print("\n".join(out))


# --- running a command ----------------------------------------------------------------------------

def open_store(args, readonly: bool):
    from eventstore.opener import open_store as open_and_recover
    from eventstore.process import holder_for

    # A CLI call lives for milliseconds: its holds belong to the process that called it
    # (the shell or program driving the CLI), released by recovery when that one exits.
    # ``recover`` runs recovery itself, so that it can print what it did.
    return open_and_recover(args.root, args.driver, readonly=readonly, recover=args.command != "recover",
                            owner=holder_for(os.getppid()), driver_options=getattr(args, "driver_options", None),
                            history_retention=getattr(args, "history_retention", None) or "",
                            archive=getattr(args, "archive", True))


def run(args) -> int:
    """Run the command; once more when it met damaged read models and changed nothing
    (they were set aside and rebuilt from the log, or, for a read, built in memory)."""
    import sqlite3

    from eventstore.errors import ReadModelDamaged
    from eventstore.query import sqlite_problem

    cmd = COMMANDS[args.command]
    if cmd.name != "failpoints":
        from eventstore.access import check_access

        check_access(args.root, write=False)  # a user who may not read it: one line, not a traceback
    if cmd.prepare is not None:
        cmd.prepare(args)
    if cmd.access == NONE:
        return cmd.handler(args)
    state = {"appended": 0}
    try:
        return _run_once(cmd, args, state, rebuild=False)
    except (ReadModelDamaged, sqlite3.DatabaseError) as exc:
        if (isinstance(exc, sqlite3.DatabaseError) and sqlite_problem(exc) != "damaged") or state["appended"]:
            raise
    return _run_once(cmd, args, state, rebuild=True)


def _run_once(cmd: Command, args, state: dict, rebuild: bool) -> int:
    if cmd.access == FAST and not rebuild:
        from eventstore.query import open_reader

        if not os.path.isdir(os.path.join(args.root, "log")):  # no store (yet): nothing to find
            from eventstore.index import Index

            return cmd.handler(Index.in_memory(), args)
        reader = open_reader(args.root)
        if reader is not None:
            try:
                return cmd.handler(reader, args)
            finally:
                reader.conn.close()
    store = open_store(args, readonly=cmd.access != WRITE)
    try:
        if rebuild and store.index.readonly:
            store.rebuild_in_memory()  # the file's damage may lie where the open did not look
        if cmd.access == FAST:
            from eventstore.query import Reader

            return cmd.handler(Reader(store.index.conn), args)
        return cmd.handler(store, args)
    finally:
        state["appended"] = store.appended
        store.close()


# --- the commands ---------------------------------------------------------------------------------

def open_input(path: str | None):
    """The stream a command reads: stdin for ``-`` or no path, else the file (a file
    that cannot be read is a usage error naming it)."""
    if path in (None, "-"):
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        from eventstore.errors import InvalidArgument

        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None


def input_progress(stream, label: str):
    """A bar for reading ``stream`` (its size known when it is a file), on a terminal."""
    from eventstore.progress import on_terminal

    try:
        import stat as stat_module

        st = os.fstat(stream.fileno())
        total = st.st_size if stat_module.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        total = None
    return on_terminal(total, label)


def parse_maps(specs: list[str], what: str):
    from eventstore.idmap import parse

    return parse(specs, what)


CREATE_ARGS = (
    arg("--id", "-i", dest="layer_id", metavar="ID", help="the new layer's id (default: 64 random hex digits)"),
    arg("--name", "-n", action="append", default=[], metavar="NAME", help="a name for the layer (repeatable)"),
    arg("--uidmap", action="append", default=[], metavar="CONTAINER:HOST:SIZE",
        help="map the content's uids to host uids (repeatable; containers-storage syntax)"),
    arg("--gidmap", action="append", default=[], metavar="CONTAINER:HOST:SIZE",
        help="map the content's gids to host gids (repeatable)"),
    arg("--label", "-l", default="", metavar="LABEL", help="SELinux mount label of the layer's mounts"),
    arg("--compressed-digest", metavar="DIGEST", help="refuse content whose compressed digest differs"),
    arg("--diff-digest", metavar="DIGEST", help="refuse content whose uncompressed digest differs"),
    arg("--max-size", type=size_argument, default=None, metavar="SIZE",
        help="refuse content larger than this (uncompressed; 10k, 64M, 64G: powers of 1024)"),
)


def create_layer(store, args, parent: str | None, writable: bool, path: str | None) -> int:
    """Create a layer as ``create``/``create-layer``/``import-layer`` ask; print its id.
    The content was opened (and every argument checked) before the store, by
    ``_prepare_create``."""
    content = args.content if hasattr(args, "content") else open_input(path) if path is not None else None
    progress = input_progress(content, "importing") if content is not None else None
    try:
        layer_id = store.create(args.layer_id, parent=parent, names=args.name, writable=writable,
                                content=content, compressed_digest=args.compressed_digest,
                                diff_digest=args.diff_digest, max_size=args.max_size, progress=progress,
                                mount_label=args.label, uid_map=parse_maps(args.uidmap, "uidmap"),
                                gid_map=parse_maps(args.gidmap, "gidmap"))
    finally:
        if progress:
            progress.done()
        if content is not None and content is not sys.stdin.buffer:
            content.close()
    emit(args, {"id": layer_id}, layer_id)
    return 0


def prepare_create(args, path: str | None) -> None:
    # every argument checked, and the input opened, before the store is (docs/security.md)
    from eventstore.inputs import check_create, open_content

    check_create(args.layer_id, args.name, args.compressed_digest, args.diff_digest, args.max_size, args.label)
    parse_maps(args.uidmap, "uidmap")
    parse_maps(args.gidmap, "gidmap")
    args.content = open_content(path)


@command("create", "create a layer, optionally filled from a tar (plain, gzip, zstd, xz, bzip2)",
         *CREATE_ARGS,
         arg("--parent", metavar="ID", help="the layer to build on (default: a base layer)"),
         arg("--writable", action="store_true", help="a layer to write into (a container's), not an image layer"),
         arg("file", nargs="?", metavar="FILE", help="the tar to fill the layer from ('-': standard input)"),
         prepare=lambda args: prepare_create(args, args.file))
def cmd_create(store, args) -> int:
    return create_layer(store, args, args.parent, args.writable, args.file)


def writable_size(reader, root: str, rec) -> int | None:
    """The measured diff size of a writable layer whose diff the log has no size for
    (containers-storage's ``diffsize``), or None: not writable, recorded, or not
    measurable now (what the log recorded is shown then)."""
    r = as_dict(rec)
    if not r.get("writable") or r.get("incomplete") or r.get("applying") or r.get("diff_size", -1) >= 0:
        return None  # (a recorded size goes with the recorded diff digest)
    from eventstore.changeset import own_changes_size
    from eventstore.drivers import open_driver

    try:
        parent = as_dict(reader.layer(r["parent"])) if r.get("parent") else {}
        driver = open_driver(r["driver"], root, check=False)
        return own_changes_size(driver, r["id"], r.get("parent") or None, r.get("uid_map"), r.get("gid_map"),
                                parent.get("uid_map"), parent.get("gid_map"))
    except Exception:  # a layer whose data is gone or damaged: the recorded size
        return None


@command("layers", "list layers (one id a line, with names; --tree draws parents)",
         arg("--tree", "-t", action="store_true", help="draw the parent/child forest"), access=FAST)
def cmd_layers(reader, args) -> int:
    from eventstore.names import shown

    if args.json:
        emit_json([layer_json(r, writable_size(reader, args.root, r)) for r in reader.layers()])
        return 0
    layers = reader.listing()
    if args.tree:
        print_tree(layers)
    elif layers:
        print("\n".join(f"{r['id']}{'  ' + shown(', '.join(r['names'])) if r['names'] else ''}{flags(r)}"
                        for r in layers))
    return 0


@command("layer", "show layers (one: an object; several: a list)", REFS, access=FAST)
def cmd_layer(reader, args) -> int:
    records = [reader.lookup(ref) for ref in args.refs]
    shown = [layer_json(r, writable_size(reader, args.root, r)) for r in records]
    if args.json:
        emit_json(shown[0] if len(shown) == 1 else shown)
        return 0
    for i, fields in enumerate(shown):
        if i:
            print()
        print_fields(fields)
    return 0


@command("exists", "exit 0 if every layer exists, else 1 (--json: each one's answer)", REFS,
         arg("--quiet", "-q", action="store_true", help="print nothing (the default; for containers-storage scripts)"),
         arg("--layer", "-l", action="store_true", help="only layers count (the only kind layerstore has)"),
         access=FAST)
def cmd_exists(reader, args) -> int:
    found = {ref: reader.exists(ref) for ref in args.refs}
    if args.json:
        emit_json(found)
    return 0 if all(found.values()) else 1


@command("refs", "print the hold count", REF, access=FAST)
def cmd_refs(reader, args) -> int:
    refs = len(as_dict(reader.lookup(args.ref)).get("holds", []))
    emit(args, {"hold-refs": refs}, str(refs))
    return 0


@command("by-digest", "layers with a diff (or compressed) digest, one id a line",
         arg("digest", metavar="DIGEST", help="sha256:<64 hex digits>"),
         arg("--compressed", action="store_true", help="match the compressed digest instead"), access=FAST)
def cmd_by_digest(reader, args) -> int:
    ids = reader.by_digest(args.digest, compressed=args.compressed)
    if args.json:
        emit_json(ids)
    else:
        for layer_id in ids:
            print(layer_id)
    return 0


@command("fs-info", "usage of the layer's own data: bytes and inodes", REF, access=READ)
def cmd_fs_info(store, args) -> int:
    info = store.fs_info(args.ref)
    emit(args, {"used-bytes": info.used_bytes, "inodes-used": info.inodes_used, "mountpoint": info.mountpoint},
         f"used-bytes: {info.used_bytes}\ninodes-used: {info.inodes_used}\nmountpoint: {info.mountpoint}")
    return 0


@command("metadata", "the driver's view of the layer (overlay: LowerDir, UpperDir, WorkDir, MergedDir)", REF,
         access=READ)
def cmd_metadata(store, args) -> int:
    meta = store.metadata(args.ref)
    if args.json:
        emit_json(meta)
    else:
        for key, value in meta.items():
            print(f"{key}: {value}")
    return 0


@command("delete", "delete layers (refused while held, mounted or a parent); prints each id",
         REFS, arg("--force", "-f", action="store_true", help="unmount a mounted layer first"),
         aliases=("delete-layer",))
def cmd_delete(store, args) -> int:
    from eventstore.errors import LayerStoreError

    deleted, failed = [], 0
    for ref in args.refs:  # as containers-storage: each one that can be, the others reported
        try:
            rec = store.lookup(ref)
            store.delete(rec.id, force=args.force)
        except LayerStoreError as exc:
            print(f"layerstore: {exc}", file=sys.stderr)
            failed = failed or exc.exit_code
            continue
        deleted.append(rec.id)
        if not args.json:
            print(rec.id)
    if args.json:
        emit_json({"deleted": deleted})
    return failed


@command("hold", "take a hold (owned by the calling process, or a named lease); prints the hold count", REF,
         arg("--lease", metavar="NAME", help="a named lease, kept until released (else the caller's process)"))
def cmd_hold(store, args) -> int:
    refs = store.hold(args.ref, lease=args.lease)
    emit(args, {"hold-refs": refs}, str(refs))
    return 0


@command("release", "release a hold (the caller's, or a named lease); prints the hold count", REF,
         arg("--lease", metavar="NAME", help="release this lease's hold"))
def cmd_release(store, args) -> int:
    refs = store.release(args.ref, lease=args.lease)
    emit(args, {"hold-refs": refs}, str(refs))
    return 0


@command("mount", "mount a layer (a second mount only counts); prints the path", REF)
def cmd_mount(store, args) -> int:
    path = store.mount(args.ref)
    emit(args, {"mount-point": path}, path)
    return 0


@command("umount", "unmount a layer (count down; unmounted at zero); prints the remaining count", REF,
         arg("--force", "-f", action="store_true", help="unmount at once, whatever the count"), aliases=("unmount",))
def cmd_umount(store, args) -> int:
    count = store.umount(args.ref, force=args.force)
    emit(args, {"mount-count": count}, str(count))
    return 0


@command("diff", "write the layer's diff as a tar: against its parent (the original tar, byte for byte), "
                 "or against the layer REF", REF,
         arg("against", metavar="REF", nargs="?", help="compare with this layer instead of the parent"),
         arg("-o", "--output", "-f", "--file", dest="output", metavar="FILE", help="write to FILE, not stdout"),
         arg("--compress", choices=["none", "gzip", "zstd"], default=None, help="compression (default none)"),
         arg("--gzip", "-c", dest="compress", action="store_const", const="gzip", help="= --compress gzip"),
         arg("--uncompressed", "-u", dest="compress", action="store_const", const="none", help="= --compress none"),
         access=READ)
def cmd_diff(store, args) -> int:
    from eventstore.archive.compression import compressing

    rec = store.usable(args.ref)
    chunks = store.diff(rec.id, args.against)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    progress = None
    if args.output:
        from eventstore.progress import on_terminal

        progress = on_terminal(rec.diff_size if rec.diff_size > 0 and not args.against else None, "diff")
    written = 0
    try:
        with compressing(args.compress or "none", out) as sink:
            for chunk in chunks:
                sink.write(chunk)
                if progress:
                    written += len(chunk)
                    progress(written)
    finally:
        if progress:
            progress.done()
        if args.output:
            out.close()
    return 0


def history_line(e) -> dict:
    """One event as ``history --json`` and ``events --json`` print it (a JSON line)."""
    return {"lsn": e.lsn, "time": iso_time(e.time), "type": e.type, "layer": e.layer, "actor": e.actor,
            "details": kebab(e.details)}


def kebab(value):
    """``value`` with every dict key in containers-storage's style (``mount-point``)."""
    if isinstance(value, dict):
        return {str(k).replace("_", "-"): kebab(v) for k, v in value.items()}
    if isinstance(value, list):
        return [kebab(v) for v in value]
    return value


def check_event_types(types: list[str] | None) -> None:
    from eventstore.errors import InvalidArgument
    from eventstore.events import EVENT_TYPES

    for name in types or ():
        if name not in EVENT_TYPES:
            raise InvalidArgument(f"--type {name!r}: not an event type (one of {', '.join(sorted(EVENT_TYPES))})")


@command("history", "what happened to a layer (or the store), from the log; --json: one event a line",
         arg("ref", metavar="ID", nargs="?", help="a layer, deleted ones too (id, prefix, or a name it had)"),
         arg("--since", metavar="TIME", help="from this time: ISO 8601, epoch seconds, or a duration ago (10m, 2h)"),
         arg("--until", metavar="TIME", help="up to this time (same forms)"),
         arg("--type", action="append", dest="types", metavar="TYPE",
             help="only events of this type, e.g. hold-added (repeatable)"),
         access=READ)
def cmd_history(store, args) -> int:
    from replay.audit import history, parse_time, resolve_layer

    check_event_types(args.types)
    layer_id = resolve_layer(store, args.ref) if args.ref else None  # deleted layers too
    entries = history(store, layer_id, parse_time(args.since) if args.since else None,
                      parse_time(args.until) if args.until else None, args.types)
    import json

    from eventstore.names import shown

    for e in entries:
        if args.json:
            print(json.dumps(history_line(e)))
            continue
        who = shown(f"pid {e.actor['pid']} uid {e.actor['uid']} {e.actor['program']}".strip())
        extra = f"  {json.dumps(kebab(e.details))}" if e.details else ""
        print(f"{e.lsn:>8}  {iso_time(e.time)}  {e.type:<24} {(e.layer or '-')[:12]:<12}  {who}{extra}")
    return 0


@command("state", "the store as it was at an LSN or a time, deleted layers included",
         arg("--at", required=True, metavar="LSN|TIME", help="an LSN, or a time (ISO 8601, epoch seconds, 10m ago)"),
         access=READ)
def cmd_state(store, args) -> int:
    from replay.audit import deleted_layers, lsn_at_time, parse_time, state_at

    lsn = int(args.at) if args.at.isdigit() else lsn_at_time(store, parse_time(args.at))
    state = state_at(store, lsn)
    gone = deleted_layers(store, lsn, state)
    layers = [dict(layer_json(r), holds=[h.describe() for h in r.holds]) for r in state.layers.values()]
    if args.json:
        emit_json({"lsn": lsn, "layers": layers, "deleted": [layer_json(r) for r in gone]})
        return 0
    print(f"state at LSN {lsn}: {len(layers)} layer(s)")
    for rec in state.layers.values():
        flags = [f"holds {rec.hold_refs}" if rec.holds else "", f"mounted {rec.mount_count}" if rec.mount_count else "",
                 "incomplete" if rec.incomplete else ""]
        print(f"  {rec.id}  {', '.join(rec.names)}  {' '.join(f for f in flags if f)}".rstrip())
    for rec in gone:
        print(f"  {rec.id}  (deleted since)")
    return 0


@command("checkpoint", "write a checkpoint of the state now (also automatic); prints its path")
def cmd_checkpoint(store, args) -> int:
    path = store.checkpoint()
    emit(args, {"checkpoint": str(path)}, str(path))
    return 0


@command("check", "re-derive everything from the log and compare (exit 4 on damage)",
         arg("--content", action="store_true", help="also regenerate every layer's tar and check its digest"),
         access=READ)
def cmd_check(store, args) -> int:
    from replay.verify import check, notes

    problems = check(store, content=args.content)
    remarks = notes(store)
    if args.json:
        emit_json({"ok": not problems, "problems": problems, "notes": remarks})
    else:
        print("\n".join(problems) if problems else "ok")
        for remark in remarks:
            print(f"note: {remark}")
    return 4 if problems else 0


@command("log", "inspect or repair the log: verify it, dump every event as JSON, or repair damage",
         arg("action", choices=["verify", "dump", "repair"], help="verify, dump or repair"),
         arg("--dry-run", action="store_true", help="repair: say what would be done, change nothing"), access=NONE)
def cmd_log(args) -> int:
    from eventstore.log import EventLog
    from eventstore.salvage import repair_store

    if args.action == "repair":
        lines = repair_store(args.root, dry_run=args.dry_run)
        emit_json(lines) if args.json else print("\n".join(lines))
        return 0
    if not os.path.isdir(os.path.join(args.root, "log")):
        from eventstore.errors import NoStore

        raise NoStore(f"no layer store at {args.root}")
    seen = seen_lsn(args.root)
    with EventLog.open(args.root, writer=False, create=False, seen_lsn=seen) as log:
        if args.action == "verify":
            report = log.verify(seen)
            torn = report.torn_tail
            result = {"segments": report.segments, "records": report.records, "events": report.events,
                      "last-lsn": report.last_lsn, "lost": report.lost,
                      "torn-tail": f"{torn.segment}@{torn.offset}" if torn else None}
            emit(args, result, " ".join(f"{k}={'none' if v is None else v}" for k, v in result.items()))
            return 0
        import json

        from eventstore.events import to_builtins

        for lsn, event in log.events():
            print(json.dumps(kebab({"lsn": lsn, **to_builtins(event)})))
    return 0


def seen_lsn(root: str) -> int:
    """The highest LSN the read models or a checkpoint have seen (0 when unknown)."""
    import sqlite3

    from eventstore.provenance import expect
    from eventstore.query import NO_MARKS, Reader, connect

    try:
        conn = connect(os.path.join(root, "index.db"), readonly=True)
        try:
            return expect(root, Reader(conn).marks()).seen_lsn
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return expect(root, NO_MARKS).seen_lsn


@command("recover", "run recovery now (also sweeps orphans); prints what it did")
def cmd_recover(store, args) -> int:
    from eventstore.recovery import recover_store

    actions = recover_store(store, sweep=True)
    if args.json:
        emit_json(actions)
    else:
        print("\n".join(actions) if actions else "nothing to recover")
    return 0


@command("unquarantine", "lift a layer's quarantine once you have checked it (recorded in the log)", REF,
         arg("--reason", default="", help="why it is safe now (kept in the history)"))
def cmd_unquarantine(store, args) -> int:
    layer_id = store.unquarantine(args.ref, reason=args.reason)
    emit(args, {"unquarantined": layer_id}, layer_id)
    return 0


@command("lost+found", "list what recovery moved aside (data no event accounts for), or delete it",
         arg("--purge", metavar="NAME", action="append", default=[], help="delete this entry for good (repeatable)"),
         arg("--all", action="store_true", help="with --purge: every entry"), aliases=("lost-found",), access=NONE)
def cmd_lost_found(args) -> int:
    from pathlib import Path

    from eventstore import lostfound

    root = Path(args.root)
    if args.all and not args.purge:
        args.purge = [e.name for e in lostfound.entries(root)]
    if args.purge:
        if not (root / "log").is_dir():
            from eventstore.errors import NoStore

            raise NoStore(f"no layer store at {root}")
        store = open_store(args, readonly=False)
        try:
            for name in args.purge:
                store.purge_lost_found(name)
                print(f"deleted {name}") if not args.json else None
        finally:
            store.close()
        if args.json:
            emit_json({"purged": args.purge})
        return 0
    found = lostfound.entries(root)
    if args.json:
        emit_json([{"name": e.name, "path": str(e.path), "size": e.size} for e in found])
    else:
        for e in found:
            print(f"{e.name}  {e.size} bytes")
    return 0


@command("failpoints", "list the failpoints a crash test can arm (LAYERSTORE_FAILPOINTS)", access=NONE)
def cmd_failpoints(args) -> int:
    from eventstore import faults

    names = dict(sorted(faults.POINTS.items()))
    if args.json:
        emit_json(names)
    else:
        for name, doc in names.items():
            print(f"{name:<36} {doc}")
    return 0


def prepare_import_oci(args) -> None:
    """The reference, platform and name checked, and the layout found, before the store
    is opened (or made: a mistyped path must not leave a new empty store behind)."""
    from eventstore.names import check_name
    from eventstore.oci import parse_platform, parse_reference
    from eventstore.oci.layout import ImageNotFound

    path, tag = parse_reference(args.reference)
    if not path.is_dir():
        raise ImageNotFound(f"{path}: no such directory")
    if args.name is not None:
        check_name(args.name)
    args.image = (path, tag, parse_platform(args.platform) if args.platform else None)


@command("import-oci", "import an image's layers from an OCI layout; prints the top layer id",
         arg("reference", metavar="DIR[:TAG]", help="the OCI layout directory, and a tag in it"),
         arg("--name", help="a name for the top layer"),
         arg("--platform", metavar="OS/ARCH", help="the image to pick from an image index (default linux/amd64)"),
         arg("--jobs", type=jobs_argument, metavar="N", help="layers filled at once (overlay; default: one per CPU, at most 4)"),
         prepare=lambda args: prepare_import_oci(args))
def cmd_import_oci(store, args) -> int:
    import msgspec

    from eventstore.oci import import_oci
    from eventstore.oci.progress import ImageProgress

    path, tag, platform = args.image
    result = import_oci(store, path, tag, name=args.name, platform=platform, jobs=args.jobs,
                        progress=ImageProgress() if sys.stderr.isatty() else None)
    emit(args, kebab(dict(msgspec.to_builtins(result), id=result.top)), result.top)
    return 0


@command("export-oci", "write the chain ending at a layer as an OCI layout (tag default latest)",
         arg("ref", metavar="TOP_ID", help="the top layer of the image"),
         arg("reference", metavar="DIR[:TAG]", help="the OCI layout directory to write, and the tag"),
         arg("--compress", choices=["gzip", "none", "zstd"], default="gzip", help="layer compression (default gzip)"),
         arg("--platform", metavar="OS/ARCH", help="os and architecture in the config (default this machine's)"))
def cmd_export_oci(store, args) -> int:
    import msgspec

    from eventstore.oci import export_oci, parse_platform, parse_reference
    from eventstore.oci.exporter import terminal_progress

    path, tag = parse_reference(args.reference)
    platform = parse_platform(args.platform) if args.platform else None
    result = export_oci(store, args.ref, path, tag or "latest", compression=args.compress, platform=platform,
                        progress=terminal_progress if sys.stderr.isatty() else None)
    emit(args, kebab(msgspec.to_builtins(result)), result.manifest)
    return 0


@command("serve", "serve containerd's snapshots API on a unix socket (docs/containerd.md)",
         arg("--containerd", required=True, metavar="SOCKET", help="the socket containerd's proxy_plugins names"))
def cmd_serve(store, args) -> int:
    from eventstore.containerd.server import serve

    return serve(store, args.containerd)


def sqlite3_errors() -> type[Exception]:
    import sqlite3

    return sqlite3.Error


def main(argv: list[str] | None = None) -> int:
    """Run ``layerstore`` with ``argv`` (default: the command line); the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--version"]:  # (only help needs every command)
        load_commands(find_command(argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:  # bare ``layerstore`` (or only global options): the help
        parser.print_help()
        return 0
    for option in ("root", "driver"):
        if getattr(args, option) == "":
            parser.error(f"--{option} is empty")  # not "the default": an unset variable, most likely
    from eventstore.errors import LayerStoreError
    from eventstore.names import shown

    from eventstore.notices import collecting

    try:
        from eventstore.config import settings

        chosen = settings(args.root, args.driver, history_retention=args.history_retention)
        args.root, args.driver, args.driver_options = chosen.root, chosen.driver, chosen.driver_options
        args.history_retention, args.archive = chosen.history_retention, chosen.archive
        with collecting() as notices:
            code = run(args)
        if notices:  # one line: the first says what the others would
            print(f"layerstore: warning: {shown(notices[0])}", file=sys.stderr)
        return code
    except LayerStoreError as exc:
        # escaped: a message may quote caller input, and no escape may reach a terminal
        print(f"layerstore: {shown(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except sqlite3_errors() as exc:  # the read models' database: what SQLite says, in one line
        from eventstore.query import sqlite_problem

        problem = sqlite_problem(exc)
        what = {"full": "no space left on device", "readonly": "read-only file system",
                "damaged": "damaged"}.get(problem, str(exc))
        print(f"layerstore: the read models (index.db): {shown(what)}", file=sys.stderr)
        return 4 if problem == "damaged" else 5
    except OSError as exc:  # the disk or the kernel: a storage error, not a "no"
        where = f": {exc.filename}" if exc.filename else ""
        print(f"layerstore: {shown(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return 5


if __name__ == "__main__":
    # run as ``python -m eventstore.cli``: the commands of COMMAND_MODULES register in
    # the module they import, eventstore.cli, which must be this one, not a second copy
    sys.modules.setdefault("eventstore.cli", sys.modules[__name__])
    sys.exit(main())
