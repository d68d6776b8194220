"""containerd's snapshots service on a layer store (docs/containerd.md).

``layerstore serve --containerd SOCKET`` runs ``server.serve``: a gRPC server on a unix
socket whose calls (``service``) become store operations (``snapshotter``). Snapshot
keys map to layer names in ``keys``, mounts are described in ``mounts``, List filters
parsed in ``filters``; ``api/`` holds the .proto files and their generated modules.
"""
