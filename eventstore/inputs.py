"""What a caller hands ``create``, checked before anything is logged.

The store's rule (docs/security.md, "Validation before logging"): every argument is
checked before the first event of an operation is appended, so a refused call leaves
the log as it was. ``check_create`` is that check for ``LayerStore.create`` (which
calls it first) and for the CLI (which calls it before it even opens the store);
``open_content`` opens the CLI's FILE argument, or takes standard input for ``-``.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
from typing import BinaryIO

import msgspec

from eventstore.errors import InvalidArgument
from eventstore.names import check_digest, check_id, check_mount_label, check_names, shown
from eventstore.sizes import check_size


class CreateInputs(msgspec.Struct, frozen=True):
    """``create``'s arguments, checked."""

    layer_id: str | None
    names: list[str]
    compressed_digest: str | None
    diff_digest: str | None
    max_size: int | None
    mount_label: str


def check_create(layer_id: str | None = None, names=(), compressed_digest: str | None = None,
                 diff_digest: str | None = None, max_size: int | None = None,
                 mount_label: str = "") -> CreateInputs:
    """The arguments, checked; InvalidArgument (one line) for the first bad one."""
    return CreateInputs(
        layer_id=check_id(layer_id) if layer_id is not None else None,
        names=check_names(names),
        compressed_digest=check_digest(compressed_digest) if compressed_digest else None,
        diff_digest=check_digest(diff_digest) if diff_digest else None,
        max_size=check_size(max_size, "max_size") if max_size is not None else None,
        mount_label=check_mount_label(mount_label) if mount_label else "",
    )


def open_content(arg: str | None, stdin=None) -> BinaryIO | None:
    """The tar stream ``create FILE`` reads: None without FILE, standard input for
    ``-`` (refused when closed or a terminal), else FILE opened for reading, which must
    be a regular file (a directory, FIFO, socket or device is refused: a FIFO would
    block the open, a device would never end)."""
    if arg is None:
        return None
    if arg == "-":
        stdin = sys.stdin if stdin is None else stdin
        if stdin is None or getattr(stdin, "buffer", None) is None:
            raise InvalidArgument("create -: standard input is closed (pipe a tar into it, or name a FILE)")
        if stdin.isatty():
            raise InvalidArgument("create -: standard input is a terminal (pipe a tar into it, or name a FILE)")
        return stdin.buffer
    if not arg:
        raise InvalidArgument("create: FILE is empty (name a tar file, or - for standard input)")
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang before it is refused
        fd = os.open(arg, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise InvalidArgument(f"create: cannot read FILE {shown(arg)}: {err.strerror}") from None
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind:
            raise InvalidArgument(f"create: FILE {shown(arg)} is {kind}, not a tar file"
                                  + (" (use - to read a pipe)" if kind == "a FIFO" else ""))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    """'' for a regular file, else what it is."""
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"
