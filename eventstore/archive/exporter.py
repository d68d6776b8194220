"""export_layer: rebuild a layer's original tar, byte for byte, from its files and
its tar-split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from isal.isal_zlib import crc32

from eventstore.archive.resolve import open_beneath
from eventstore.archive.tarsplit import FileRef, SparseRef, TarSplitError, TarSplitReader
from eventstore.errors import CorruptStore, InvalidArgument

OUTPUT_CHUNK = 1 << 20


class DamagedFile(CorruptStore):
    """A layer file is missing or differs from what the import stored."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"layer file {path} {reason}")
        self.path = path


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
                if len(piece) < OUTPUT_CHUNK // 4:  # gather small pieces
                    pending += piece
                    if len(pending) < OUTPUT_CHUNK:
                        continue
                    piece = b""
                if pending:
                    out = bytes(pending)
                    pending.clear()
                    digest.update(out)
                    size += len(out)
                    yield out
                if piece:  # a big one goes out as it is
                    piece = bytes(piece)
                    digest.update(piece)
                    size += len(piece)
                    yield piece
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
    """The payload of one FILE or SPARSE record, checked against its CRC."""
    if ref.payload_id in reader.footer.blobs:
        yield from reader.blob(ref.payload_id)  # crc-checked by the frame
        return
    shown = ref.path.decode("utf-8", "backslashreplace")
    try:
        fd = open_beneath(layer_fd, ref.path, os.O_RDONLY)
    except OSError as err:
        raise DamagedFile(shown, f"cannot be read: {err.strerror}") from None
    try:
        if isinstance(ref, FileRef):
            segments = [(0, ref.size)]
            size = os.fstat(fd).st_size
            if size != ref.size:
                raise DamagedFile(shown, f"is {size} bytes, it was imported with {ref.size}")
        else:
            segments = ref.segments
        crc = 0
        for offset, length in segments:
            while length:
                chunk = os.pread(fd, min(length, OUTPUT_CHUNK), offset)
                if not chunk:
                    raise DamagedFile(shown, "is shorter than imported")
                crc = crc32(chunk, crc)
                offset += len(chunk)
                length -= len(chunk)
                yield chunk
        if crc != ref.crc:
            raise DamagedFile(shown, "changed since it was imported (checksum differs)")
    finally:
        os.close(fd)


def first_damaged_path(layer_dir: Path, tarsplit_path: Path) -> str | None:
    """The first layer file (or the tar-split itself) whose bytes are not what the
    import stored, or None when all are intact."""
    try:
        chunks = export_layer(layer_dir, tarsplit_path)
    except (CorruptStore, InvalidArgument):
        return str(tarsplit_path)
    try:
        for _ in chunks:
            pass
    except DamagedFile as err:
        return err.path
    except CorruptStore:
        return str(tarsplit_path)
    return None


def stored_files(tarsplit_path: Path) -> list[bytes]:
    """The paths (relative to the layer's directory) of every regular file the import
    stored, as its tar-split names them."""
    fd = os.open(tarsplit_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        reader = TarSplitReader(fd)
        return [r.path for r in reader.records() if isinstance(r, (FileRef, SparseRef))]
    except TarSplitError as err:
        raise CorruptStore(f"{tarsplit_path}: {err}") from None
    finally:
        os.close(fd)
