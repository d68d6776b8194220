"""The rest of containers-storage's layer commands, and ``events`` and ``completion``,
declared like every command (``eventstore.cli.command``). ``eventstore.cli`` imports this
module only when one of these commands (or the whole help) is asked for, so that the
common commands never pay for it. docs/cli.md maps each containers-storage command to
its layerstore equivalent.
"""

from __future__ import annotations

import os
import sys

from eventstore.cli import (CREATE_ARGS, FAST, NONE, READ, REF, REFS, arg, as_dict, command, create_layer, emit,
                            emit_json, history_line, iso_time, open_input, prepare_create)

NAMES = arg("--name", "-n", dest="names", action="append", default=[], required=True, metavar="NAME",
            help="a name (repeatable)")


# --- creating, as containers-storage does ------------------------------------------------------

@command("create-layer", "create an empty layer, writable unless --readonly (containers-storage's create-layer)",
         *CREATE_ARGS,
         arg("parent", nargs="?", metavar="PARENT", help="the layer to build on (default: a base layer)"),
         arg("--readonly", "-r", action="store_true", help="an image layer, not a writable one"),
         prepare=lambda args: prepare_create(args, None))
def cmd_create_layer(store, args) -> int:
    return create_layer(store, args, args.parent, not args.readonly, None)


@command("import-layer", "create a layer from a tar on stdin or --file (containers-storage's import-layer)",
         *CREATE_ARGS,
         arg("parent", nargs="?", metavar="PARENT", help="the layer to build on (default: a base layer)"),
         arg("--file", "-f", metavar="FILE", help="read the tar from FILE, not stdin"),
         arg("--readonly", "-r", action="store_true", help="(the default: an imported layer is read-only)"),
         arg("--writable", action="store_true", help="a writable layer, with the tar as its first content"),
         prepare=lambda args: prepare_create(args, args.file or "-"))
def cmd_import_layer(store, args) -> int:
    return create_layer(store, args, args.parent, args.writable, args.file or "-")


# --- what changed ------------------------------------------------------------------------------

def change_json(change) -> dict:
    from eventstore.changeset import KIND_NUMBERS

    return {"path": change.path, "kind": change.kind, "kind-number": KIND_NUMBERS[change.kind]}


@command("changes", "what a layer changed against its parent (or REF): Add, Modify, Delete lines", REF,
         arg("against", metavar="REF", nargs="?", help="compare with this layer instead of the parent"),
         arg("--letters", action="store_true", help="one letter a line, as 'podman diff': A, C, D"),
         access=READ)
def cmd_changes(store, args) -> int:
    from eventstore.changeset import KIND_WORDS, go_quote

    changes = store.changes(args.ref, args.against)
    if args.json:
        emit_json([change_json(c) for c in changes])
    elif args.letters:
        letters = {"add": "A", "modify": "C", "delete": "D"}
        for change in changes:
            print(f"{letters[change.kind]} {change.path}")
    else:
        for change in changes:
            print(f"{KIND_WORDS[change.kind]} {go_quote(change.path)}")
    return 0


@command("diffsize", "bytes a layer added or modified against its parent (or REF)", REF,
         arg("against", metavar="REF", nargs="?", help="compare with this layer instead of the parent"),
         aliases=("diff-size",), access=READ)
def cmd_diffsize(store, args) -> int:
    size = store.diff_size(args.ref, args.against)
    emit(args, {"diff-size": size}, str(size))
    return 0


@command("applydiff", "apply a tar diff to a writable layer (crash-safe: old content or new, never a mix)", REF,
         arg("file", nargs="?", metavar="FILE", help="the tar ('-' or none: standard input)"),
         arg("--file", "-f", dest="file_option", metavar="FILE", help="the tar (containers-storage's spelling)"),
         arg("--max-size", type=int, default=None, metavar="BYTES", help="refuse content larger than this"),
         aliases=("apply-diff",))
def cmd_applydiff(store, args) -> int:
    from eventstore.cli import input_progress

    content = open_input(args.file_option or args.file)
    progress = input_progress(content, "applying")
    try:
        rec = store.apply_diff(args.ref, content, max_size=args.max_size, progress=progress)
    finally:
        if progress:
            progress.done()
        if content is not sys.stdin.buffer:
            content.close()
    if args.json:
        from eventstore.cli import layer_json

        emit_json(layer_json(rec))
    return 0


# --- names -------------------------------------------------------------------------------------

@command("names", "a layer's names, one a line", REF, aliases=("get-names",), access=FAST)
def cmd_names(reader, args) -> int:
    names = as_dict(reader.lookup(args.ref)).get("names", [])
    if args.json:
        emit_json(names)
    elif names:
        print("\n".join(names))
    return 0


def _names_result(args, layer_id: str, names: list[str]) -> int:
    if args.json:
        emit_json({"id": layer_id, "names": names})
    return 0


@command("add-names", "give a layer more names (a name belongs to one layer)", REF, NAMES)
def cmd_add_names(store, args) -> int:
    return _names_result(args, store.lookup(args.ref).id, store.add_names(args.ref, args.names))


