"""``layerstore``: the command line (DESIGN §8), in the style of containers-storage.

Exit codes: 0 success, 1 "no" (not found; ``exists`` says no), 2 usage, 3 refused by a
rule, 4 corruption. Errors are one line on stderr. Commands import only what they need:
a CLI call must start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

# answered from the read models alone when they are current (no log replay, no msgspec)
FAST_READS = {"layers", "layer", "exists", "refs", "by-digest"}
READ_ONLY = {"layers", "layer", "exists", "refs", "by-digest", "fs-info", "metadata", "history", "diff", "state",
             "check"}


def default_root() -> str:
    if os.environ.get("LAYERSTORE_ROOT"):
        return os.environ["LAYERSTORE_ROOT"]
    from eventstore.rootless import is_rootless

    if not is_rootless():  # root in a user namespace is still a user: its own data home
        return "/var/lib/layerstore"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "layerstore")


GLOBAL_WITH_VALUE = {"--root", "--driver"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every error."""

    def error(self, message: str):
        self.exit(2, f"layerstore: {message} (see '{self.prog} --help')\n")


def find_command(argv: list[str]) -> str | None:
    """The command word in ``argv`` (skipping global options and their values)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in GLOBAL_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


class _OnlyOne:
    """Stands in for the subparsers action: builds the parser of one command only
    (argparse spends milliseconds building thirty of them at every call)."""

    class _Ignored:
        def add_argument(self, *args, **kwargs) -> None:
            pass

    def __init__(self, sub, wanted: str):
        self.sub, self.wanted = sub, wanted

    def add_parser(self, name, **kwargs):
        if name == self.wanted or self.wanted in kwargs.get("aliases", ()):
            return self.sub.add_parser(name, **kwargs)
        return self._Ignored()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog="layerstore", description="A crash-safe, event-sourced layer store.")
    p.add_argument("--root", default=None, help="store root (default /var/lib/layerstore as root)")
    p.add_argument("--driver", default=None, help="storage driver: overlay, fuse-overlayfs, btrfs or vfs "
                                                  "(default: overlay where it works, else fuse-overlayfs, else vfs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    wanted = find_command(argv) if argv is not None else None
    if wanted is not None and wanted in KNOWN_COMMANDS:
        sub = _OnlyOne(sub, wanted)

    c = sub.add_parser("create", help="create a layer, optionally from a tar (FILE or - for stdin)")
    c.add_argument("--id", dest="layer_id")
    c.add_argument("--parent")
    c.add_argument("--name", action="append", default=[])
    c.add_argument("--writable", action="store_true")
    c.add_argument("--compressed-digest")
    c.add_argument("--diff-digest")
    c.add_argument("--max-size", type=int, default=None, help="refuse content larger than this (uncompressed bytes)")
    c.add_argument("file", nargs="?")

    t = sub.add_parser("layers", help="list layers")
    t.add_argument("--tree", action="store_true")
    for name, text in [("layer", "show one layer"), ("exists", "exit 0 if the layer exists, else 1"),
                       ("refs", "print the hold count"), ("fs-info", "usage of the layer's own data"),
                       ("metadata", "the driver's view of the layer")]:
        sub.add_parser(name, help=text).add_argument("ref", metavar="ID")
    d = sub.add_parser("delete", help="delete a layer")
    d.add_argument("ref", metavar="ID")
    d.add_argument("--force", action="store_true", help="unmount first if mounted")
    for name in ("hold", "release"):
        h = sub.add_parser(name, help=f"{name} a hold (owned by the calling process, or a named lease)")
        h.add_argument("ref", metavar="ID")
        h.add_argument("--lease")
    m = sub.add_parser("mount", help="mount a layer; prints the path")
    m.add_argument("ref", metavar="ID")
    u = sub.add_parser("umount", aliases=["unmount"], help="unmount a layer")
    u.add_argument("ref", metavar="ID")
    u.add_argument("--force", action="store_true")
    b = sub.add_parser("by-digest", help="layers with a diff (or compressed) digest")
    b.add_argument("digest")
    b.add_argument("--compressed", action="store_true")
    x = sub.add_parser("diff", help="write the layer's diff as a tar")
    x.add_argument("ref", metavar="ID")
    x.add_argument("-o", "--output")
    x.add_argument("--compress", choices=["none", "gzip", "zstd"], default="none")
    hi = sub.add_parser("history", help="what happened to a layer (or the store), from the log")
    hi.add_argument("ref", metavar="ID", nargs="?")
    hi.add_argument("--since", help="ISO 8601 time or epoch seconds")
    hi.add_argument("--until", help="ISO 8601 time or epoch seconds")
    hi.add_argument("--type", action="append", dest="types", help="event type, e.g. hold-added (repeatable)")
    st = sub.add_parser("state", help="the store as it was at an LSN or a time")
    st.add_argument("--at", required=True, metavar="LSN|TIME")
    sub.add_parser("checkpoint", help="write a checkpoint of the state now")
    ck = sub.add_parser("check", help="re-derive everything from the log and compare (exit 4 on damage)")
    ck.add_argument("--content", action="store_true", help="also regenerate every layer's tar and check its digest")
    lg = sub.add_parser("log", help="inspect or repair the log")
    lg.add_argument("action", choices=["verify", "dump", "repair"])
    sub.add_parser("recover", help="run recovery now (also sweeps orphans); prints what it did")
    sub.add_parser("failpoints", help="list the failpoints")
    io = sub.add_parser("import-oci", help="import an image's layers from an OCI layout; prints the top layer id")
    io.add_argument("reference", metavar="DIR[:TAG]")
    io.add_argument("--name", help="a name for the top layer")
    io.add_argument("--platform", metavar="OS/ARCH", help="the image to pick from an image index (default linux/amd64)")
    eo = sub.add_parser("export-oci", help="write the chain ending at a layer as an OCI layout (tag default latest)")
    eo.add_argument("ref", metavar="TOP_ID")
    eo.add_argument("reference", metavar="DIR[:TAG]")
    eo.add_argument("--compress", choices=["gzip", "none", "zstd"], default="gzip")
    eo.add_argument("--platform", metavar="OS/ARCH", help="os and architecture in the config (default this machine's)")
    return p


# --- output -----------------------------------------------------------------------------------

def iso_time(ns: int) -> str:
    # every digit (RFC 3339 with nanoseconds): a time copied into --since/--until/--at
    # must land on the same side of each event as the event it was copied from
    return f"{datetime.fromtimestamp(ns // 10**9, tz=timezone.utc):%Y-%m-%dT%H:%M:%S}.{ns % 10**9:09d}Z"


def as_dict(rec) -> dict:
    """A layer record as a plain dict (the fast read path has dicts already)."""
    if isinstance(rec, dict):
        return rec
    import msgspec

    return msgspec.to_builtins(rec)


def layer_json(rec) -> dict:
    """A layer with containers/storage's field names."""
    r = as_dict(rec)
    get = r.get
    return {
        "id": r["id"], "names": get("names", []), "parent": get("parent") or "",
        "created": iso_time(get("created", 0)),
        "compressed-diff-digest": get("compressed_digest", ""), "compressed-size": get("compressed_size", -1),
        "diff-digest": get("diff_digest", ""), "diff-size": get("diff_size", -1),
        "compression": get("compression", ""), "incomplete": get("incomplete", True),
        "writable": get("writable", False), "driver": get("driver", ""),
        "hold-refs": len(get("holds", [])), "mount-count": get("mount_count", 0),
        "mount-point": get("mount_point", ""), "quarantined": get("quarantined", ""),
    }


