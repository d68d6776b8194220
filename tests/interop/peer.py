"""containers-storage and skopeo, driven through their command lines, each store in
its own graph and run roots (never the machine's /var/lib/containers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.store.support import unmount_everything_under

TOOLS = ("skopeo", "umoci", "containers-storage")

# containers/storage's compression enum (pkg/archive): what its `layers --json` says
COMPRESSION_NAMES = {0: "none", 1: "bzip2", 2: "gzip", 3: "xz", 4: "zstd"}


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def skip_reason() -> str | None:
    """Why the interop tests cannot run here (None: they can)."""
    missing = missing_tools()
    if missing:
        return f"interop tools not installed: {', '.join(missing)} (.ci/run installs them)"
    if os.geteuid() != 0:
        return "the interop tests run as root (device nodes, trusted.* xattrs, overlay mounts)"
    from eventstore.drivers import driver_class

    reason = driver_class("overlay").supported(Path(tempfile.gettempdir()) / "layerstore-probe" / "overlay")
    return f"the overlay driver cannot run here: {reason}" if reason else None


_reason = skip_reason()
requires_peers = pytest.mark.skipif(_reason is not None, reason=_reason or "")


class ContainersStorage:
    """One containers/storage store (overlay driver) under ``base``."""

    def __init__(self, base: Path):
        self.base = base
        self.graph = base / "graph"
        self.run = base / "run"

    def cli(self, *args: str) -> str:
        proc = subprocess.run(["containers-storage", "--graph", str(self.graph), "--run", str(self.run),
                               "--storage-driver", "overlay", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"containers-storage {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def reference(self, name: str) -> str:
        # skopeo 1.9.3 (containers/image 5.23): containers-storage:[DRIVER@GRAPHROOT+RUNROOT]NAME
        return f"containers-storage:[overlay@{self.graph}+{self.run}]{name}"

    def copy_from(self, layout_ref: str, name: str) -> None:
        """``skopeo copy oci:LAYOUT[:TAG]`` into this store as image ``name``."""
        proc = subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout_ref}",
                               self.reference(name)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"skopeo copy oci:{layout_ref} failed: {proc.stderr.strip()}")

    def layers(self) -> dict[str, dict]:
        return {layer["id"]: layer for layer in json.loads(self.cli("layers", "--json"))}

    def mount(self, layer_id: str) -> Path:
        return Path(self.cli("mount", layer_id).strip())

    def unmount(self, layer_id: str) -> None:
        self.cli("unmount", layer_id)

    def shutdown(self) -> None:
        """Unmount everything (its layers, and the private bind mount of its overlay
        home that the driver makes)."""
        if self.graph.exists():
            subprocess.run(["containers-storage", "--graph", str(self.graph), "--run", str(self.run),
                            "--storage-driver", "overlay", "shutdown", "--force"], capture_output=True)
        unmount_everything_under(self.base)
