"""What must hold after each damage case (docs/damage-testing.md, "The invariants").

(a) no acknowledged layer's data is destroyed by the store: its unique file is still
    under the root — in its own directory or anywhere under a path naming its id,
    lost+found included — unless the damage itself removed it or the remedy deleted
    that layer on purpose; no file the harness planted (stray entries) is gone, and
    nothing outside the root reached through a mount is touched;
(b) every command exits 0 or a code docs/cli.md gives it, with at most one line on
    stderr and no Python traceback (``commands.conduct_problems``);
(c) ``check`` exits 4 and names the damage, when the store cannot heal it by itself;
(d) after the documented remedy ``check`` exits 0;
(e) no kernel mount and no temp file is left behind;
and, because they are what "no data destroyed" means for the metadata:
(f) a read that answers gives the undamaged store's answer (the log is the truth);
(g) an acknowledged write survives the remedy, and a failed one did not happen;
(h) after the remedy, the probe layer mounts and unmounts (unless it is quarantined);
(i) read-only commands (the reads, ``check``, ``log verify``) change nothing under the root
    (the read models compared by their rows: SQLite may fold its WAL into index.db).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from replay.damage.caserun import PLANTED_PREFIX, CaseRun
from replay.damage.commands import ALLOWED, CORRUPT, NO, OK, CommandResult, conduct_problems
from replay.damage.workload import MARKER_PREFIX, WRITE_LEASE, WRITE_SUBJECT


def walk_files(root: Path):
    """Every file under ``root`` (path, name), never crossing into another file system."""
    device = os.lstat(root).st_dev
    for folder, dirs, files in os.walk(root, onerror=lambda exc: None):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == device]
        for name in files:
            yield Path(folder) / name, name


def find_markers(root: Path) -> dict[str, list[str]]:
    """Marker token -> the paths (relative to ``root``) of the marker files holding it."""
    found: dict[str, list[str]] = {}
    for path, name in walk_files(root):
        if name.startswith(MARKER_PREFIX) or name.startswith(PLANTED_PREFIX):
            try:
                token = path.read_text(errors="replace").strip()
            except OSError:
                continue
            found.setdefault(token, []).append(str(path.relative_to(root)))
    return found


def check_data(run: CaseRun, deleted_on_purpose: set[str]) -> list[str]:
    """(a), on a root with nothing mounted inside."""
    problems = []
    markers = find_markers(run.root)
    for alias, layer in run.fixture.layers.items():
        if alias in run.removed or alias in deleted_on_purpose:
            continue
        paths = markers.get(layer.token, [])
        if not any(layer.id in path for path in paths):
            where = f" (copies only in other layers' data: {paths[0]})" if paths else ""
            problems.append(f"acknowledged layer {alias} ({layer.id[:12]}): its data is gone from the root{where}")
    for name, token in run.planted.items():
        if token not in markers:
            problems.append(f"{name}, a file the harness planted in the store, was destroyed (not even in lost+found)")
    for path, content in run.outside.items():
        try:
            intact = path.read_text() == content
        except OSError:
            intact = False
        if not intact:
            problems.append(f"{path}, outside the store (reached through a mount), was destroyed or changed")
    return problems


def check_conduct(run: CaseRun) -> list[str]:
    """(b) for every command the case ran."""
    return [p for result in run.results for p in conduct_problems(result)]


def check_named(run: CaseRun, result: CommandResult, names: list[str]) -> list[str]:
    """(c): ``result`` is the first ``check``, on damage the store cannot heal itself."""
    if result.exit == OK:
        return [f"{result.shown()} says ok: it misses damage the store cannot heal by itself"]
    if result.exit != CORRUPT:
        return []  # (b) judges the code; a refusal to check is not a report of the damage
    text = result.stdout + result.stderr
    if names and not any(name in text for name in names):
        return [f"{result.shown()} exits 4 without naming the damage (any of {', '.join(names)}): "
                f"{result.error()}"]
    return []


def check_remedied(result: CommandResult) -> list[str]:
    """(d): ``result`` is ``check`` after the remedy."""
    if result.exit == OK:
        return []
    return [f"after the remedy, {result.shown()} exits {result.exit}: "
            f"{result.error()}"]


def check_truth(run: CaseRun, reads: list[CommandResult], may_refuse: bool, compare_history: bool) -> list[str]:
    """(f): each read before the remedy against the undamaged store's answer."""
    problems = []
    for result in reads:
        if result.command == "history" and not compare_history:
            continue
        truth = run.fixture.truth.get(" ".join(result.args))
        if truth is None:
            continue
        # exit 1 is an answer ("no") only from a command that looks a layer up
        if result.exit == OK or (result.exit == NO and NO in ALLOWED.get(result.command, ())):
            if (result.exit, _comparable(result.stdout, compare_history)) != (truth[0],
                                                                              _comparable(truth[1], compare_history)):
                problems.append(f"{result.shown()} answers what the log does not say: "
                                f"{_difference(truth, result)}")
        elif not may_refuse:
            problems.append(f"{result.shown()} refuses (exit {result.exit}) where the log can answer: "
                            f"{result.error()}")
    return problems


def _comparable(text: str, strict: bool) -> str:
    """``text`` as compared: a case where a writer ran before the reads (history not
    compared) may see its recovery reset mount counts the copy's kernel never had."""
    if strict:
        return text
    return "\n".join(line for line in text.splitlines() if "mount-count" not in line and "mount-point" not in line)


