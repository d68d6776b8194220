"""The gRPC face of the snapshotter: protobuf messages in and out, store errors as the
status codes containerd's ``errdefs`` reads (NotFound, AlreadyExists,
FailedPrecondition, InvalidArgument, Unavailable)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator

import grpc
from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from eventstore import errors
from eventstore.containerd.api import mount_pb2, snapshots_pb2 as pb
from eventstore.containerd.api import snapshots_pb2_grpc
from eventstore.containerd.snapshotter import Info, ShuttingDown, SnapshotExists, Snapshotter

log = logging.getLogger("layerstore.containerd")

LIST_BATCH = 100  # infos per streamed List message
KINDS = {"active": pb.ACTIVE, "view": pb.VIEW, "committed": pb.COMMITTED}

#: (error class, status code), the first that matches wins
_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.LayerNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.AmbiguousLayer, grpc.StatusCode.INVALID_ARGUMENT),
    (SnapshotExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.NameInUse, grpc.StatusCode.ALREADY_EXISTS),
    (errors.LayerExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.RuleViolation, grpc.StatusCode.FAILED_PRECONDITION),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (errors.LogClosed, grpc.StatusCode.UNAVAILABLE),
    (errors.CorruptLog, grpc.StatusCode.DATA_LOSS),
    (errors.CorruptStore, grpc.StatusCode.DATA_LOSS),
]
#: answers containerd asks for in the normal course of things (an unpack Stats first)
_QUIET = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS)


def status_code(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _answering(method: Callable) -> Callable:
    """Run a call; a failure becomes its status code and a one-line message."""

    @functools.wraps(method)
    def call(self: "SnapshotsService", request, context: grpc.ServicerContext):
        started = time.perf_counter()
        try:
            answer = method(self, request, context)
            log.debug("%s %r: %.1f ms", method.__name__, getattr(request, "key", ""),
                      (time.perf_counter() - started) * 1000)
            return answer
        except Exception as exc:  # every failure answers the caller; none kills the server
            code = status_code(exc)
            message = str(exc) if isinstance(exc, errors.LayerStoreError) else f"{type(exc).__name__}: {exc}"
            level = logging.DEBUG if code in _QUIET else logging.WARNING
            log.log(level, "%s %r: %s (%s)", method.__name__, getattr(request, "key", ""), message, code.name)
            if isinstance(exc, errors.LogClosed) and self.on_fatal is not None:
                self.on_fatal(message)
            context.abort(code, message)
    return call


def _timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def _info(info: Info) -> pb.Info:
    return pb.Info(name=info.name, parent=info.parent, kind=KINDS[info.kind], labels=info.labels,
                   created_at=_timestamp(info.created), updated_at=_timestamp(info.updated))


def _mounts(mounts) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, options=m.options) for m in mounts]


class SnapshotsService(snapshots_pb2_grpc.SnapshotsServicer):
    """containerd.services.snapshots.v1.Snapshots on a Snapshotter. ``on_fatal`` is
    called when the store handle can no longer write (a failed fsync poisons it)."""

    def __init__(self, snapshotter: Snapshotter, on_fatal: Callable[[str], None] | None = None):
        self.snapshotter = snapshotter
        self.on_fatal = on_fatal

    @_answering
    def Prepare(self, request, context):
        mounts = self.snapshotter.prepare(request.key, request.parent, dict(request.labels))
        return pb.PrepareSnapshotResponse(mounts=_mounts(mounts))

    @_answering
    def View(self, request, context):
        mounts = self.snapshotter.view(request.key, request.parent, dict(request.labels))
        return pb.ViewSnapshotResponse(mounts=_mounts(mounts))

    @_answering
    def Mounts(self, request, context):
        return pb.MountsResponse(mounts=_mounts(self.snapshotter.mounts(request.key)))

    @_answering
    def Commit(self, request, context):
        self.snapshotter.commit(request.name, request.key, dict(request.labels), request.parent)
        return empty_pb2.Empty()

    @_answering
    def Remove(self, request, context):
        self.snapshotter.remove(request.key)
        return empty_pb2.Empty()

    @_answering
    def Stat(self, request, context):
        return pb.StatSnapshotResponse(info=_info(self.snapshotter.stat(request.key)))

    @_answering
    def Update(self, request, context):
        info = self.snapshotter.update(request.info.name, dict(request.info.labels),
                                       list(request.update_mask.paths))
        return pb.UpdateSnapshotResponse(info=_info(info))

    @_answering
    def List(self, request, context) -> Iterator[pb.ListSnapshotsResponse]:
        # read whole under the call's lock, streamed after: a slow reader holds nothing
        infos = [_info(i) for i in self.snapshotter.list(list(request.filters))]
        return iter([pb.ListSnapshotsResponse(info=infos[i:i + LIST_BATCH])
                     for i in range(0, len(infos), LIST_BATCH)])

    @_answering
    def Usage(self, request, context):
        usage = self.snapshotter.usage(request.key)
        return pb.UsageResponse(size=usage.size, inodes=usage.inodes)

    @_answering
    def Cleanup(self, request, context):
        for action in self.snapshotter.cleanup():
            log.info("cleanup: %s", action)
        return empty_pb2.Empty()
