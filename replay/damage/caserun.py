"""One damage case as it runs: its copy of the store, what the damage did and planted,
and the commands it ran. Damage functions and checks both work through it."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from replay.damage.commands import CommandResult, cli_argv, run_command
from replay.damage.fixture import Fixture, child_env

PLANTED_PREFIX = "damage-planted-"


@dataclass
class CaseRun:
    fixture: Fixture
    workdir: Path
    root: Path  # the damaged copy of the store
    command_root: Path = None  # type: ignore[assignment]  # where commands run before the remedy
    user: str = ""  # run the commands before the remedy as this user (setpriv)
    undo: list[Callable[[], None]] = field(default_factory=list)  # the remedy's "undo" step
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # always, at the end
    own_mounts: list[str] = field(default_factory=list)  # mount points the harness made
    planted: dict[str, str] = field(default_factory=dict)  # file name -> token: found anywhere under the root
    outside: dict[Path, str] = field(default_factory=dict)  # file outside the root -> its token
    removed: set[str] = field(default_factory=set)  # aliases whose data the damage itself removed
    values: dict[str, str] = field(default_factory=dict)  # more placeholders for commands ({zombie})
    results: list[CommandResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.command_root is None:
            self.command_root = self.root

    @property
    def tmpdir(self) -> Path:
        """TMPDIR of every command: anything left in it is a temp file the store leaked."""
        return self.workdir / "tmp"

    def id(self, alias: str) -> str:
        if alias in self.values:
            return self.values[alias]
        return self.fixture.layers[alias].id

    def path(self, rel: str) -> Path:
        return self.root / rel

    def words(self, template: str) -> list[str]:
        """``template``'s words, ``{alias}`` replaced by the layer's id."""
        names = {alias: layer.id for alias, layer in self.fixture.layers.items()} | self.values
        return [word.format(**names) for word in shlex.split(template)]

    def cli(self, phase: str, template: str, *, before_remedy: bool = False) -> CommandResult:
        """Run ``layerstore TEMPLATE`` on this copy; before the remedy, where and as whom
        the environment says (a read-only bind, user nobody)."""
        args = self.words(template)
        root = self.command_root if before_remedy else self.root
        user = self.user if before_remedy else ""
        argv = cli_argv(self.fixture.driver, self.fixture.driver_modules, root, args)
        if user:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user_group(user)}", "--clear-groups", "--", *argv]
        result = run_command(argv, child_env(self.tmpdir), phase, args, root=str(root), user=user)
        self.results.append(result)
        return result

    def plant(self, directory: Path, token: str) -> Path:
        """A file of the harness's own (``damage-planted-TOKEN``) that the store must not
        destroy: it may move it (to lost+found), never delete it."""
        path = directory / f"{PLANTED_PREFIX}{token}"
        path.write_text(token + "\n")
        self.planted[path.name] = token
        return path


def user_group(user: str) -> str:
    import grp
    import pwd

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
