"""layerstore: an event-sourced, crash-safe store of OCI image layers."""

__version__ = "0.1.0"
