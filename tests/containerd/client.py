"""A containerd-side view of the server for tests: the snapshotter calls through a real
gRPC client on the unix socket (containerd's proxy does the same), and the returned
mounts mounted for real, the way containerd's ``mount.All`` does."""

from __future__ import annotations

import ctypes
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2

from eventstore.containerd.api import snapshots_pb2 as pb
from eventstore.containerd.api import snapshots_pb2_grpc

KIND = {pb.ACTIVE: "active", pb.VIEW: "view", pb.COMMITTED: "committed"}
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class Client:
    """containerd's Snapshotter interface over the wire; errors stay grpc.RpcError."""

    def __init__(self, socket_path: Path):
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.stub = snapshots_pb2_grpc.SnapshotsStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def prepare(self, key: str, parent: str = "", labels: dict | None = None) -> list:
        return list(self.stub.Prepare(pb.PrepareSnapshotRequest(key=key, parent=parent, labels=labels or {})).mounts)

    def view(self, key: str, parent: str = "", labels: dict | None = None) -> list:
        return list(self.stub.View(pb.ViewSnapshotRequest(key=key, parent=parent, labels=labels or {})).mounts)

    def mounts(self, key: str) -> list:
        return list(self.stub.Mounts(pb.MountsRequest(key=key)).mounts)

    def commit(self, name: str, key: str, labels: dict | None = None, parent: str = "") -> None:
        self.stub.Commit(pb.CommitSnapshotRequest(name=name, key=key, labels=labels or {}, parent=parent))

    def remove(self, key: str) -> None:
        self.stub.Remove(pb.RemoveSnapshotRequest(key=key))

    def stat(self, key: str) -> pb.Info:
        return self.stub.Stat(pb.StatSnapshotRequest(key=key)).info

    def update(self, info: pb.Info, *paths: str) -> pb.Info:
        mask = field_mask_pb2.FieldMask(paths=list(paths))
        return self.stub.Update(pb.UpdateSnapshotRequest(info=info, update_mask=mask)).info

    def list(self, *filters: str) -> list[pb.Info]:
        return [info for response in self.stub.List(pb.ListSnapshotsRequest(filters=list(filters)))
                for info in response.info]

    def usage(self, key: str) -> pb.UsageResponse:
        return self.stub.Usage(pb.UsageRequest(key=key))

    def cleanup(self) -> None:
        self.stub.Cleanup(pb.CleanupRequest())


def failure(call, *args, **kwargs) -> grpc.RpcError:
    """The RpcError ``call`` must raise."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{call.__name__}{args} succeeded, an error was expected")


def code(call, *args, **kwargs) -> grpc.StatusCode:
    return failure(call, *args, **kwargs).code()


# --- mounting what the server describes -----------------------------------------------------

def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount_one(mount, target: Path) -> None:
    options = list(mount.options)
    if mount.type == "bind":
        _check(_libc.mount(os.fsencode(mount.source), os.fsencode(target), None, MS_BIND | MS_REC, None),
               f"bind {mount.source}")
        if "ro" in options:
            _check(_libc.mount(None, os.fsencode(target), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None),
                   f"remount ro {target}")
        return
    assert mount.type == "overlay", mount
    data = ",".join(options)
    if len(data) < os.sysconf("SC_PAGESIZE") - 512:
        _check(_libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, data.encode()), f"overlay on {target}")
        return
    # containerd's compactLowerdirOption: lower dirs relative to their common parent,
    # mounted from a child process whose working directory is that parent
    lowers = next(o for o in options if o.startswith("lowerdir=")).removeprefix("lowerdir=").split(":")
    common = os.path.commonpath(lowers)
    relative = [os.path.relpath(p, common) for p in lowers]
    data = ",".join(o if not o.startswith("lowerdir=") else "lowerdir=" + ":".join(relative) for o in options)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", data, str(target)], cwd=common, check=True,
                   capture_output=True)


def unmount(target: Path) -> None:
    if _libc.umount2(os.fsencode(target), 0) != 0:
        _libc.umount2(os.fsencode(target), MNT_DETACH)


@contextmanager
def mounted(mounts: list, target: Path):
    """``mounts`` mounted on ``target`` (made if needed) for the block."""
    target.mkdir(parents=True, exist_ok=True)
    for mount in mounts:
        _mount_one(mount, target)
    try:
        yield target
    finally:
        unmount(target)