@command("set-names", "set a layer's names (replacing all it had)", REF, NAMES)
def cmd_set_names(store, args) -> int:
    layer_id = store.lookup(args.ref).id
    store.set_names(layer_id, args.names)
    return _names_result(args, layer_id, store.lookup(layer_id).names)


@command("remove-names", "take names from a layer", REF, NAMES)
def cmd_remove_names(store, args) -> int:
    return _names_result(args, store.lookup(args.ref).id, store.remove_names(args.ref, args.names))


# --- layer data ----------------------------------------------------------------------------------

KEY = arg("key", metavar="KEY", help="the data item's name")


@command("set-layer-data", "keep a small blob with a layer under KEY (from FILE, --file or stdin)", REF, KEY,
         arg("file", nargs="?", metavar="FILE", help="the data ('-' or none: standard input)"),
         arg("--file", "-f", dest="file_option", metavar="FILE", help="the data (containers-storage's spelling)"))
def cmd_set_layer_data(store, args) -> int:
    source = open_input(args.file_option or args.file)
    try:
        from eventstore.layerdata import MAX_ITEM_SIZE

        data = source.read(MAX_ITEM_SIZE + 1)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    digest = store.set_layer_data(args.ref, args.key, data)
    if args.json:
        emit_json({"key": args.key, "digest": digest, "size": len(data)})
    return 0


@command("layer-data", "write a layer's data item KEY to stdout (or --file)", REF, KEY,
         arg("--file", "-f", metavar="FILE", help="write to FILE, not stdout"),
         aliases=("get-layer-data",), access=READ)