def emit_json(value) -> None:
    import json

    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_layer(rec) -> None:
    for key, value in layer_json(rec).items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key}: {value}")


def print_tree(layers: list[dict]) -> None:
    """Draw the parent/child forest (layers as from ``listing``), iteratively: chains
    can be deeper than Python's recursion limit."""
    ids = {r["id"] for r in layers}
    by_parent: dict[str | None, list] = {}
    for rec in layers:
        by_parent.setdefault(rec["parent"] if rec["parent"] in ids else None, []).append(rec)
    stack = [(rec, "", i == len(by_parent.get(None, [])) - 1) for i, rec in enumerate(by_parent.get(None, []))]
    stack.reverse()
    out = []
    while stack:
        rec, prefix, last = stack.pop()
        label = rec["id"][:12] + (f" ({', '.join(rec['names'])})" if rec["names"] else "")
        if rec["incomplete"]:
            label += " [incomplete]"
        out.append(f"{prefix}{'└── ' if last else '├── '}{label}")
        children = by_parent.get(rec["id"], [])
        child_prefix = prefix + ("    " if last else "│   ")
        stack.extend(reversed([(c, child_prefix, i == len(children) - 1) for i, c in enumerate(children)]))
    if out:
        print("\n".join(out))


# --- commands -----------------------------------------------------------------------------------

