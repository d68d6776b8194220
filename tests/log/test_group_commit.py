"""Group commit: threads appending at once share fdatasyncs, and every one of them still
gets distinct, gap-free LSNs and a durable record."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from eventstore.errors import LogClosed
from eventstore.log import EventLog
from eventstore.log.group_commit import GroupCommitter

from .support import layer, read_log

THREADS = 8
APPENDS = 40


@pytest.fixture
def slow_syncs(monkeypatch):
    """Count fdatasyncs, each made as slow as a real disk's so that appends overlap."""
    calls: list[int] = []
    real = os.fdatasync

    def slow(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.001)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow)
    return calls


def run_threads(count: int, work) -> None:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        start.wait()
        try:
            work(n)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_appends_get_gap_free_lsns_and_share_syncs(root, slow_syncs):
    got: dict[int, list[int]] = {n: [] for n in range(THREADS)}
    with EventLog.open(root) as log:
        run_threads(THREADS, lambda n: [got[n].append(log.append(layer(f"{n}-{i}")))
                                        for i in range(APPENDS)])
    total = THREADS * APPENDS
    assert sorted(lsn for lsns in got.values() for lsn in lsns) == list(range(1, total + 1))
    assert all(lsns == sorted(lsns) for lsns in got.values())
    assert len(slow_syncs) < total
    events = dict(read_log(root))
    for n, lsns in got.items():
        assert [events[lsn] for lsn in lsns] == [layer(f"{n}-{i}") for i in range(APPENDS)]


def test_concurrent_batches_stay_whole_and_contiguous(root, slow_syncs):
    got: dict[int, list[list[int]]] = {n: [] for n in range(THREADS)}

    def work(n: int) -> None:
        for i in range(10):
            got[n].append(log.append_many([layer(f"{n}-{i}-{j}") for j in range(1 + (n + i) % 5)]))

    with EventLog.open(root) as log:
        run_threads(THREADS, work)
    events = dict(read_log(root))
    assert sorted(events) == list(range(1, len(events) + 1))
    for n, batches in got.items():
        for i, lsns in enumerate(batches):
            assert lsns == list(range(lsns[0], lsns[0] + len(lsns)))
            assert [events[lsn] for lsn in lsns] == [layer(f"{n}-{i}-{j}") for j in range(len(lsns))]


def test_failed_sync_fails_the_whole_group_and_every_later_append(root, monkeypatch):
    calls = []

    def failing(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.01)  # let the other threads queue behind this sync
        raise OSError(errno.EIO, "injected EIO")

    outcomes: list[str] = []
    with EventLog.open(root) as log:
        monkeypatch.setattr(os, "fdatasync", failing)

        def work(n: int) -> None:
            for i in range(5):
                try:
                    log.append(layer(f"{n}-{i}"))
                    outcomes.append("acknowledged")
                except LogClosed:
                    outcomes.append("closed")

        run_threads(THREADS, work)
    assert outcomes == ["closed"] * THREADS * 5
    assert len(calls) == 1


def test_a_group_never_exceeds_its_event_limit():
    groups: list[int] = []
    lsn = 1
    gate = threading.Event()

    def write_group(events: list) -> int:
        nonlocal lsn
        gate.wait()  # hold the first leader so that the rest pile up
        groups.append(len(events))
        first, lsn = lsn, lsn + len(events)
        return first

    committer = GroupCommitter(write_group, max_group_events=10)
    results: dict[int, int] = {}

    def submit(n: int) -> None:
        results[n] = committer.submit([n] * 3)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join()
    assert max(groups) <= 10 and sum(groups) == 36
    assert sorted(results.values()) == list(range(1, 37, 3))


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt, which would end the test run if it escaped."""


@pytest.fixture
def interrupt_main(monkeypatch):
    """``interrupt_main(before_raising)`` sends SIGINT to this (the main) thread from a
    timer; the handler runs ``before_raising`` and raises ``Interrupted``."""
    import signal

    assert threading.current_thread() is threading.main_thread()
    main = threading.get_ident()
    timers = []

    def arm(before_raising=lambda: None, delay: float = 0.05) -> None:
        def handler(signum, frame):
            before_raising()
            raise Interrupted()

        previous = signal.signal(signal.SIGINT, handler)
        timers.append(previous)
        threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT)).start()

    yield arm
    if timers:
        signal.signal(signal.SIGINT, timers[0])


def blocked_committer():
    """A committer whose first group's write blocks until released, and its log."""
    entered, release, written = threading.Event(), threading.Event(), []

    def write_group(events: list) -> int:
        if not written:
            entered.set()
            release.wait(timeout=5)
        first = len(written) + 1
        written.extend(events)
        return first

    return GroupCommitter(write_group), entered, release, written


def start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)
    thread.start()
    return thread


def test_waiter_interrupted_in_the_queue_leaves_it_and_harms_no_one(interrupt_main):
    committer, entered, release, written = blocked_committer()
    leader = start(committer.submit, ["leader"])
    assert entered.wait(timeout=5)
    interrupt_main()
    with pytest.raises(Interrupted):
        committer.submit(["main"])
    others = [start(committer.submit, [f"other-{i}"]) for i in range(3)]
    release.set()
    for t in [leader, *others]:
        t.join(timeout=5)
        assert not t.is_alive()
    assert written[0] == "leader" and sorted(written[1:]) == ["other-0", "other-1", "other-2"]


def test_waiter_interrupted_after_being_handed_the_lead_still_leads(interrupt_main):
    committer, entered, release, written = blocked_committer()
    leader = start(committer.submit, ["leader"])
    assert entered.wait(timeout=5)

    def finish_the_leaders_group() -> None:
        # While this thread is in its handler, the leader finishes and hands it the lead.
        others.extend(start(committer.submit, [f"other-{i}"]) for i in range(3))
        time.sleep(0.05)
        release.set()
        leader.join(timeout=5)

    others: list[threading.Thread] = []
    interrupt_main(finish_the_leaders_group)
    with pytest.raises(Interrupted):
        committer.submit(["main"])
    for t in others:
        t.join(timeout=5)
        assert not t.is_alive()
    # The interrupted caller's events were written: its outcome is unknown to it, as
    # with any interrupted append, and nobody was left waiting for a leader.
    assert written[:2] == ["leader", "main"] and len(written) == 5
