"""import_layer: one pass over a layer stream — digests, extraction, tar-split."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import msgspec

from eventstore.archive.compression import LayerSource, StreamError
from eventstore.archive.extract import Extractor, Refused
from eventstore.archive.header import HeaderError
from eventstore.archive.reader import Entry, TarError, TarReader
from eventstore.archive.resolve import ResolveError
from eventstore.archive.tarsplit import TarSplitWriter
from eventstore.archive.writers import DeferredFailure
from eventstore.errors import ContentRejected, InvalidArgument, StorageError
from eventstore.fsutil import fsync_dir

#: uncompressed bytes one layer may hold. Real layers reach tens of GiB (models,
#: toolchains); a gzip bomb reaches any size from a few MiB. 64 GiB keeps the first
#: and stops the second long before it fills a disk; callers can lower it.
DEFAULT_MAX_SIZE = 64 << 30

WHITEOUT_FORMATS = ("overlay", "delete", "fuse-overlayfs")

#: threads that create small files while the tar is read on (eventstore/archive/writers.py)
WRITERS = 2


class ImportResult(msgspec.Struct, frozen=True):
    """What one import measured."""

    compressed_digest: str  # sha256 of the bytes as given
    compressed_size: int
    diff_digest: str  # sha256 of the uncompressed tar, trailing bytes included
    diff_size: int
    compression: str  # "none" | "gzip" | "zstd" | "xz" | "bzip2"
    entries: int


def import_layer(stream: BinaryIO, target: Path, tarsplit_path: Path, *,
                 whiteout_format: str, max_size: int = DEFAULT_MAX_SIZE,
                 progress: Callable[[int], None] | None = None, owners=None,
                 onto_content: bool = False) -> ImportResult:
    """Read ``stream`` once: extract it into ``target``, write the tar-split to
    ``tarsplit_path``, and return the digests and sizes.

    Raises ContentRejected for a malformed, hostile or oversized stream (nothing is
    ever written outside ``target`` and ``tarsplit_path``; a partial tar-split is
    removed, the partial tree is the caller's to remove). The extracted tree is not
    synced (the store does that); the tar-split is. ``owners`` (an
    ``eventstore.idmap.Owners``) shifts the tar's ids for an ID-mapped layer;
    ``onto_content``: ``target`` holds a layer's content the tar applies onto (an
    opaque directory then hides it too, whatever the whiteout format).
    """
    _check_arguments(stream, target, tarsplit_path, whiteout_format, max_size)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        split_fd = os.open(tarsplit_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                           | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        os.close(root_fd)
        raise InvalidArgument(f"tar-split path {tarsplit_path} exists already") from None
    done = False
    try:
        result = _run(stream, root_fd, split_fd, whiteout_format, max_size, progress, owners, onto_content)
        fsync_dir(Path(tarsplit_path).parent)
        done = True
        return result
    finally:
        os.close(split_fd)
        os.close(root_fd)
        if not done:
            try:
                os.unlink(tarsplit_path)
            except FileNotFoundError:
                pass


def _check_arguments(stream, target, tarsplit_path, whiteout_format, max_size) -> None:
    if whiteout_format not in WHITEOUT_FORMATS:
        raise InvalidArgument(f"whiteout_format must be one of {WHITEOUT_FORMATS}, "
                              f"not {whiteout_format!r}")
    if not isinstance(max_size, int) or max_size <= 0:
        raise InvalidArgument(f"max_size must be a positive number of bytes, not {max_size!r}")
    if not hasattr(stream, "read"):
        raise InvalidArgument("stream must be a readable binary file object")
    if not os.path.isdir(target):
        raise InvalidArgument(f"import target {target} is not an existing directory")
    if not os.path.isdir(Path(tarsplit_path).parent):
        raise InvalidArgument(f"the directory of tar-split path {tarsplit_path} does not exist")


def _run(stream, root_fd: int, split_fd: int, whiteout_format: str, max_size: int,
         progress, owners=None, onto_content: bool = False) -> ImportResult:
    split = TarSplitWriter(split_fd)
    # an empty target (a new overlay layer, a base layer) can take writer threads
    extractor = Extractor(root_fd, whiteout_format, split, owners or None, onto_content,
                          writers=0 if onto_content or os.listdir(root_fd) else WRITERS)
    entry: Entry | None = None
    source = reader = None
    try:
        source = LayerSource(stream, max_size, progress)
        reader = TarReader(source.chunks(), split, max_size)
        for entry in reader.entries():
            extractor.apply(entry, reader)
        entry = None
        extractor.finish()
    except DeferredFailure as failure:  # a file written on a writer thread
        where = _where_at(*failure.where)
        if isinstance(failure.error, (Refused, ResolveError)):
            raise ContentRejected(f"{where}: {failure.error}") from None
        if isinstance(failure.error, OSError):
            raise StorageError(f"extracting {where}: {failure.error}") from failure.error
        raise failure.error
    except Refused as err:
        raise ContentRejected(f"{_where(entry)}: {err}") from None
    except ResolveError as err:
        raise ContentRejected(f"{_where(entry)}: {err}") from None
    except (TarError, HeaderError) as err:
        if reader is not None and reader.entries_read == 0:  # not one valid header: no tar at all
            raise ContentRejected(f"not a tar archive (nor a compressed one): {err}") from None
        raise ContentRejected(f"layer refused: {err}") from None
    except StreamError as err:
        inside = f" (reading {_where(entry)})" if entry is not None else ""
        raise ContentRejected(f"layer refused: {err}{inside}") from None
    except OSError as err:
        raise StorageError(f"extracting {_where(entry)}: {err}") from err
    finally:
        extractor.close()
        if source is not None:
            source.close()
    diff_digest = "sha256:" + source.diff_hash.hexdigest()
    split.finish(reader.entries_read, source.diff_size, diff_digest)
    return ImportResult(
        compressed_digest="sha256:" + source.compressed_hash.hexdigest(),
        compressed_size=source.compressed_size,
        diff_digest=diff_digest,
        diff_size=source.diff_size,
        compression=source.compression,
        entries=reader.entries_read,
    )


def _where(entry: Entry | None) -> str:
    return "layer" if entry is None else _where_at(entry.name, entry.offset)


def _where_at(name: bytes, offset: int) -> str:
    return f"entry {name.decode('utf-8', 'backslashreplace')!r} (at byte {offset})"
