"""The durable, checksummed, segmented write-ahead log (docs/log-format.md).

The names below load on first use, so that ``eventstore.log.format`` can be imported
(by the CLI's fast read path) without the event types and msgspec.
"""

__all__ = ["EventLog", "Fingerprint", "LogRecord", "Position", "Span", "VerifyReport", "DEFAULT_SEGMENT_SIZE"]


def __getattr__(name: str):
    if name in __all__:
        from eventstore.log import wal

        return getattr(wal, name)
    raise AttributeError(f"module 'eventstore.log' has no attribute {name!r}")
