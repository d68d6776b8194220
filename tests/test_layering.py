"""The layering of docs/design.md ("Who may call whom"), enforced: imports go one way,
and no module reaches into another's underscore names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "eventstore" / "containerd" / "api"  # grpcio-tools writes these (make protos)
SOURCES = sorted(p for p in [*(REPO / "eventstore").rglob("*.py"), *(REPO / "replay").rglob("*.py")]
                 if GENERATED not in p.parents)


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module, must_not_import", [
    ("eventstore/store.py", "eventstore.recovery"),
    ("eventstore/store.py", "eventstore.opener"),
    ("eventstore/log/wal.py", "eventstore.log.repair"),
    ("eventstore/log/reader.py", "eventstore.log.wal"),
    ("eventstore/log/segment.py", "eventstore.log.wal"),
    ("eventstore/log/format.py", "eventstore.log.reader"),
    ("eventstore/state.py", "eventstore.index"),
    ("eventstore/index.py", "eventstore.store"),
])
def test_imports_go_one_way(module: str, must_not_import: str):
    assert not {m for m in imported_modules(REPO / module) if m == must_not_import or
                m.startswith(must_not_import + ".")}


def test_eventstore_never_imports_replay_except_in_the_cli():
    for path in (REPO / "eventstore").rglob("*.py"):
        if path.name == "cli.py" or path.name.startswith("cli_"):  # the CLI's command modules
            continue
        assert not {m for m in imported_modules(path) if m.split(".")[0] == "replay"}, path


def names_defined(tree: ast.AST) -> set[str]:
    """Every name a module defines itself: functions, classes, their methods and
    attributes assigned through self."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def inherited_names(tree: ast.AST) -> set[str]:
    """The names a module's classes inherit from base classes of other modules of the
    project (a subclass may use its base's underscore methods, through ``self``)."""
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("eventstore", "replay"):
            imported.update({a.asname or a.name: node.module for a in node.names})
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                module = imported.get(base.id) if isinstance(base, ast.Name) else None
                source = REPO / (module.replace(".", "/") + ".py") if module else None
                if source and source.exists():
                    names |= names_defined(ast.parse(source.read_text()))
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_touches_another_modules_underscore_names(path: Path):
    tree = ast.parse(path.read_text())
    own = names_defined(tree)
    inherited = inherited_names(tree)
    reached = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            # os._exit and a namedtuple's _replace/_asdict/_fields are public API
            through_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "super")
            if through_self and node.attr in inherited:
                continue
            if node.attr not in own and node.attr not in ("_exit", "_replace", "_asdict", "_fields"):
                reached.add(f"{ast.unparse(node.value)}.{node.attr}")
        if isinstance(node, ast.ImportFrom):
            reached.update(f"{node.module}.{a.name}" for a in node.names
                           if a.name.startswith("_") and not a.name.startswith("__"))
    assert not reached
