"""containerd's snapshots API: our .proto files and the modules generated from them
(checked in; ``make protos`` regenerates them, docs/containerd.md)."""
