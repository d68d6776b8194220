"""The conventions a Podman or CRI-O engineer expects of the CLI: --json/-j anywhere,
--version, help, a help line for everything, $LAYERSTORE_DRIVER, a config file, one JSON
style, no Python reprs, validated --type, relative times, and a start that imports only
what the command needs."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore.cli import COMMANDS, build_parser, load_commands
from tests.cli.support import cli_env, fails, ok
from tests.store.support import mounts_under, unmount_everything_under

from .support import base_tar, skip_unless_driver_runs


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eventstore.cli", *args], env=env or cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_json_goes_before_or_after_the_command(root: Path):
    layer = ok(root, "create-layer").strip()
    before = json.loads(ok(root, "-j", "layer", layer, driver="vfs"))
    after = json.loads(ok(root, "layer", layer, "-j"))
    assert before == after == json.loads(ok(root, "layer", "--json", layer))
    assert ok(root, "layers", "--json", "--tree").startswith("[")


def test_version_and_bare_help(root: Path):
    version = run("--version")
    assert version.returncode == 0 and re.fullmatch(r"layerstore \d+\.\d+\.\d+\n", version.stdout)
    bare = run()
    assert bare.returncode == 0 and bare.stderr == ""
    load_commands(None)
    for name in {cmd.name for cmd in COMMANDS.values()}:
        assert f"    {name}" in bare.stdout, name


def test_every_command_has_a_description_and_every_option_a_help_line():
    load_commands(None)
    for cmd in set(COMMANDS.values()):
        assert cmd.help and cmd.help[0].islower(), cmd.name
        for a in cmd.arguments:
            assert a.options.get("help"), f"{cmd.name} {a.flags}"
    parser = build_parser()
    for action in parser._actions:  # noqa: SLF001 (argparse keeps them there)
        assert action.help, action.option_strings


def test_the_driver_comes_from_the_environment(root: Path):
    env = {**cli_env(), "LAYERSTORE_DRIVER": "vfs"}
    done = subprocess.run([sys.executable, "-m", "eventstore.cli", "--root", str(root), "create-layer"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and (root / "driver").read_text().strip() == "vfs"
    env["LAYERSTORE_DRIVER"] = "no-such-driver"
    done = subprocess.run([sys.executable, "-m", "eventstore.cli", "--root", str(root.parent / "other"), "layers"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0  # a read on a root with no store: nothing, and nothing created
    assert not (root.parent / "other").exists()


def config_env(tmp_path: Path, text: str) -> dict:
    home = tmp_path / "config-home"
    (home / "layerstore").mkdir(parents=True, exist_ok=True)
    (home / "layerstore" / "layerstore.toml").write_text(text)
    env = cli_env()
    env["XDG_CONFIG_HOME"] = str(home)
    return env


def test_the_config_file_gives_root_driver_and_driver_options(tmp_path: Path):
    skip_unless_driver_runs("overlay")
    store = tmp_path / "from-config"
    env = config_env(tmp_path, f'[storage]\nroot = "{store}"\ndriver = "overlay"\n\n'
                               f'[storage.options.overlay]\nmountopt = "nodev,nosuid"\n')
    layer = run("create-layer", env=env).stdout.strip()
    assert (store / "driver").read_text().strip() == "overlay"
    path = run("mount", layer, env=env).stdout.strip()
    with open("/proc/self/mountinfo") as f:
        line = next(entry for entry in f if entry.split()[4] == path)
    assert {"nodev", "nosuid"} <= set(line.split()[5].split(","))
    assert "nodev" in run("status", env=env).stdout
    run("umount", layer, env=env)
    flagged = tmp_path / "from-flag"
    assert run("--root", str(flagged), "--driver", "vfs", "create-layer", env=env).returncode == 0
    assert (flagged / "driver").read_text().strip() == "vfs"  # the command line wins
    assert mounts_under(store) == []


@pytest.mark.parametrize("text, said", [
    ("[storage\nroot = 1", "config file"),
    ("[storage]\ngraphroot = '/x'\n", "unknown key(s) graphroot"),
    ("[storage]\nroot = 7\n", "storage.root must be a non-empty string"),
    ("[storage]\ndriver = 'vfs'\n[storage.options.vfs]\nspeed = 'fast'\n", "unknown option"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path: Path, text: str, said: str):
    env = config_env(tmp_path, text)
    done = run("--root", str(tmp_path / "s"), "create-layer", env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and said in done.stderr
    if "toml" not in said and said != "unknown option":
        assert "layerstore.toml" in done.stderr


def test_text_output_has_no_python_reprs(root: Path, tmp_path: Path):
    tar = tmp_path / "base.tar"
    tar.write_bytes(base_tar())
    layer = ok(root, "create", str(tar)).strip()
    writable = ok(root, "create-layer", layer).strip()
    outputs = [ok(root, *args) for args in (["layer", layer], ["layer", writable], ["layers"], ["status"],
                                            ["version"], ["log", "verify"], ["history"], ["check"],
                                            ["metadata", layer], ["fs-info", layer], ["state", "--at", "3"],
                                            ["changes", writable], ["failpoints"])]
    for text in outputs:
        assert not re.search(r"\b(True|False|None)\b|\{'|\[\]|<[a-z_.]+ object", text), text


def test_history_type_is_checked_and_times_may_be_relative(root: Path):
    ok(root, "create-layer")
    line = fails(root, 2, "history", "--type", "layer-exploded")
    assert "not an event type" in line and "hold-added" in line
    assert len(ok(root, "history", "--since", "1h").splitlines()) == 2
    assert ok(root, "history", "--until", "1h") == ""
    assert len(ok(root, "history", "--type", "layer-created", "--since", "90s").splitlines()) == 1
    assert "duration ago" in fails(root, 2, "history", "--since", "yesterday-ish")


def test_json_keys_are_kebab_case_everywhere(root: Path, tmp_path: Path):
    tar = tmp_path / "base.tar"
    tar.write_bytes(base_tar())
    layer = ok(root, "create", str(tar)).strip()
    ok(root, "mount", layer)
    ok(root, "umount", layer)
    documents = [json.loads(ok(root, "--json", *args)) for args in (["layer", layer], ["layers"], ["status"],
                                                                   ["version"], ["fs-info", layer],
                                                                   ["log", "verify"])]
    documents += [json.loads(line) for line in ok(root, "--json", "history").splitlines()]

    def keys(value):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield key
                yield from keys(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from keys(inner)

    found = {k for doc in documents for k in keys(doc)}
    assert "mount-point" in found and "diff-digest" in found
    assert not [k for k in found if "_" in k or k != k.lower()]


def imported(*args: str, root: Path) -> str:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "eventstore.cli", "--root", str(root),
                           "--driver", "vfs", *args], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return "\n".join(line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line)


def test_the_common_commands_import_nothing_of_the_new_ones(root: Path, tmp_path: Path):
    layer = ok(root, "create-layer", "--readonly").strip()  # (a writable one's size is measured when shown)
    for args in (["layers"], ["exists", layer], ["layer", layer]):
        modules = imported(*args, root=root).splitlines()
        for heavy in ("eventstore.cli_layers", "tqdm", "shtab", "tomllib", "eventstore.changeset"):
            assert heavy not in modules, (args, heavy)
    tar = tmp_path / "base.tar"
    tar.write_bytes(base_tar())
    modules = imported("create", str(tar), root=root).splitlines()
    assert "tqdm" not in modules  # no terminal: no progress bar, no import
    assert "eventstore.cli_layers" in imported("changes", layer, root=root).splitlines()


def test_no_config_file_means_no_toml_parser(root: Path, tmp_path: Path):
    env = cli_env()
    env["XDG_CONFIG_HOME"] = str(tmp_path / "empty")
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "eventstore.cli", "--root", str(root), "layers"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    if not os.path.exists("/etc/layerstore/layerstore.toml"):
        assert "tomllib" not in done.stderr


def test_the_parser_helps_argparse_style_for_each_command():
    load_commands(None)
    parser = build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    for name in ("changes", "applydiff", "events", "set-layer-data"):
        done = run(name, "--help")
        assert done.returncode == 0 and "--json" in done.stdout
