"""How far the queue has to go and when it will be through: `status`, and `worker --drain`'s
progress (a bar on a terminal, a log line now and then off one).

Every run costs at least one API request, so no drain goes faster than the rate limit: the
estimate divides what is left by the slower of the pace lately and the limit, and with no
pace yet (no worker running) gives the limit's bound alone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest import queue
from ingest.api.ratelimit import configured_rate
from ingest.db.driver import connection

log = structlog.get_logger("ingest.drain")

PACE_WINDOW_S = 300.0  # `status`: the pace of the last five minutes


@dataclass(frozen=True, slots=True)
class Estimate:
    to_do: int  # runs a drain waits for: running, and pending but for polls (queue.outstanding)
    per_s: float  # runs finished (done or dead) per second lately, by every worker
    limit_per_s: float | None  # the API's rate limit, requests/s (None: not known)

    @property
    def pace(self) -> float | None:
        """The runs/s the estimate assumes: the pace lately, never above the limit."""
        if self.per_s <= 0:
            return None
        return min(self.per_s, self.limit_per_s) if self.limit_per_s else self.per_s

    @property
    def eta_s(self) -> float | None:
        """Seconds until the queue is through at that pace (None: nothing finishing)."""
        if self.to_do == 0:
            return 0.0
        return None if self.pace is None else self.to_do / self.pace

    @property
    def floor_s(self) -> float | None:
        """The fewest seconds the rate limit allows, however many workers run."""
        return None if not self.limit_per_s else self.to_do / self.limit_per_s

    @property
    def at_limit(self) -> bool:
        """Going as fast as the API allows (within 10%): more workers would not help."""
        return bool(self.limit_per_s and self.per_s >= 0.9 * self.limit_per_s)


async def estimate(
    conn: AsyncConnection, to_do: int, window_s: float, limit_per_s: float | None
) -> Estimate:
    """`to_do` runs left at the pace of the last `window_s`; the limit is the one the workers
    set in the shared bucket, else `limit_per_s` (this process's configuration)."""
    finished = await queue.finished_within(conn, window_s)
    limit = await configured_rate(conn) or limit_per_s
    return Estimate(to_do, finished / window_s, limit)


def duration(seconds: float) -> str:
    """2h05m, 3m20s, 45s: short enough for a progress line."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def describe(e: Estimate, paused: bool = False) -> str:
    """One line: what is left, how fast it goes, when it is through and what bounds that."""
    if e.to_do == 0:
        return "nothing to do"
    limit = f"the rate limit ({e.limit_per_s:g}/s)" if e.limit_per_s else None
    floor = f"{limit} allows no less than {duration(e.floor_s)}" if e.floor_s else None
    if paused:
        return f"{e.to_do:,} runs to go; paused, so no end in sight" + (
            f" ({floor})" if floor else ""
        )
    if e.eta_s is None:
        head = f"{e.to_do:,} runs to go; none finished lately"
        return f"{head}: {floor}" if floor else head
    line = f"{e.to_do:,} runs to go at {e.per_s:,.1f} runs/s: through in about {duration(e.eta_s)}"
    if e.at_limit:
        return f"{line}, at {limit}: more workers would not be faster"
    return f"{line}" + (f"; {floor}" if floor else "")


def brief(e: Estimate, paused: bool = False) -> str:
    """The bar's few words: runs/s against the limit, and the ETA."""
    of = f" of {e.limit_per_s:g}" if e.limit_per_s else ""
    if paused:
        eta = "paused"
    elif e.eta_s is not None:
        eta = f"ETA {duration(e.eta_s)}"
    elif e.floor_s is not None:
        eta = f"ETA >{duration(e.floor_s)}"
    else:
        eta = "ETA ?"
    return f"{e.per_s:,.1f}{of} runs/s · {eta}"


class DrainProgress:
    """Reads the queue every `every_s` while a drain runs and shows how far it is: a bar on a
    terminal, a structured line off one. Over the whole queue, not this worker alone."""

    def __init__(
        self,
        engine: AsyncEngine,
        limit_per_s: float | None,
        paused: Callable[[], bool],
        *,
        tty: bool | None = None,
        every_s: float | None = None,
    ) -> None:
        self.engine, self.limit_per_s, self.paused = engine, limit_per_s, paused
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every_s = every_s if every_s is not None else (1.0 if self.tty else 30.0)
        self.completed = 0  # runs the queue lost since the start (net of what was added)
        self.total: int | None = None
        self.last: Estimate | None = None
        self._started = time.monotonic()

    async def run(self) -> None:
        bar = (
            Progress(
                TextColumn("draining"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[line]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),  # stdout is the command's own output
                transient=False,
            )
            if self.tty
            else None
        )
        task = bar.add_task("drain", total=None, line="") if bar else None
        if bar:
            bar.start()
        try:
            while True:
                try:
                    await self.tick()
                except Exception as exc:  # only a display: the worker goes on, and says why
                    log.debug("drain progress not read", error=str(exc))
                if bar is not None and task is not None and self.last is not None:
                    bar.update(
                        task,
                        completed=self.completed,
                        total=self.total,
                        line=brief(self.last, self.paused()),
                    )
                elif self.last is not None:
                    e = self.last
                    log.info(
                        "drain progress",
                        to_do=e.to_do,
                        per_s=round(e.per_s, 1),
                        limit_per_s=e.limit_per_s,
                        eta_s=None if e.eta_s is None else round(e.eta_s),
                        paused=self.paused(),
                    )
                await asyncio.sleep(self.every_s)
        finally:
            if bar is not None:
                bar.stop()

    async def tick(self) -> Estimate:
        """Read the queue once; the pace is over the last minute (or since the start)."""
        window = min(60.0, max(time.monotonic() - self._started, self.every_s))
        async with connection(self.engine) as conn:
            e = await estimate(conn, await queue.outstanding(conn), window, self.limit_per_s)
        if self.last is not None:
            self.completed += max(0, self.last.to_do - e.to_do)
        self.total = max(self.total or 0, self.completed + e.to_do)
        self.last = e
        return e