def open_store(args, readonly: bool):
    from eventstore.process import holder_for
    from eventstore.store import LayerStore

    # A CLI call lives for milliseconds: its holds belong to the process that called it
    # (the shell or program driving the CLI), released by recovery when that one exits.
    # ``recover`` runs recovery itself, so that it can print what it did.
    return LayerStore.open(args.root, args.driver, readonly=readonly, recover=args.command != "recover",
                           owner=holder_for(os.getppid()))


def run(args) -> int:
    cmd = args.command
    if cmd == "failpoints":
        return cmd_failpoints(args)
    if cmd == "log":
        return cmd_log(args)
    if cmd == "exists" and not os.path.isdir(os.path.join(args.root, "log")):
        return 1
    if cmd in FAST_READS:
        from eventstore.query import open_reader

        reader = open_reader(args.root)
        if reader is not None:
            try:
                return COMMANDS[cmd](reader, args)
            finally:
                reader.conn.close()
    store = open_store(args, readonly=cmd in READ_ONLY)
    try:
        return COMMANDS[cmd](store, args)
    finally:
        store.close()


def cmd_create(store, args) -> int:
    content = None
    if args.file == "-":
        content = sys.stdin.buffer
    elif args.file:
        content = open(args.file, "rb")
    progress = None
    if content is not None and sys.stderr.isatty():
        from eventstore.progress import Progress

        progress = Progress(total=os.fstat(content.fileno()).st_size if args.file != "-" else None)
    try:
        layer_id = store.create(args.layer_id, parent=args.parent, names=args.name, writable=args.writable,
                                content=content, compressed_digest=args.compressed_digest,
                                diff_digest=args.diff_digest, max_size=args.max_size, progress=progress)
    finally:
        if progress:
            progress.done()
        if content is not None and args.file != "-":
            content.close()
    emit_json({"id": layer_id}) if args.json else print(layer_id)
    return 0


def cmd_layers(store, args) -> int:
    if args.json:
        emit_json([layer_json(r) for r in store.layers()])
        return 0
    layers = store.listing()
    if args.tree:
        print_tree(layers)
    elif layers:
        print("\n".join(f"{r['id']}{'  ' + ', '.join(r['names']) if r['names'] else ''}"
                        f"{' [incomplete]' if r['incomplete'] else ''}" for r in layers))
    return 0


def cmd_layer(store, args) -> int:
    rec = store.lookup(args.ref)
    emit_json(layer_json(rec)) if args.json else print_layer(rec)
    return 0


def cmd_exists(store, args) -> int:
    found = store.exists(args.ref)
    if args.json:
        emit_json({"exists": found})
    return 0 if found else 1


def cmd_refs(store, args) -> int:
    refs = layer_json(store.lookup(args.ref))["hold-refs"]
    emit_json({"hold-refs": refs}) if args.json else print(refs)
    return 0


def cmd_delete(store, args) -> int:
    rec = store.lookup(args.ref)
    store.delete(rec.id, force=args.force)
    emit_json({"deleted": rec.id}) if args.json else print(rec.id)
    return 0