def cmd_layer_data(store, args) -> int:
    data = store.layer_data(args.ref, args.key)
    if args.file:
        from eventstore.fsutil import write_atomic

        write_atomic(args.file, data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


@command("list-layer-data", "the keys of a layer's data items, one a line", REF, access=READ)
def cmd_list_layer_data(store, args) -> int:
    items = store.list_layer_data(args.ref)
    if args.json:
        emit_json(items)
    elif items:
        print("\n".join(items))
    return 0


@command("remove-layer-data", "remove a layer's data item KEY", REF, KEY, aliases=("delete-layer-data",))
def cmd_remove_layer_data(store, args) -> int:
    store.remove_layer_data(args.ref, args.key)
    return 0


# --- mounts, the store ---------------------------------------------------------------------------

@command("mounted", "print 'ID mounted' for each layer that is mounted", REFS, access=FAST)
def cmd_mounted(reader, args) -> int:
    found = [(ref, as_dict(reader.lookup(ref)).get("mount_count", 0)) for ref in args.refs]
    if args.json:
        emit_json([{"id": ref, "mount-count": count} for ref, count in found])
        return 0
    for ref, count in found:
        if count:
            print(f"{ref} mounted")
    return 0


@command("status", "the driver (backing filesystem, d_type), layers, log size, last checkpoint", access=READ)
def cmd_status(store, args) -> int:
    facts = store.status()
    if args.json:
        emit_json({key.lower().replace(" ", "-").replace("_", "-"): value for key, value in facts})
    else:
        for key, value in facts:
            print(f"{key}: {value}")
    return 0


@command("version", "layerstore's version, and the formats it reads and writes", access=NONE)
def cmd_version(args) -> int:
    import platform

    from eventstore import __version__
    from eventstore.events import SCHEMA_VERSION
    from eventstore.log.format import FORMAT_VERSION

    facts = [("Version", __version__), ("Log Format", str(FORMAT_VERSION)), ("Event Schema", str(SCHEMA_VERSION)),
             ("Python", platform.python_version()), ("Kernel", platform.release())]
    if args.json:
        emit_json({key.lower().replace(" ", "-").replace("_", "-"): value for key, value in facts})
    else:
        for key, value in facts:
            print(f"{key}: {value}")
    return 0


@command("layer-parent-owners", "host uids and gids owning the directories above a layer that its id "
                                "mapping cannot map (what a user namespace would show as nobody)", REFS, access=READ)
def cmd_layer_parent_owners(store, args) -> int:
    from eventstore.idmap import to_container, OVERFLOW_ID

    shown = []
    for ref in args.refs:
        rec = store.lookup(ref)
        uids, gids = set(), set()
        path = store.driver.diff_path(rec.id).parent
        while True:
            st = os.stat(path)
            if rec.uid_map and to_container(rec.uid_map, st.st_uid) == OVERFLOW_ID:
                uids.add(st.st_uid)
            if rec.gid_map and to_container(rec.gid_map, st.st_gid) == OVERFLOW_ID:
                gids.add(st.st_gid)
            if path.parent == path:
                break
            path = path.parent
        shown.append({"id": rec.id, "uids": sorted(uids), "gids": sorted(gids)})
    if args.json:
        emit_json(shown[0] if len(shown) == 1 else shown)
        return 0
    for entry in shown:
        print(f"ID: {entry['id']}")
        if entry["uids"]:
            print(f"UIDs: [{', '.join(map(str, entry['uids']))}]")
        if entry["gids"]:
            print(f"GIDs: [{', '.join(map(str, entry['gids']))}]")
    return 0


@command("wipe", "delete every layer, children first (refused while any is held or mounted, "
                 "unless --force unmounts)", arg("--force", "-f", action="store_true", help="unmount mounted layers"))
def cmd_wipe(store, args) -> int:
    listing = store.listing()
    children: dict[str, int] = {}
    for row in listing:
        if row["parent"]:
            children[row["parent"]] = children.get(row["parent"], 0) + 1
    order, pending = [], [r["id"] for r in listing if r["id"] not in children]
    parent_of = {r["id"]: r["parent"] for r in listing}
    while pending:  # leaves first, then whoever they leave childless
        layer_id = pending.pop()
        order.append(layer_id)
        parent = parent_of.get(layer_id)
        if parent and parent in children:
            children[parent] -= 1
            if children[parent] == 0:
                pending.append(parent)
    for layer_id in order:
        store.delete(layer_id, force=args.force)
        if not args.json:
            print(layer_id)
    if args.json:
        emit_json({"deleted": order})
    return 0


@command("shutdown", "unmount every mounted layer (refused while any is mounted, unless --force)",
         arg("--force", "-f", action="store_true", help="unmount them, whatever their counts"))
def cmd_shutdown(store, args) -> int:
    from eventstore.errors import LayerInUse

    mounted = [rec for rec in store.layers() if rec.mount_count]
    if mounted and not args.force:
        raise LayerInUse(f"{len(mounted)} layer(s) mounted, e.g. {mounted[0].id}; use --force to unmount them")
    for rec in mounted:
        store.umount(rec.id, force=True)
    if args.json:
        emit_json({"unmounted": [rec.id for rec in mounted]})
    return 0


@command("copy", "copy files into a writable layer, from the host or another layer (as containers-storage's "
                 "copy; owners shifted by the layer's id mapping)",
         arg("sources", nargs="+", metavar="[LAYER:]PATH", help="what to copy (a LAYER: prefix reads a layer)"),
         arg("target", metavar="LAYER:PATH", help="where to copy it to"),
         arg("--chown", metavar="UID:GID", help="own the copies by UID:GID (as the content sees them)"))
def cmd_copy(store, args) -> int:
    from eventstore.copying import copy_into

    copy_into(store, args.sources, args.target, args.chown)
    return 0


# --- the log as a stream ----------------------------------------------------------------------------

class _Entry:
    """An event as ``history`` shows one (``eventstore.cli.history_line``)."""

    def __init__(self, lsn: int, event) -> None:
        from eventstore.events import to_builtins

        details = to_builtins(event)
        actor = details.pop("actor", None) or {}
        for key in ("type", "time", "layer"):
            details.pop(key, None)
        self.lsn, self.time, self.type = lsn, event.time, event.type_name
        self.layer = getattr(event, "layer", None) or None
        self.actor = {"pid": actor.get("pid", 0), "uid": actor.get("uid", 0), "program": actor.get("program", "")}
        self.details = details


@command("events", "print the log's events, and with --follow every event as it is appended (resume with "
                   "--since LSN); --json: one JSON line each, for a log pipeline",
         arg("--follow", "-f", action="store_true", help="keep printing events as they are appended"),
         arg("--since", metavar="LSN|TIME", help="start at this LSN (a number), or at the first event at or after "
                                                  "this time (ISO 8601 or a duration ago: 10m)"),
         arg("--type", action="append", dest="types", metavar="TYPE", help="only events of this type (repeatable)"),
         access=NONE)
def cmd_events(args) -> int:
    import json

    from eventstore.cli import check_event_types, kebab, seen_lsn
    from eventstore.follow import first_lsn_at, stream
    from replay.audit import parse_time

    check_event_types(args.types)
    wanted = set(args.types or ())
    if args.since is None:
        since = 1
    elif args.since.isdigit():
        since = int(args.since)
    else:
        since = first_lsn_at(args.root, parse_time(args.since))

    def show(lsn: int, event) -> None:
        if wanted and event.type_name not in wanted:
            return
        entry = _Entry(lsn, event)
        if args.json:
            line = json.dumps(history_line(entry))
        else:
            who = f"pid {entry.actor['pid']} uid {entry.actor['uid']} {entry.actor['program']}".strip()
            extra = f"  {json.dumps(kebab(entry.details))}" if entry.details else ""
            line = f"{lsn:>8}  {iso_time(entry.time)}  {entry.type:<24} {(entry.layer or '-')[:12]:<12}  {who}{extra}"
        print(line, flush=True)

    stream(args.root, since, show, follow=args.follow, seen_lsn=seen_lsn(args.root))
    return 0


# --- the shell ------------------------------------------------------------------------------------

@command("completion", "print a shell completion script, generated from the parser (bash, zsh or tcsh)",
         arg("shell", choices=["bash", "zsh", "tcsh"], help="the shell to complete in"), access=NONE)
def cmd_completion(args) -> int:
    import shtab

    from eventstore.cli import build_parser, load_commands

    load_commands(None)
    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0

