"""The durable, checksummed, segmented write-ahead log (docs/log-format.md)."""

from eventstore.log.wal import DEFAULT_SEGMENT_SIZE, EventLog, LogRecord, Position, VerifyReport

__all__ = ["EventLog", "LogRecord", "Position", "VerifyReport", "DEFAULT_SEGMENT_SIZE"]
