"""The damage harness's built-in workload: phases in ``replay.workload``'s script
format, and the tar each layer is made from.

Every layer made from a tar holds a config file, some data, and a file unique to it
(``marker_path``: named after the alias, a token as its content), so that its data can
be found again anywhere under the root — in lost+found too. Ids and tokens follow the
seed, so that a store built with another seed (the foreign store) has other ones.
"""

from __future__ import annotations

import hashlib
import io
import tarfile

MARKER_DIR = "opt/layerstore-damage"
MARKER_PREFIX = "marker-"
FIXTURE_MTIME = 1_700_000_000

# Phases of the built-in workload; a snapshot of the metadata is taken after each but the
# last (segment 1 is still partly empty after the first). ``{X}`` is the id of alias X,
# ``{tar:X}`` its tar. The clone is taken after phase ``CLONE_AFTER`` and gets
# ``DIVERGENT`` where the store gets the phases after it; both write a checkpoint after
# the same number of events, so that the clone's checkpoint has the name of the store's.
PHASES = (
    """\
create {base} --tar {tar:base} --name base
""",
    """\
create {app} --parent {base} --tar {tar:app} --name app
hold {base} --lease build
hold {app} --lease ci
""",
    """\
create {tools} --tar {tar:tools} --name tools
hold {tools}
create {leaf} --parent {app} --tar {tar:leaf} --name leaf
create {scratch} --tar {tar:scratch}
mount {app}
mount {leaf}
delete {scratch}
create {rw} --parent {app} --writable --name rw
mount {rw}
hold {tools} --lease keep
""",
    """\
create {patch} --parent {tools} --tar {tar:patch} --name patch
names {tools} tools utils
mount {patch}
umount {patch}
create {extra} --tar {tar:extra} --name extra
hold {extra} --lease pin
""",
    """\
release {extra} --lease pin
create {spare} --parent {extra} --tar {tar:spare} --name spare
checkpoint
hold {spare} --lease spare
mount {leaf}
mount {rw}
hold {leaf} --lease audit
release {leaf} --lease audit
names {spare} spare backup
""",
    """\
hold {extra} --lease last
""",
)
CLONE_AFTER = 3
DIVERGENT = """\
hold {app} --lease other
create {forked} --tar {tar:forked} --name forked
checkpoint
release {app} --lease ci
"""
#: aliases made from a tar (they hold a marker, a config file and a data file)
TAR_ALIASES = ("base", "app", "tools", "leaf", "scratch", "patch", "extra", "spare", "forked")
#: the writable layer gets its marker written through its mount, as a container would
WRITTEN_ALIASES = ("rw",)
#: the write every case makes goes to this layer: held by leases only, so its hold count
#: is the same in every copy (recovery releases dead processes' holds, never leases)
WRITE_SUBJECT = "app"
WRITE_LEASE = "damage-harness"


def layer_id(seed: int, alias: str) -> str:
    """The id of ``alias`` in a store built with ``seed``."""
    return hashlib.sha256(f"layerstore-damage:{seed}:{alias}".encode()).hexdigest()


def marker_token(seed: int, alias: str) -> str:
    return hashlib.sha256(f"layerstore-damage-marker:{seed}:{alias}".encode()).hexdigest()[:32]


def marker_path(alias: str) -> str:
    """Where a layer's unique file sits inside the layer."""
    return f"{MARKER_DIR}/{MARKER_PREFIX}{alias}"


def config_path(alias: str) -> str:
    return f"etc/{alias}.conf"


def data_path(alias: str) -> str:
    return f"usr/share/{alias}/data.bin"


def layer_tar(alias: str, token: str) -> bytes:
    """A deterministic tar: a config file, some data, and the layer's unique marker."""
    entries: list[tuple[str, bytes | None]] = [
        ("etc", None), (config_path(alias), f"alias={alias}\n".encode()),
        ("usr", None), ("usr/share", None), (f"usr/share/{alias}", None),
        (data_path(alias), hashlib.sha256(token.encode()).digest() * 512),
        ("opt", None), (MARKER_DIR, None), (marker_path(alias), token.encode() + b"\n"),
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid = FIXTURE_MTIME, 0, 0
            if payload is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()
