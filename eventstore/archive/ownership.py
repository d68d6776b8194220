"""What a new file gets from open(2) by itself — the caller's owner (the parent's group
under a setgid directory), its mode minus the umask — so that extraction calls fchown
and fchmod only when an entry wants something else. For a typical layer file (root's,
0644 or 0755) that is two system calls of six saved.
"""

from __future__ import annotations

import os
import stat


def current_umask() -> int | None:
    """The process's umask, read without changing it (os.umask would, for a moment, for
    every thread); None when /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


class NewInodes:
    """Decides, per new file, whether fchown and fchmod are needed."""

    def __init__(self) -> None:
        self.uid = os.geteuid()
        self.gid = os.getegid()
        self.umask = current_umask()
        self._setgid: dict[bytes, bool] = {}  # directory real path -> has S_ISGID

    def create_mode(self, mode: int) -> int | None:
        """``mode`` when open(2) gives a new file exactly that (so no fchmod is needed);
        None when the file must be created private and fchmod'ed after its owner is set
        (setuid/setgid/sticky bits, which chown clears, or bits the umask takes)."""
        if self.umask is None or mode & 0o7000 or mode & self.umask:
            return None
        return mode

    def needs_chown(self, uid: int, gid: int, parent_fd: int, parent_real: bytes) -> bool:
        """True unless a file made in ``parent_fd`` already has owner ``uid:gid``."""
        if uid != self.uid or gid != self.gid:
            return True
        setgid = self._setgid.get(parent_real)
        if setgid is None:
            setgid = self._setgid[parent_real] = bool(os.fstat(parent_fd).st_mode & stat.S_ISGID)
        return setgid  # a setgid directory gives its own group

    def forget(self, real: bytes | None = None) -> None:
        """The directory ``real`` got a new mode (None: directories went): look again."""
        if real is None:
            self._setgid.clear()
        else:
            self._setgid.pop(real, None)
