"""Who may reach a store's bytes: the owner only (docs/security.md, "Directory modes").

Every directory the store makes is 0700 and every file 0600, whatever the umask (a
directory is chmod'ed after ``mkdir``; a file is created with 0600, which a umask can
only narrow). A layer's data holds whatever its image holds — setuid binaries,
secrets, files owned by uids that are ordinary users on the host — so no other local
user may reach it. 0711 (traversal without listing) is not used: layer ids are chain
ids anyone can compute from a public image, so a path that cannot be listed is still
a path that can be walked.

What stays as the content says: a vfs layer's directory and an overlay layer's
``diff``/``empty`` are the container's ``/``, and their mode is the layer's (a 0700
``/`` breaks every image that runs as a non-root user); they sit inside 0700
directories, which is what keeps others out.

Existing stores are brought to these modes by the next writer open (``secure_store``):
the store's own directories, and, the first time one is fixed, what it directly holds
(files 0600; in a driver's home, its ``dir/`` or ``l/`` and overlay's layer directories
0700 — a built-in driver keeps layer content one level further down). The root itself
is changed only when it holds nothing but the store, so a store made straight in
``/tmp`` or a home directory never changes that directory's mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


DIR_MODE = 0o700
FILE_MODE = 0o600
#: the store's own directories under the root (the driver's home is added by name)
STORE_DIRS = ("log", "checkpoints", "tarsplit")
#: the store's own files directly in the root
ROOT_FILES = ("index.db", "index.db-wal", "index.db-shm", "index.db-journal", "driver")
#: what a root dedicated to the store may hold besides driver homes
_ROOT_ENTRIES = frozenset(STORE_DIRS + ROOT_FILES + ("lost+found",))
#: temporary entries the store makes in the root (atomic writes, overlay's mount probe)
_ROOT_TEMP_PREFIXES = (".driver.tmp-", ".layerstore-overlay-probe-")


def make_dir(path: str | os.PathLike, parents: bool = False) -> Path:
    """``path`` as a directory of mode 0700: made, or fixed when it exists with another
    mode. With ``parents``, missing parents are made first (with the default mode: they
    are not the store's)."""
    path = Path(path)
    if parents and not path.parent.is_dir():
        os.makedirs(path.parent, exist_ok=True)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        fix_mode(path, DIR_MODE)
        return path
    os.chmod(path, DIR_MODE)  # exact, whatever the umask took away
    return path


def make_root(root: Path) -> None:
    """Make the store root (0700) when it does not exist; an existing one is left to
    ``secure_store``."""
    if not root.is_dir():
        make_dir(root, parents=True)


def fix_mode(path: str | os.PathLike, mode: int) -> bool:
    """Set ``path``'s permission bits to ``mode`` unless they are already; True when
    they were changed. A symlink or a missing path is left alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return False
    try:
        os.chmod(path, mode)
    except PermissionError:
        return False  # not ours to change (another owner): its owner's next open fixes it
    return True


def secure_store(root: Path, driver_name: str) -> None:
    """Bring an existing store to the modes above (a writer open calls this; a store
    whose modes are right costs a stat per directory)."""
    if _dedicated(root, driver_name):
        fix_mode(root, DIR_MODE)
    for name in (*STORE_DIRS, driver_name):
        directory = root / name
        if _mode_of(directory) not in (None, DIR_MODE):
            _fix_children(directory)  # before the directory: a crash half-way is redone
            fix_mode(directory, DIR_MODE)
    for name in ROOT_FILES:
        fix_mode(root / name, FILE_MODE)
    create_private_file(root / "index.db")


def _dedicated(root: Path, driver_name: str) -> bool:
    """True when ``root`` holds nothing but the store (so its mode is the store's)."""
    try:
        names = os.listdir(root)
    except OSError:
        return False
    return all(n in _ROOT_ENTRIES or n == driver_name or n.startswith(_ROOT_TEMP_PREFIXES) for n in names)


def _mode_of(path: Path) -> int | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISDIR(st.st_mode) else None


def _fix_children(directory: Path) -> None:
    """What an older store made directly in one of its directories: files to 0600,
    directories to 0700 (a driver home's ``dir/`` or ``l/``, overlay's layer dirs; a
    layer's content lies one level further down and keeps its modes)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                fix_mode(entry.path, FILE_MODE)
            elif entry.is_dir(follow_symlinks=False):
                fix_mode(entry.path, DIR_MODE)


def create_private_file(path: str | os.PathLike) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite then gives its
    ``-wal`` and ``-shm`` files the same mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    except FileExistsError:
        pass
