"""The docs that a user runs or installs: the example of docs/api.md runs as written; the
man page and the shell completion come from the parser and name every command; every
public method of the API has a docstring."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore.cli import COMMANDS, load_commands
from tests.cli.support import REPO, cli_env


def test_the_api_example_runs(tmp_path: Path):
    text = (REPO / "docs" / "api.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", text, re.S)
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run([sys.executable, str(script)], env=cli_env(), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[('modify', '/etc'), ('modify', '/etc/hostname')]"
    assert lines[1] == "8 bytes changed"
    assert [line.split()[1] for line in lines[2:]] == ["layer-created", "layer-completed", "hold-added",
                                                        "layer-mounted", "layer-unmounted", "layer-data-set"]


def test_the_man_page_has_every_command(tmp_path: Path):
    page = tmp_path / "layerstore.1"
    subprocess.run([sys.executable, str(REPO / "tools" / "manpage.py"), "-o", str(page)], check=True,
                   capture_output=True, env=cli_env())
    text = page.read_text()
    load_commands(None)
    for cmd in set(COMMANDS.values()):
        assert f".SS {cmd.name.replace('-', chr(92) + '-')}\n" in text, cmd.name
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed: the page is not rendered")
    rendered = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(page)], capture_output=True, text=True)
    assert rendered.returncode == 0 and rendered.stderr == ""


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_knows_every_command(shell: str):
    done = subprocess.run([sys.executable, "-m", "eventstore.cli", "completion", shell], env=cli_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    load_commands(None)
    for cmd in set(COMMANDS.values()):  # (zsh's names cannot hold '+': lost+found is lost-found there)
        assert any(word in done.stdout for word in (cmd.name, *cmd.aliases)), cmd.name
    if shell == "bash" and shutil.which("bash"):
        syntax = subprocess.run(["bash", "-n"], input=done.stdout, capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


def test_every_public_method_has_a_docstring():
    from eventstore import open_store
    from eventstore.drivers.overlay import OverlayDriver
    from eventstore.drivers.vfs import VfsDriver
    from eventstore.store import LayerStore, WriteSession

    assert inspect.getdoc(open_store)
    for cls in (LayerStore, WriteSession, OverlayDriver, VfsDriver):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if callable(target) or isinstance(member, property):
                assert inspect.getdoc(target), f"{cls.__name__}.{name}"


def test_the_package_says_it_is_typed():
    assert (REPO / "eventstore" / "py.typed").exists()
    assert "py.typed" in (REPO / "pyproject.toml").read_text()