def cmd_hold(store, args) -> int:
    refs = store.hold(args.ref, lease=args.lease)
    emit_json({"hold-refs": refs}) if args.json else print(refs)
    return 0


def cmd_release(store, args) -> int:
    refs = store.release(args.ref, lease=args.lease)
    emit_json({"hold-refs": refs}) if args.json else print(refs)
    return 0


def cmd_mount(store, args) -> int:
    path = store.mount(args.ref)
    emit_json({"mount-point": path}) if args.json else print(path)
    return 0


def cmd_umount(store, args) -> int:
    count = store.umount(args.ref, force=args.force)
    emit_json({"mount-count": count}) if args.json else print(count)
    return 0


def cmd_by_digest(store, args) -> int:
    ids = store.by_digest(args.digest, compressed=args.compressed)
    if args.json:
        emit_json(ids)
    else:
        for layer_id in ids:
            print(layer_id)
    return 0


def cmd_fs_info(store, args) -> int:
    info = store.fs_info(args.ref)
    if args.json:
        emit_json({"used-bytes": info.used_bytes, "inodes-used": info.inodes_used, "mountpoint": info.mountpoint})
    else:
        print(f"used-bytes: {info.used_bytes}\ninodes-used: {info.inodes_used}\nmountpoint: {info.mountpoint}")
    return 0


def cmd_metadata(store, args) -> int:
    meta = store.metadata(args.ref)
    if args.json:
        emit_json(meta)
    else:
        for key, value in meta.items():
            print(f"{key}: {value}")
    return 0


def cmd_diff(store, args) -> int:
    chunks = store.diff(args.ref)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        writer = _compressor(args.compress, out)
        for chunk in chunks:
            writer.write(chunk)
        writer.flush_all()
    finally:
        if args.output:
            out.close()
    return 0


class _Plain:
    def __init__(self, out):
        self.out = out

    def write(self, data):
        self.out.write(data)

    def flush_all(self):
        self.out.flush()


def _compressor(kind: str, out):
    if kind == "gzip":
        from isal import igzip

        class _Gzip(_Plain):
            def __init__(self, out):
                super().__init__(igzip.IGzipFile(fileobj=out, mode="wb", mtime=0))

            def flush_all(self):
                self.out.close()
        return _Gzip(out)
    if kind == "zstd":
        import zstandard

        class _Zstd(_Plain):
            def __init__(self, out):
                super().__init__(zstandard.ZstdCompressor().stream_writer(out, closefd=False))

            def flush_all(self):
                self.out.close()
        return _Zstd(out)
    return _Plain(out)


def cmd_history(store, args) -> int:
    from replay.audit import history, parse_time, resolve_layer

    layer_id = resolve_layer(store, args.ref) if args.ref else None  # deleted layers too
    entries = list(history(store, layer_id, parse_time(args.since) if args.since else None,
                           parse_time(args.until) if args.until else None, args.types))
    if args.json:
        emit_json([{"lsn": e.lsn, "time": iso_time(e.time), "type": e.type, "layer": e.layer,
                    "actor": e.actor, "details": e.details} for e in entries])
        return 0
    import json

    for e in entries:
        who = f"pid {e.actor['pid']} uid {e.actor['uid']} {e.actor['program']}".strip()
        extra = f"  {json.dumps(e.details)}" if e.details else ""
        print(f"{e.lsn:>8}  {iso_time(e.time)}  {e.type:<24} {(e.layer or '-')[:12]:<12}  {who}{extra}")
    return 0


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


def cmd_checkpoint(store, args) -> int:
    path = store.checkpoint()
    emit_json({"checkpoint": str(path)}) if args.json else print(path)
    return 0


def cmd_check(store, args) -> int:
    from replay.verify import check

    problems = check(store, content=args.content)
    if args.json:
        emit_json({"ok": not problems, "problems": problems})
    else:
        print("\n".join(problems) if problems else "ok")
    return 4 if problems else 0


