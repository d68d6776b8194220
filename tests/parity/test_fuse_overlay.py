"""containers-storage's layer operations on the fuse-overlayfs driver: overlay's
layout, so overlay's answers."""

from __future__ import annotations

from .contract import ParityContract


class TestFuseOverlayParity(ParityContract):
    driver_name = "fuse-overlayfs"
