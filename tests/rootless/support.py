"""Running things as an unprivileged user: a test user (made for the session), either
as the plain user (FUSE mounts through the setuid fusermount3) or as root of its own
user namespace (``unshare --user --map-root-user --mount``: Podman's way)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
USER_NAME = "lstore-rootless"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path  # a directory of its own, on a path every user may traverse
    python: str = sys.executable  # an interpreter the user may run (see ``find_python``)

    @property
    def data_home(self) -> Path:
        return self.home / ".local" / "share"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a login of the user would have, with the project's venv first."""
        env = {
            "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
            "XDG_DATA_HOME": str(self.data_home), "LANG": "C.UTF-8",
            "PATH": f"{self.home / 'bin'}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "PYTHONPATH": python_path(), "PYTHONPYCACHEPREFIX": str(self.home / ".cache" / "pycache"),
        }
        env.update(extra)
        return env

    def command(self, argv: list[str], userns: bool) -> list[str]:
        """``argv`` run as the user; with ``userns``, as root of a new user namespace
        (only the user's own id mapped) with a mount namespace of its own."""
        prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        if userns:
            prefix += ["unshare", "--user", "--map-root-user", "--mount"]
        return prefix + argv

    def run(self, argv: list[str], userns: bool, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv, userns), env=self.env(**env), cwd=self.home,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def shell(self, script: str, userns: bool, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        """A POSIX shell script, ``set -e``, in one process (one namespace when ``userns``)."""
        return self.run(["sh", "-ec", script], userns, timeout, **env)


def python_path() -> str:
    """The project and the packages of the interpreter running the tests."""
    return os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])


def find_python(user: User) -> str | None:
    """An interpreter of this Python version the user may run with the project's packages
    (the one running the tests may sit in a directory only root can enter, /root/.pyenv)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, getattr(sys, "_base_executable", ""), f"/usr/bin/{version}",
                      f"/usr/local/bin/{version}"):
        if not candidate or not os.path.exists(candidate):
            continue
        # through a shell, as the user's commands run: setpriv's own exec can reach an
        # interpreter the user's processes cannot
        probe = ["sh", "-c", f'exec "{candidate}" -c "import msgspec, isal, zstandard, eventstore.cli"']
        done = subprocess.run(user.command(probe, userns=False), env=user.env(), cwd="/", capture_output=True)
        if done.returncode == 0:
            return candidate
    return None


def make_user() -> tuple[User, bool]:
    """The test user, made if missing; (it, whether we made it)."""
    made = False
    try:
        entry = pwd.getpwnam(USER_NAME)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", USER_NAME], check=True, capture_output=True)
        entry = pwd.getpwnam(USER_NAME)
        made = True
    return User(USER_NAME, entry.pw_uid, entry.pw_gid, Path("/nonexistent")), made


def remove_user(user: User) -> None:
    subprocess.run(["userdel", user.name], capture_output=True)


def with_home(user: User, base: Path) -> User:
    """``user`` with a fresh home under ``base`` (made traversable for the user), and
    ``layerstore`` on its PATH (the CLI, run by the user's interpreter)."""
    home = base / f"home-{user.name}"
    (home / ".local" / "share").mkdir(parents=True)
    (home / "bin").mkdir()
    cli = home / "bin" / "layerstore"
    cli.write_text(f'#!/bin/sh\nexec {user.python} -m eventstore.cli "$@"\n')
    cli.chmod(0o755)
    # the packages in the user's own site dir too: children that set PYTHONPATH to the
    # project alone (the contract's CLI children do) still find them
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = home / ".local" / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    (site / "layerstore-test-packages.pth").write_text(python_path().replace(os.pathsep, "\n") + "\n")
    for path in (home, *home.rglob("*")):
        os.chown(path, user.uid, user.gid)
    return replace(user, home=home)


def can_run_as_users() -> str | None:
    """None when the machine lets us play an unprivileged user, else why not."""
    if os.geteuid() != 0:
        return "needs root to become the test user"
    for tool in ("setpriv", "unshare", "useradd", "fuse-overlayfs", "fusermount3"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None
