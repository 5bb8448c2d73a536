"""The slot dispatcher on virtual time: no database, no wall clock, exact slot times.

A scripted grant source stands for the PostgreSQL bucket (tests/test_ratelimit.py covers that
one); `VirtualClock` advances only when every task is waiting, to the next sleeper's time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Sequence

import pytest

from ingest.api.slots import SlotDispatcher


class VirtualClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.wakeups: list[float] = []  # every sleep's wake-up time, in the order asked
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.wakeups.append(self.t + max(0.0, seconds))
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), next(self._order), wake))
        await wake

    async def run(self, until: Callable[[], bool], limit: float = 60.0) -> None:
        """Let every task run until it waits; then jump to the next wake-up; until `until()`."""
        while True:
            for _ in range(50):  # every ready task gets to run before time moves
                await asyncio.sleep(0)
            if until():
                return
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
                heapq.heappop(self._sleepers)
            assert self._sleepers, "nothing left to wake and the condition does not hold"
            wake_at, _, wake = heapq.heappop(self._sleepers)
            assert wake_at <= limit, f"still waiting at t={wake_at}"
            self.t = wake_at
            wake.set_result(None)


class Source:
    """Grants of `per_grant` slots spaced 1/rate apart, from the first free one; or what
    `script` says, grant by grant (a list of slot times, or an exception to raise)."""

    def __init__(
        self,
        clock: VirtualClock,
        rate: float = 10.0,
        per_grant: int = 2,
        script: Sequence[Sequence[float] | Exception] = (),
    ) -> None:
        self.clock, self.rate, self.per_grant = clock, rate, per_grant
        self.script = list(script)
        self.asked: list[tuple[float, int]] = []  # (when, waiting)
        self._next_free = 0.0

    async def take(self, waiting: int) -> Sequence[float]:
        self.asked.append((self.clock.now(), waiting))
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        start = max(self.clock.now(), self._next_free)
        n = min(waiting, self.per_grant)
        self._next_free = start + n / self.rate
        return [start + i / self.rate for i in range(n)]


def acquirers(
    slots: SlotDispatcher, clock: VirtualClock, n: int
) -> tuple[list[asyncio.Task[None]], dict[int, float]]:
    """`n` callers of acquire(), started in order; `done[i]` is when caller i got through."""
    done: dict[int, float] = {}

    async def caller(i: int) -> None:
        await slots.acquire()
        done[i] = clock.now()

    return [asyncio.create_task(caller(i)) for i in range(n)], done


async def settle(clock: VirtualClock, condition: Callable[[], bool]) -> None:
    await clock.run(condition)


async def test_a_burst_is_paced_one_slot_per_interval_in_arrival_order() -> None:
    clock = VirtualClock()
    source = Source(clock, rate=10.0, per_grant=2)
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    _, done = acquirers(slots, clock, 5)
    await settle(clock, lambda: len(done) == 5)
    assert [done[i] for i in range(5)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-12)
    # One grant at a time, for everyone in acquire(); the next when the last slot is handed
    # out (its due time less the lateness tolerance), not before.
    assert [waiting for _, waiting in source.asked] == [5, 4, 2]
    assert [t for t, _ in source.asked] == pytest.approx([0.0, 0.09, 0.29], abs=1e-12)
    assert slots.slots_dropped == 0
    assert slots.wait_seconds_total == pytest.approx(0.0 + 0.1 + 0.2 + 0.3 + 0.4)
    await slots.close()


async def test_slots_due_within_the_lateness_go_together() -> None:
    clock = VirtualClock()
    source = Source(clock, script=[[0.0, 0.005, 0.02]])
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    _, done = acquirers(slots, clock, 3)
    await settle(clock, lambda: len(done) == 3)
    # 0.0 and 0.005 are handed out together at 0.0; each caller still waits for its own.
    assert done == {0: 0.0, 1: 0.005, 2: 0.02}
    assert len(source.asked) == 1
    # Nobody slept until 0.0: the dispatcher did not take a turn of its own for 0.005 (on a
    # busy event loop each extra turn makes the next slot later). It woke once, at 0.01.
    assert sorted(clock.wakeups) == pytest.approx([0.005, 0.01, 0.02], abs=1e-12)
    await slots.close()


async def test_a_grant_in_the_future_is_waited_for_exactly() -> None:
    clock = VirtualClock()
    source = Source(clock, script=[[2.5]])
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    _, done = acquirers(slots, clock, 1)
    await settle(clock, lambda: len(done) == 1)
    assert done == {0: 2.5}
    await slots.close()


async def test_a_slot_already_too_late_is_dropped_and_the_next_one_taken() -> None:
    clock = VirtualClock()
    clock.t = 5.0
    source = Source(clock, script=[[4.0], [5.3]])  # the first is a second late already
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    _, done = acquirers(slots, clock, 1)
    await settle(clock, lambda: len(done) == 1)
    assert done == {0: 5.3} and slots.slots_dropped == 1
    await slots.close()


async def test_dropped_slots_are_not_handed_out() -> None:
    clock = VirtualClock()
    source = Source(clock, script=[[0.0, 1.0, 2.0], [7.0, 8.0]])
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    _, done = acquirers(slots, clock, 1)
    await settle(clock, lambda: len(done) == 1)
    slots.drop_slots()  # a 429: the rest of the grant is void
    _, later = acquirers(slots, clock, 2)
    await settle(clock, lambda: len(later) == 2)
    assert done == {0: 0.0} and later == {0: 7.0, 1: 8.0}
    await slots.close()


async def test_after_a_429_the_callers_in_line_wait_for_the_next_grant() -> None:
    clock = VirtualClock()
    # The bucket pauses until 7.0 after the 429: its next grant starts there.
    source = Source(clock, script=[[0.0, 1.0, 2.0], [7.0, 7.1]])
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    _, done = acquirers(slots, clock, 3)

    async def a_429_at(t: float) -> None:
        await clock.sleep(t)
        slots.drop_slots()

    penalty = asyncio.create_task(a_429_at(0.5))
    await settle(clock, lambda: len(done) == 3)
    assert penalty.done() and done == {0: 0.0, 1: 7.0, 2: 7.1}
    # Asked again when the void slot 1.0 would have been handed out, not before.
    assert [t for t, _ in source.asked] == pytest.approx([0.0, 0.99], abs=1e-12)
    await slots.close()


async def test_a_caller_cancelled_before_its_turn_uses_no_slot() -> None:
    clock = VirtualClock()
    source = Source(clock, rate=10.0, per_grant=1)
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    tasks, done = acquirers(slots, clock, 3)
    await settle(clock, lambda: 0 in done)
    tasks[1].cancel()
    await settle(clock, lambda: len(done) == 2)
    assert done == pytest.approx({0: 0.0, 2: 0.1}, abs=1e-12)
    assert len(source.asked) == 2  # the cancelled caller's slot went to the next one
    await slots.close()


async def test_a_caller_cancelled_behind_others_uses_no_slot_either() -> None:
    clock = VirtualClock()
    source = Source(clock, script=[[1.0, 1.0, 1.1]])  # two tokens of a burst, then paced
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    tasks, done = acquirers(slots, clock, 3)
    await settle(clock, lambda: bool(source.asked))
    tasks[1].cancel()  # second in line when both 1.0 slots are handed out together
    await settle(clock, lambda: len(done) == 2)
    assert done == {0: 1.0, 2: 1.0}
    await slots.close()


async def test_a_failing_source_fails_the_first_in_line_and_the_next_asks_again() -> None:
    clock = VirtualClock()
    source = Source(clock, script=[ConnectionError("bucket down"), [0.5]])
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    tasks, done = acquirers(slots, clock, 2)
    await settle(clock, lambda: 1 in done)
    with pytest.raises(ConnectionError, match="bucket down"):
        await tasks[0]
    assert done == {1: 0.5} and len(source.asked) == 2
    await slots.close()


async def test_close_fails_every_waiter_in_line_at_once() -> None:
    clock = VirtualClock()
    source = Source(clock, script=[[0.0, 0.004, 5.0]])
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    tasks, done = acquirers(slots, clock, 4)
    await settle(clock, lambda: 0 in done)  # 0.0 and 0.004 handed out, 5.0 not yet
    await slots.close()
    await settle(clock, lambda: tasks[2].done() and tasks[3].done())
    assert clock.now() == 0.0  # failed at once, not at their slots
    for waiter in tasks[2:]:
        with pytest.raises(RuntimeError, match="rate limiter closed"):
            waiter.result()
    # A caller already holding its slot still goes at it.
    await settle(clock, lambda: 1 in done)
    assert done == {0: 0.0, 1: 0.004}


async def test_a_callers_wait_is_counted_whatever_the_outcome() -> None:
    clock = VirtualClock()
    source = Source(clock, script=[RuntimeError("no"), [3.0]])
    slots = SlotDispatcher(source, max_lateness=0.01, clock=clock)
    with pytest.raises(RuntimeError):
        await slots.acquire()
    _, done = acquirers(slots, clock, 1)
    await settle(clock, lambda: len(done) == 1)
    assert slots.wait_seconds_total == pytest.approx(3.0)
    await slots.close()