def cmd_recover(store, args) -> int:
    from eventstore.recovery import recover_store

    actions = recover_store(store, sweep=True)
    if args.json:
        emit_json(actions)
    else:
        print("\n".join(actions) if actions else "nothing to recover")
    return 0


def cmd_log(args) -> int:
    from eventstore.log import EventLog

    if args.action == "repair":
        from eventstore.log.repair import repair

        for line in repair(args.root):
            print(line)
        return 0
    with EventLog.open(args.root, writer=False, create=False) as log:
        if args.action == "verify":
            report = log.verify()
            result = {"segments": report.segments, "records": report.records, "events": report.events,
                      "last-lsn": report.last_lsn,
                      "torn-tail": f"{report.torn_tail.segment}@{report.torn_tail.offset}" if report.torn_tail else None}
            if args.json:
                emit_json(result)
            else:
                print(" ".join(f"{k}={v}" for k, v in result.items()))
            return 0
        import json

        from eventstore.events import to_builtins

        for lsn, event in log.events():
            print(json.dumps({"lsn": lsn, **to_builtins(event)}))
    return 0


def cmd_failpoints(args) -> int:
    # importing the modules declares their failpoints
    import eventstore.checkpoint  # noqa: F401
    import eventstore.drivers.btrfs  # noqa: F401
    import eventstore.drivers.fuse_overlay  # noqa: F401
    import eventstore.drivers.overlay  # noqa: F401
    import eventstore.drivers.vfs  # noqa: F401
    import eventstore.index  # noqa: F401
    import eventstore.recovery  # noqa: F401
    import eventstore.store  # noqa: F401
    from eventstore import faults

    names = dict(sorted(faults.KNOWN.items()))
    if args.json:
        emit_json(names)
    else:
        for name, doc in names.items():
            print(f"{name:<36} {doc}")
    return 0


def cmd_import_oci(store, args) -> int:
    import msgspec

    from eventstore.oci import import_oci, parse_platform, parse_reference
    from eventstore.oci.importer import terminal_progress

    path, tag = parse_reference(args.reference)
    platform = parse_platform(args.platform) if args.platform else None
    result = import_oci(store, path, tag, name=args.name, platform=platform,
                        progress=terminal_progress if sys.stderr.isatty() else None)
    emit_json(dict(msgspec.to_builtins(result), id=result.top)) if args.json else print(result.top)
    return 0


def cmd_export_oci(store, args) -> int:
    import msgspec

    from eventstore.oci import export_oci, parse_platform, parse_reference

    path, tag = parse_reference(args.reference)
    platform = parse_platform(args.platform) if args.platform else None
    result = export_oci(store, args.ref, path, tag or "latest", compression=args.compress, platform=platform)
    emit_json(msgspec.to_builtins(result)) if args.json else print(result.manifest)
    return 0


KNOWN_COMMANDS = {
    "create", "layers", "layer", "exists", "refs", "fs-info", "metadata", "delete", "hold", "release",
    "mount", "umount", "unmount", "by-digest", "diff", "history", "state", "checkpoint", "check", "log",
    "recover", "failpoints", "import-oci", "export-oci",
}

COMMANDS = {
    "create": cmd_create, "layers": cmd_layers, "layer": cmd_layer, "exists": cmd_exists,
    "refs": cmd_refs, "delete": cmd_delete, "hold": cmd_hold, "release": cmd_release,
    "mount": cmd_mount, "umount": cmd_umount, "unmount": cmd_umount, "by-digest": cmd_by_digest,
    "fs-info": cmd_fs_info, "metadata": cmd_metadata, "diff": cmd_diff, "history": cmd_history,
    "recover": cmd_recover, "state": cmd_state, "checkpoint": cmd_checkpoint, "check": cmd_check,
    "import-oci": cmd_import_oci, "export-oci": cmd_export_oci,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    args.root = args.root or default_root()
    from eventstore.errors import LayerStoreError

    try:
        return run(args)
    except LayerStoreError as exc:
        print(f"layerstore: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"layerstore: {exc.strerror or exc}{': ' + exc.filename if exc.filename else ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
