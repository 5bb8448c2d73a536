"""Handing out request slots to the coroutines of one process, from grants of slot times.

Where the grants come from (the PostgreSQL bucket every process shares, `ratelimit`) and what
time it is are both given to the dispatcher, so its behaviour can be tested exactly with a
fake clock and a scripted source.

- Waiters queue in FIFO order. When no slot is left, the dispatcher asks the source for a
  grant (a handful of slot times) on behalf of everyone waiting, and hands out every slot due
  within the lateness tolerance at once, so their waiters wake in the same turn of the event
  loop; later slots are handed out only as they come due, so a process never holds more than
  one grant it has not used yet (if it dies, that is all the others lose).
- A waiter that wakes up too late after its slot (a busy event loop, a stalled process) does
  not use it and takes the next one: late requests are what push an upstream's sliding
  one-second window over its limit.
- A waiter cancelled before its turn uses no slot. If asking the source fails, the first in
  line gets the error (as if it had asked itself) and the next one asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class GrantSource(Protocol):
    async def take(self, waiting: int) -> Sequence[float]:
        """Slot times (on the dispatcher's clock, ascending) for up to `waiting` requests;
        at least one."""
        ...


class SlotDispatcher:
    """`await slots.acquire()` returns at this process's next slot."""

    def __init__(
        self, source: GrantSource, *, max_lateness: float, clock: Clock | None = None
    ) -> None:
        self.max_lateness = max_lateness
        self.wait_seconds_total = 0.0  # time callers spent in acquire(), for metrics
        self.slots_dropped = 0  # slots a late waiter let go, for metrics
        self._source = source
        self._clock = clock or MonotonicClock()
        self._slots: deque[float] = deque()  # clock times this process may send at
        # Callers inside acquire(), with a slot or not: those waiting on a slot will soon be
        # back for the next one, so a grant covers all of them.
        self._waiting = 0
        self._line: deque[asyncio.Future[float]] = deque()  # callers waiting for a slot
        self._task: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        clock = self._clock
        started = clock.now()
        self._waiting += 1
        try:
            while True:
                turn: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                self._line.append(turn)
                if self._task is None or self._task.done():
                    self._task = asyncio.create_task(self._dispatch())
                slot = await turn
                delay = slot - clock.now()
                if delay > 0:
                    await clock.sleep(delay)
                if clock.now() - slot <= self.max_lateness:
                    return
                self.slots_dropped += 1
        finally:
            self._waiting -= 1
            self.wait_seconds_total += clock.now() - started

    def drop_slots(self) -> None:
        """Forget the slots granted but not handed out (the upstream said 429: they are void)."""
        self._slots.clear()

    async def close(self) -> None:
        """Stop; whoever still waits gets RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _dispatch(self) -> None:
        try:
            await self._serve()
        except BaseException as exc:
            # Closed (cancelled) or a bug: nobody may be left waiting for a slot that never comes.
            error = exc if isinstance(exc, Exception) else RuntimeError("rate limiter closed")
            while self._line:
                turn = self._line.popleft()
                if not turn.done():
                    turn.set_exception(error)
            raise

    async def _serve(self) -> None:
        line, slots = self._line, self._slots
        while line:
            if line[0].done():  # its caller was cancelled
                line.popleft()
                continue
            if not slots:
                try:
                    slots.extend(await self._source.take(self._waiting))
                except Exception as exc:
                    first = line.popleft()
                    if not first.done():
                        first.set_exception(exc)
                    continue
            horizon = self._clock.now() + self.max_lateness
            while line and slots and slots[0] <= horizon:
                turn = line.popleft()
                if not turn.done():
                    turn.set_result(slots.popleft())
            if line and slots:
                await self._clock.sleep(slots[0] - horizon)