def _difference(truth: tuple[int, str], result: CommandResult) -> str:
    if truth[0] != result.exit:
        return f"exit {result.exit}, the undamaged store exits {truth[0]}"
    want, got = truth[1].splitlines(), result.stdout.splitlines()
    for i, (w, g) in enumerate(zip(want, got)):
        if w != g:
            return f"line {i + 1} is {g.strip()[:120]!r}, the undamaged store says {w.strip()[:120]!r}"
    return f"{len(got)} lines, the undamaged store prints {len(want)}"


def check_write(run: CaseRun, hold: CommandResult, history: CommandResult) -> list[str]:
    """(g): ``hold`` is the write before the remedy (a hold by lease ``WRITE_LEASE``),
    ``history`` the subject's hold events after it (``--json``). The lease itself is
    followed, not the count: damage may take away older holds the write has nothing to
    do with."""
    problems = []
    if hold.exit == NO:
        problems.append(f"'{hold.shown()}' says the acknowledged layer {WRITE_SUBJECT} is not found: {hold.error()}")
    if history.exit != OK:
        if hold.exit == OK:
            problems.append(f"the acknowledged write '{hold.shown()}' cannot be found after the remedy: "
                            f"'{history.shown()}' exits {history.exit}: {history.error()}")
        return problems
    try:
        # one JSON object a line (``history --json``)
        events = [e for e in map(json.loads, history.stdout.splitlines())
                  if (e.get("details", {}).get("holder") or {}).get("lease") == WRITE_LEASE]
    except ValueError:
        return [f"'{history.shown()}' printed no JSON: {history.stdout[:120]!r}"]
    held = bool(events) and events[-1]["type"] == "hold-added"
    if hold.exit == OK and not held:
        problems.append(f"the acknowledged write '{hold.shown()}' is lost: after the remedy the history of "
                        f"{WRITE_SUBJECT} has no hold by lease {WRITE_LEASE}")
    elif hold.exit != OK and events:
        problems.append(f"the write '{hold.shown()}' failed (exit {hold.exit}) yet took effect: the history of "
                        f"{WRITE_SUBJECT} has its hold by lease {WRITE_LEASE}")
    return problems


def probe_usable(layer: CommandResult) -> bool:
    """True when ``layer`` (``--json layer PROBE`` after the remedy) shows a layer that
    must mount: it exists, complete, not quarantined."""
    if layer.exit != OK:
        return False
    try:
        record = json.loads(layer.stdout)
    except ValueError:
        return False
    return not record.get("quarantined") and not record.get("incomplete")


def check_probe(mount: CommandResult, umount: CommandResult | None) -> list[str]:
    """(h)."""
    if mount.exit != OK:
        return [f"after the remedy, {mount.shown()} fails (exit {mount.exit}): {mount.error()}"]
    if umount is not None and umount.exit != OK:
        return [f"after the remedy, {umount.shown()} fails (exit {umount.exit}): {umount.error()}"]
    return []


#: SQLite's files: compared by what they say (``read_models_digest``), not byte for byte,
#: since a reader of a WAL database may fold the WAL into index.db and remove it
INDEX_FILES = ("index.db", "index.db-wal", "index.db-shm")


def fingerprint(root: Path, scratch: Path) -> dict[str, str]:
    """Every entry under ``root`` (never crossing a mount): a file's digest, a
    symlink's target, a directory as such; the read models by their rows."""
    found: dict[str, str] = {}
    device = os.lstat(root).st_dev
    for folder, dirs, files in os.walk(root, onerror=lambda exc: None):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == device]
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            if folder == str(root) and name in INDEX_FILES:
                continue
            found[os.path.relpath(path, root)] = _file_digest(path)
    if (root / "index.db").exists():
        found["index.db"] = read_models_digest(root, scratch)
    return found


def _file_digest(path: str) -> str:
    if os.path.islink(path):
        return "-> " + os.readlink(path)
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as exc:  # a device node, a fifo: its kind is enough
        return f"unreadable {exc.errno}"


def read_models_digest(root: Path, scratch: Path) -> str:
    """A digest of every row of the read models, read from a copy (so that reading
    changes nothing); of the bytes when SQLite cannot read them."""
    import shutil
    import sqlite3

    scratch.mkdir(exist_ok=True)
    for name in INDEX_FILES[:2]:
        (scratch / name).unlink(missing_ok=True)
        if (root / name).exists():
            shutil.copyfile(root / name, scratch / name)
    digest = hashlib.sha256()
    try:
        conn = sqlite3.connect(scratch / "index.db")
        try:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for table in tables:
                rows = sorted(repr(row) for row in conn.execute(f'SELECT * FROM "{table}"'))
                digest.update(f"{table}:{len(rows)}:{''.join(rows)}".encode())
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return "bytes " + _file_digest(str(root / "index.db"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return "rows " + digest.hexdigest()


def check_unchanged(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """(i): ``before`` and ``after`` are fingerprints around the read-only commands."""
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    if not (changed or added or removed):
        return []
    what = [f"{label} {', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''}"
            for label, paths in (("changed", changed), ("created", added), ("removed", removed)) if paths]
    return [f"read-only commands changed the store: {'; '.join(what)}"]


def check_leftovers(run: CaseRun, mounts: set[str]) -> list[str]:
    """(e): ``mounts`` are the kernel's mount points under the case's directory now."""
    problems = [f"a kernel mount is left behind: {point}" for point in sorted(mounts - set(run.own_mounts))]
    try:
        leftovers = sorted(os.listdir(run.tmpdir))
    except FileNotFoundError:
        leftovers = []
    if leftovers:
        problems.append(f"temp files left behind in TMPDIR: {', '.join(leftovers[:5])}")
    return problems
