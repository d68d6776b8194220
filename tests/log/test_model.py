"""Random appends, batches, reopens and crashes that tear the tail: the log always holds
exactly the model's acknowledged records, in order, under gap-free LSNs.

A crash that tears the last record loses it, although it was acknowledged: that is the
power failure the torn-tail rule stands for (the sync reached a cache that lied), so the
model drops it too. Garbage or zeros after the last record lose nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventstore.events import Event
from eventstore.log import EventLog

from .support import Disk, layer

SEGMENT_SIZE = 512  # small, so that sequences cross segments

garbage = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.integers(1, 8192).map(lambda n: b"\0" * n),
    st.binary(min_size=1, max_size=40).map(lambda b: b + b"\0" * 4096),
)


class LogUnderCrashes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="log-model-"))
        self.root = self.tmp / "store"
        self.disk = Disk(self.root)
        self.log = EventLog.open(self.root, segment_size=SEGMENT_SIZE)
        self.records: list[list[Event]] = []  # the model: every surviving acknowledged record
        self.written = 0

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.tmp)

    def events(self, count: int) -> list[Event]:
        self.written += count
        return [layer(n) for n in range(self.written - count, self.written)]

    def acknowledged(self) -> list[Event]:
        return [event for record in self.records for event in record]

    def crash_and_reopen(self, damage) -> None:
        self.log.close()
        damage(self.disk.last_segment())
        self.log = EventLog.open(self.root, segment_size=SEGMENT_SIZE)

    @rule()
    def append(self) -> None:
        [event] = self.events(1)
        assert self.log.append(event) == len(self.acknowledged()) + 1
        self.records.append([event])

    @rule(size=st.integers(1, 12))
    def append_many(self, size: int) -> None:
        batch = self.events(size)
        first = len(self.acknowledged()) + 1
        assert self.log.append_many(batch) == list(range(first, first + size))
        self.records.append(batch)

    @rule()
    def reopen(self) -> None:
        self.crash_and_reopen(lambda segment: None)

    @precondition(lambda self: self.disk.records(self.disk.last_segment()))
    @rule(data=st.data())
    def crash_tearing_the_last_record(self, data) -> None:
        last = self.disk.last_record()
        cut = data.draw(st.integers(last.offset, last.end - 1), label="cut at")
        self.crash_and_reopen(lambda segment: self.disk.truncate(segment, cut))
        self.records.pop()

    @rule(tail=garbage)
    def crash_leaving_garbage_after_the_last_record(self, tail: bytes) -> None:
        self.crash_and_reopen(lambda segment: self.disk.append(segment, tail))

    @invariant()
    def log_holds_exactly_the_acknowledged_records(self) -> None:
        expected = self.acknowledged()
        assert list(self.log.events()) == list(enumerate(expected, 1))
        assert self.log.last_lsn == len(expected)


LogUnderCrashes.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_log_under_crashes = LogUnderCrashes.TestCase
