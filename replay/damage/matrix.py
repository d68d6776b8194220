"""The damage matrix: every case the harness runs, declared once.

A case names its damage (a function of the ``CaseRun`` that damages the copy and says
what it did), the documented remedy (commands, and ``undo`` for the environment), and
what the store owes it:

- ``heals``: the damage is to derived data (read models, checkpoints, overlay metadata)
  or to the surroundings, which the store heals by itself (or the remedy undoes):
  ``check`` need not report it. Otherwise ``check`` must exit 4 and name it (``names``).
- ``reads``: ``answer`` (every read gives the undamaged store's answer) or
  ``may-refuse`` (a read may refuse with a documented code; if it answers, the truth).
- ``subject``: the layer the reads ask about; ``probe``: the layer mounted after the
  remedy to show the store is usable again.

Expectations follow DESIGN §2–§4 and docs/integrity.md; docs/damage-testing.md has
the same matrix as a table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from replay.damage import environment
from replay.damage.bytes import Skip, damage_pages, delete, flip, swap, truncate
from replay.damage.caserun import CaseRun
from replay.damage.logbytes import RECORD_LSN_OFFSET, SEGMENT_HEADER_SIZE, SEGMENT_UUID_OFFSET

LOG_REMEDY = ("log repair", "recover")
LAYER_REMEDY = ("delete --force {leaf}",)
NEARLY_FULL = 48 * 1024  # bytes left: enough for a reader and a log append, not for SQLite's write


@dataclass(frozen=True)
class Case:
    name: str
    target: str  # the file class, for the table
    damage: Callable[[CaseRun], str]
    remedy: tuple[str, ...] = ()
    heals: bool = False
    reads: str = "answer"  # answer | may-refuse
    subject: str = "leaf"
    probe: str = "leaf"
    names: Callable[[CaseRun], list[str]] | None = None
    drivers: tuple[str, ...] = ()  # only with these drivers; () every driver
    compare_history: bool = True
    remedy_may_refuse: bool = False  # a remedy command may refuse (exit 3 or the storage code) instead
    checks: tuple[Callable[[CaseRun, str], list[str]], ...] = ()  # (run, "reads"|"after") -> problems

    def runs_on(self, driver: str) -> bool:
        return not self.drivers or driver in self.drivers


# --- log segments -------------------------------------------------------------------------------

def _segment(run: CaseRun, which: str) -> str:
    segments = run.fixture.segments()
    if which == "first":
        return segments[0]
    if which == "last":
        return segments[-1]
    middles = segments[1:-1]
    # prefer a middle segment that has an older version, so that "stale" means something
    with_stale = [s for s in middles if run.fixture.stale_version(s) is not None]
    return (with_stale or middles)[len(with_stale or middles) // 2]


def _record(run: CaseRun, segment: str, which: str):
    records = run.fixture.records(segment)
    return records[-1] if which == "last" else records[len(records) // 2]


SEGMENT_DAMAGES: dict[str, Callable[[CaseRun, str, str], str]] = {
    "flip-payload": lambda run, seg, which: flip(run.path(seg), _record(run, seg, which).payload_middle),
    "flip-record-header": lambda run, seg, which: flip(run.path(seg),
                                                       _record(run, seg, which).offset + RECORD_LSN_OFFSET),
    "flip-segment-header": lambda run, seg, which: flip(run.path(seg), SEGMENT_UUID_OFFSET + 4),
    "truncate-mid-record": lambda run, seg, which: truncate(run.path(seg), _record(run, seg, which).payload_middle),
    "truncate-at-record": lambda run, seg, which: truncate(run.path(seg), _record(run, seg, which).offset),
    "truncate-to-header": lambda run, seg, which: truncate(run.path(seg), SEGMENT_HEADER_SIZE),
    "truncate-to-zero": lambda run, seg, which: truncate(run.path(seg), 0),
    "delete": lambda run, seg, which: delete(run.path(seg)),
    "stale": lambda run, seg, which: swap(run.path(seg), run.fixture.stale_version(seg), "stale"),
    "foreign": lambda run, seg, which: swap(run.path(seg), run.fixture.foreign / seg, "foreign"),
}


def _segment_case(which: str, kind: str) -> Case:
    def damage(run: CaseRun) -> str:
        segment = _segment(run, which)
        return f"{segment}: {SEGMENT_DAMAGES[kind](run, segment, which)}"

    def names(run: CaseRun) -> list[str]:
        # damage at a segment's end shows where the next one begins: either name will do
        number = int(Path(_segment(run, which)).stem)
        return [f"{n:016d}.wal" for n in (number, number + 1)] + [f"segment {number}", "lost", "missing"]

    return Case(f"segment-{which}/{kind}", "log segment", damage, LOG_REMEDY, reads="may-refuse", subject="app",
                names=names)


# --- archived segments (docs/lifecycle.md): the fixture is built with archiving off, so that
# the byte-level cases above damage plain segments; these archive one sealed segment first ----

def _archived_segment(run: CaseRun) -> Path:
    from eventstore.index import Index
    from eventstore.lifecycle import archive, archive_path

    index = Index(run.root / "index.db", readonly=True)
    try:
        sealed = index.sealed()
    finally:
        index.close()
    if not sealed:
        raise Skip("no sealed segment to archive")
    number = sorted(sealed)[len(sealed) // 2]
    archive(run.root / "log", {number: sealed[number]})
    return archive_path(run.root / "log", number)


ARCHIVE_DAMAGES: dict[str, Callable[[Path], str]] = {
    "flip": lambda path: flip(path, path.stat().st_size // 2),
    "truncate": lambda path: truncate(path, path.stat().st_size // 2),
    "delete": delete,
}


def _archive_case(kind: str) -> Case:
    def damage(run: CaseRun) -> str:
        path = _archived_segment(run)
        run.values["archived"] = path.name
        return f"log/archive/{path.name} (archived just now): {ARCHIVE_DAMAGES[kind](path)}"

    def names(run: CaseRun) -> list[str]:
        number = int(run.values["archived"][:16])
        return [f"{number:016d}.wal", f"segment {number}", "lost", "missing"]

    return Case(f"archive/{kind}", "archived segment", damage, LOG_REMEDY, reads="may-refuse", subject="app",
                names=names)


# --- index.db -------------------------------------------------------------------------------------

INDEX_FILES = ("index.db", "index.db-wal", "index.db-shm")


def _replace_index(run: CaseRun, source: Path, what: str) -> str:
    if not (source / "index.db").is_file():
        raise Skip(f"no {what} index.db")
    for name in INDEX_FILES:
        (run.root / name).unlink(missing_ok=True)
        if (source / name).is_file():
            shutil.copyfile(source / name, run.root / name)
    return f"index.db replaced by a {what} copy ({source / 'index.db'})"


def _delete_index(run: CaseRun) -> str:
    for name in INDEX_FILES:
        (run.root / name).unlink(missing_ok=True)
    return "index.db deleted"


INDEX_DAMAGES: dict[str, Callable[[CaseRun], str]] = {
    "delete": _delete_index,
    "damaged-pages": lambda run: damage_pages(run.path("index.db")),
    "truncate-to-zero": lambda run: truncate(run.path("index.db"), 0),
    "stale": lambda run: _replace_index(run, run.fixture.snapshots[-1], "stale"),
    "diverged": lambda run: _replace_index(run, run.fixture.clone, "diverged (a clone with other events)"),
    "foreign": lambda run: _replace_index(run, run.fixture.foreign, "foreign"),
}


# --- checkpoints: each case also deletes index.db, so the store must rebuild its read models
# and decide whether the checkpoint can be trusted ---------------------------------------------------

def _newest_checkpoint(run: CaseRun) -> str:
    return run.fixture.checkpoints()[-1]


def _older_checkpoint(run: CaseRun) -> Path:
    return run.fixture.pristine / run.fixture.checkpoints()[-2]


def _foreign_checkpoint(run: CaseRun) -> Path | None:
    directory = run.fixture.foreign / "checkpoints"
    found = sorted(directory.glob("*.ckpt")) if directory.is_dir() else []
    return found[-1] if found else None


CHECKPOINT_DAMAGES: dict[str, Callable[[CaseRun, Path], str]] = {
    "flip": lambda run, path: flip(path, path.stat().st_size // 2),
    "truncate-mid": lambda run, path: truncate(path, path.stat().st_size // 2),
    "truncate-to-zero": lambda run, path: truncate(path, 0),
    "delete": lambda run, path: delete(path),
    "stale": lambda run, path: swap(path, _older_checkpoint(run), "stale (the older checkpoint's bytes)"),
    "diverged": lambda run, path: swap(path, run.fixture.clone / _newest_checkpoint(run),
                                       "diverged (a clone's checkpoint at the same LSN)"),
    "foreign": lambda run, path: swap(path, _foreign_checkpoint(run), "foreign"),
}


def _checkpoint_case(kind: str) -> Case:
    def damage(run: CaseRun) -> str:
        newest = _newest_checkpoint(run)
        done = CHECKPOINT_DAMAGES[kind](run, run.path(newest))
        return f"{newest}: {done}; {_delete_index(run)}"

    return Case(f"checkpoint/{kind}", "checkpoint", damage, heals=True, subject="app")


# --- tar-splits and driver data: the layer's own bytes, which only the layer's owner can restore ---

def _leaf_names(run: CaseRun) -> list[str]:
    return [run.id("leaf")[:12]]


def _tarsplit(run: CaseRun) -> Path:
    return run.path(run.fixture.tarsplit("leaf"))


TARSPLIT_DAMAGES: dict[str, Callable[[CaseRun], str]] = {
    "flip": lambda run: flip(_tarsplit(run), _tarsplit(run).stat().st_size // 2),
    "truncate-mid": lambda run: truncate(_tarsplit(run), _tarsplit(run).stat().st_size // 2),
    "truncate-to-zero": lambda run: truncate(_tarsplit(run), 0),
    "delete": lambda run: delete(_tarsplit(run)),
    "foreign": lambda run: swap(_tarsplit(run), run.fixture.foreign / run.fixture.tarsplit(
        "leaf", run.fixture.foreign_ids["leaf"]), "foreign"),
}


def _layer_dir_deleted(run: CaseRun) -> str:
    run.removed.add("leaf")
    return f"{run.fixture.layer_dir(run.root, 'leaf').relative_to(run.root)}: {delete(run.fixture.layer_dir(run.root, 'leaf'))}"


def _diff_file(run: CaseRun, rel: str) -> Path:
    return run.fixture.diff_dir(run.root, "leaf") / rel


def _file_added(run: CaseRun) -> str:
    path = _diff_file(run, "etc/added-by-damage")
    path.write_text("not in the layer's tar\n")
    return f"{path.relative_to(run.root)} added"


def _file_removed(run: CaseRun) -> str:
    path = _diff_file(run, "etc/leaf.conf")
    path.unlink()
    return f"{path.relative_to(run.root)} removed"


def _bytes_changed(run: CaseRun) -> str:
    path = _diff_file(run, "usr/share/leaf/data.bin")
    return f"{path.relative_to(run.root)}: {flip(path, 100)}"


DRIVER_DAMAGES: dict[str, Callable[[CaseRun], str]] = {
    "layer-dir-deleted": _layer_dir_deleted,
    "file-added": _file_added,
    "file-removed": _file_removed,
    "bytes-changed": _bytes_changed,
}


# --- overlay's metadata: rebuilt from the log by recovery -----------------------------------------

def _overlay(run: CaseRun, alias: str) -> Path:
    return run.fixture.layer_dir(run.root, alias)


def _links(run: CaseRun) -> str:
    links = run.root / "overlay" / "l"
    count = 0
    for link in links.iterdir():
        link.unlink()
        count += 1
    return f"overlay/l/: all {count} short links removed"


def _parent_link(run: CaseRun) -> str:
    short = (_overlay(run, "app") / "link").read_text().strip()
    (run.root / "overlay" / "l" / short).unlink()
    return f"overlay/l/{short} (app's short link, in leaf's lower chain) removed"


def _overlay_file(alias: str, name: str, content: str | None) -> Callable[[CaseRun], str]:
    def damage(run: CaseRun) -> str:
        path = _overlay(run, alias) / name
        if content is None:
            delete(path)
            return f"{path.relative_to(run.root)} removed"
        path.write_text(content)
        return f"{path.relative_to(run.root)} overwritten with {content!r}"
    return damage


OVERLAY_DAMAGES: dict[str, Callable[[CaseRun], str]] = {
    "links-removed": _links,
    "parent-link-removed": _parent_link,
    "lower-removed": _overlay_file("leaf", "lower", None),
    "lower-garbled": _overlay_file("leaf", "lower", "l/NOSUCHLINK0000000000000000:l/../../etc"),
    "link-file-removed": _overlay_file("app", "link", None),
    "merged-removed": _overlay_file("leaf", "merged", None),
    "work-removed": _overlay_file("leaf", "work", None),
}


# --- stray entries: moved aside to lost+found, never deleted, never blocking a writer ----------------

def _stray_tarsplit_dir(run: CaseRun) -> str:
    keep = run.path("tarsplit/keep")
    keep.mkdir()
    run.plant(keep, "tarsplit-keep")
    return "mkdir tarsplit/keep (with a file of ours inside)"


def _stray_driver_file(run: CaseRun) -> str:
    home = run.fixture.layer_dir(run.root, "leaf").parent
    path = run.plant(home, "driver-stray")
    return f"a stray file {path.relative_to(run.root)} among the layer directories"


def _orphan_layer_dir(run: CaseRun) -> str:
    leaf = run.fixture.layer_dir(run.root, "leaf")
    orphan = leaf.with_name("f" * 8 + leaf.name[8:])
    shutil.copytree(leaf, orphan, symlinks=True)
    run.plant(orphan, "orphan")
    return f"{orphan.relative_to(run.root)}: a layer directory no event accounts for (a copy of leaf's)"


# --- environment checks ---------------------------------------------------------------------------

def _zombie_checks(run: CaseRun, when: str) -> list[str]:
    """Reads never report a layer whose creator died half-way; recovery removes it."""
    problems = []
    exists = run.cli(when, "exists {zombie}", before_remedy=when == "reads")
    if exists.exit == 0:
        problems.append(f"{'before' if when == 'reads' else 'after'} the remedy, 'exists' reports the zombie's "
                        f"half-made layer {run.id('zombie')[:12]}")
    if when == "after" and run.fixture.driver_paths(run.root).exists(run.id("zombie")):
        problems.append(f"recover left the zombie's half-made layer {run.id('zombie')[:12]} in the driver")
    return problems


def _leaked_mount(run: CaseRun) -> str:
    """A kernel mount no count accounts for: what a crash between mount(2) and its
    event leaves. Recovery unmounts it (DESIGN §4); nothing else may be left mounted."""
    driver = run.fixture.driver_paths(run.root)
    path = driver.mount(run.id("patch"))
    return f"{path.relative_to(run.root)} mounted by the driver, no event recorded (mount count 0)"


def _no_damage(run: CaseRun) -> str:
    return "nothing (the control case)"


OVERLAY_LAYOUT = ("overlay", "fuse-overlayfs")  # drivers with overlay's metadata and kernel-visible mounts


# --- the matrix -----------------------------------------------------------------------------------

def build_matrix() -> list[Case]:
    cases = [Case("none", "-", _no_damage, heals=True)]
    for which in ("first", "middle", "last"):
        cases += [_segment_case(which, kind) for kind in SEGMENT_DAMAGES]
    cases += [_archive_case(kind) for kind in ARCHIVE_DAMAGES]
    cases += [Case(f"index/{kind}", "index.db", damage, heals=True, subject="app")
              for kind, damage in INDEX_DAMAGES.items()]
    cases += [_checkpoint_case(kind) for kind in CHECKPOINT_DAMAGES]
    cases += [Case(f"tarsplit/{kind}", "tar-split", damage, LAYER_REMEDY, names=_leaf_names, probe="rw")
              for kind, damage in TARSPLIT_DAMAGES.items()]
    cases += [Case(f"driver/{kind}", "driver data", damage, LAYER_REMEDY, names=_leaf_names, probe="rw")
              for kind, damage in DRIVER_DAMAGES.items()]
    cases += [Case(f"overlay/{kind}", "overlay metadata", damage, ("recover",), heals=True, drivers=OVERLAY_LAYOUT)
              for kind, damage in OVERLAY_DAMAGES.items()]
    cases += [
        Case("stray/tarsplit-dir", "stray entry", _stray_tarsplit_dir, ("recover",), heals=True),
        Case("stray/driver-file", "stray entry", _stray_driver_file, ("recover",), heals=True),
        Case("stray/orphan-layer-dir", "stray entry", _orphan_layer_dir, ("recover",), heals=True),
        Case("env/disk-full", "environment", environment.full_disk, ("undo",), heals=True, reads="may-refuse"),
        # room for a log append, not for SQLite to grow: the write fails half-way
        Case("env/disk-nearly-full", "environment", lambda run: environment.full_disk(run, NEARLY_FULL),
             ("undo",), heals=True, reads="may-refuse"),
        Case("env/read-only", "environment", environment.read_only_medium, ("undo",), heals=True),
        Case("env/other-user", "environment", environment.other_user, (), heals=True, reads="may-refuse"),
        Case("env/reader-user", "environment", environment.reader_user, (), heals=True),
        Case("env/leaked-mount", "environment", _leaked_mount, ("recover",), heals=True, drivers=OVERLAY_LAYOUT),
        Case("env/zombie-creator", "environment", environment.zombie_creator, ("recover",), heals=True,
             compare_history=False, checks=(_zombie_checks,)),
        # removing a layer never crosses into a mount: it unmounts first, or refuses
        Case("env/mount-inside-layer", "environment", environment.mount_inside_layer,
             ("delete --force {leaf}", "undo"), heals=True, probe="rw", remedy_may_refuse=True),
        Case("env/mount-on-mount-point", "environment", environment.mount_on_mount_point,
             ("delete --force {leaf}", "undo"), heals=True, probe="rw", remedy_may_refuse=True),
    ]
    return cases


MATRIX = build_matrix()


def find(names: list[str], driver: str) -> list[Case]:
    """The cases named (each a name or a prefix ending in '/'), for ``driver``."""
    chosen = []
    for name in names:
        found = [c for c in MATRIX if c.name == name or (name.endswith("/") and c.name.startswith(name))]
        if not found:
            raise KeyError(name)
        chosen += [c for c in found if c not in chosen]
    return [c for c in chosen if c.runs_on(driver)]


def applicable(driver: str) -> list[Case]:
    return [c for c in MATRIX if c.runs_on(driver)]
