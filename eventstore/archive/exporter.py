"""export_layer: rebuild a layer's original tar, byte for byte, from its files and
its tar-split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from eventstore.archive.resolve import open_beneath
from eventstore.archive.tarsplit import FileRef, SparseRef, TarSplitError, TarSplitReader
from eventstore.errors import CorruptStore, InvalidArgument

OUTPUT_CHUNK = 1 << 20


def export_layer(layer_dir: Path, tarsplit_path: Path) -> Iterator[bytes]:
    """The layer's original uncompressed tar, in chunks.

    The tar-split is opened and checked now; the bytes are produced as the iterator is
    consumed, hashed on the way, and a CorruptStore is raised at the end if they do not
    have the diff digest recorded at import (a file changed or went missing).
    """
    try:
        split_fd = os.open(tarsplit_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidArgument(f"no tar-split at {tarsplit_path}") from None
    try:
        layer_fd = os.open(layer_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.close(split_fd)
        raise InvalidArgument(f"layer directory {layer_dir} cannot be opened") from None
    try:
        reader = TarSplitReader(split_fd)
    except TarSplitError as err:
        os.close(split_fd)
        os.close(layer_fd)
        raise CorruptStore(f"{tarsplit_path}: {err}") from None
    return _generate(reader, split_fd, layer_fd, tarsplit_path)


def _generate(reader: TarSplitReader, split_fd: int, layer_fd: int, tarsplit_path: Path
              ) -> Iterator[bytes]:
    digest = hashlib.sha256()
    size = 0
    pending = bytearray()
    try:
        for record in reader.records():
            if isinstance(record, (FileRef, SparseRef)):
                pieces = _payload(reader, layer_fd, record)
            else:
                pieces = (record,)
            for piece in pieces:
                pending += piece
                if len(pending) >= OUTPUT_CHUNK:
                    out = bytes(pending)
                    pending.clear()
                    digest.update(out)
                    size += len(out)
                    yield out
        if pending:
            out = bytes(pending)
            digest.update(out)
            size += len(out)
            yield out
    except TarSplitError as err:
        raise CorruptStore(f"{tarsplit_path}: {err}") from None
    finally:
        os.close(split_fd)
        os.close(layer_fd)
    footer = reader.footer
    got = "sha256:" + digest.hexdigest()
    if size != footer.diff_size or got != footer.diff_digest:
        raise CorruptStore(f"exported tar has {got} ({size} bytes), the layer was imported "
                           f"with {footer.diff_digest} ({footer.diff_size} bytes): its "
                           "files changed since")


def _payload(reader: TarSplitReader, layer_fd: int, ref: FileRef | SparseRef
             ) -> Iterator[bytes]:
    if ref.payload_id in reader.footer.blobs:
        yield from reader.blob(ref.payload_id)
        return
    shown = ref.path.decode("utf-8", "backslashreplace")
    try:
        fd = open_beneath(layer_fd, ref.path, os.O_RDONLY)
    except OSError as err:
        raise CorruptStore(f"layer file {shown} cannot be read: {err.strerror}") from None
    try:
        if isinstance(ref, FileRef):
            segments = [(0, ref.size)]
            if os.fstat(fd).st_size != ref.size:
                raise CorruptStore(f"layer file {shown} is {os.fstat(fd).st_size} bytes, "
                                   f"it was imported with {ref.size}")
        else:
            segments = ref.segments
        for offset, length in segments:
            while length:
                chunk = os.pread(fd, min(length, OUTPUT_CHUNK), offset)
                if not chunk:
                    raise CorruptStore(f"layer file {shown} is shorter than imported")
                offset += len(chunk)
                length -= len(chunk)
                yield chunk
    finally:
        os.close(fd)
