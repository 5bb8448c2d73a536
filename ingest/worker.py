"""The pipeline: claim -> fetch (concurrent, rate limited) -> normalize -> store -> complete.

Orchestration only: SQL lives in `queue` and `store`, HTTP in `api`, and the last stage (one
transaction per batch writes the rows and marks the queue) in `writer`. Stages are joined by
bounded queues and the number of runs held at once is capped, so memory stays flat however
long the queue is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.api.client import ApiClient, FetchedRun
from ingest.api.errors import ApiError, AuthError, InvalidRunId
from ingest.config import Settings
from ingest.db.driver import DatabaseUnavailable, connection, transaction, wait_out_unavailable
from ingest.failures import Failure, FailureKind
from ingest.normalize import PayloadRejected, normalize
from ingest.writer import STOP, BatchWriter, Failed, Outcome, Stored

log = structlog.get_logger("ingest.worker")
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerOptions:
    drain: bool = False
    batch_size: int = 200  # runs per store transaction
    flush_interval_s: float = 0.25  # a partial batch waits at most this long
    claim_size: int = 100
    lease_s: float = 120.0
    idle_poll_s: float = 5.0  # fallback when no NOTIFY arrives
    # How often a worker looks for a pause (`hr-ingest pause`) on its own; its claims never
    # start after one, but its held claims go back and it says so within this.
    pause_check_s: float = 1.0
    poll_unfinished_s: float = 60.0  # next fetch of a run still scheduled/running upstream
    # ... unless a webhook announced it: 5 s, then twice as long each time, up to the above.
    first_webhook_poll_s: float = queue.FIRST_WEBHOOK_POLL_S
    shutdown_grace_s: float = 30.0
    # Backoff of failed attempts, waited in the queue: 2 s, 4 s, ... capped at 15 minutes.
    retry_base_s: float = 2.0
    retry_cap_s: float = 900.0
    # Concurrent batch transactions: while one waits on PostgreSQL the next fills up, and the
    # server can use a second core.
    writers: int = 2


@dataclass
class WorkerStats:
    started: float = field(default_factory=time.monotonic)
    claimed: int = 0
    done: int = 0
    polled: int = 0  # stored, but not terminal upstream: fetched again later
    retried: int = 0
    dead: int = 0
    rows: int = 0
    batches: int = 0
    lost: int = 0  # failed attempts not recorded: another worker held the run by then
    failures_by_kind: dict[FailureKind, int] = field(default_factory=dict)
    batch_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=4096))  # metrics
    # (source, seconds from completed_at to stored) of runs that landed: metrics drain it.
    landed: deque[tuple[str, float]] = field(default_factory=lambda: deque(maxlen=16384))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class FatalApiError(Exception):
    """The API refused our credentials: no point claiming more work."""


class Worker:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        client: ApiClient,
        options: WorkerOptions | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        self.options = options or WorkerOptions()
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self._held: set[uuid.UUID] = set()  # claimed and not yet completed/failed/released
        cap = max(2 * settings.concurrency, self.options.claim_size)
        # Room for a batch being written, one filling up, and the fetches feeding it: with
        # less, fetching stalls whenever the writer waits on the database.
        self._capacity = cap + (self.options.writers + 1) * self.options.batch_size
        # Highest priority first, then in claim order: a run a webhook announced is fetched
        # next, not after the hundred claims of a backfill already held here.
        self._to_fetch: asyncio.PriorityQueue[tuple[float, int, queue.Claim | object]] = (
            asyncio.PriorityQueue(cap)
        )
        self._claim_order = itertools.count()
        self._to_store: asyncio.Queue[Outcome | object] = asyncio.Queue(2 * self.options.batch_size)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._fatal: str | None = None
        self.paused: queue.Pause | None = None  # as this worker last read it
        self._pause_read = -math.inf
        self._listener = queue.Listener(engine, self._wake.set)
        self._writer = BatchWriter(
            engine,
            self.id,
            self.options,
            settings.max_attempts,
            self.stats,
            let_go=self._let_go,
            stopping=self._stopping.is_set,
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def fatal(self) -> str | None:
        """Why the worker stopped for good (the API refused the credentials), if it did."""
        return self._fatal

    def stop(self) -> None:
        """Stop claiming; runs already being fetched finish, unstarted claims go back."""
        if not self._stopping.is_set():
            log.info("worker stopping", worker_id=self.id, held=len(self._held))
        self._stopping.set()
        self._wake.set()

    async def run(self) -> WorkerStats:
        """Process the queue until stopped (or, with drain, until nothing is left to do).
        Raises FatalApiError when the API refuses the credentials."""
        with structlog.contextvars.bound_contextvars(worker_id=self.id):
            log.info(
                "worker started", concurrency=self.settings.concurrency, drain=self.options.drain
            )
            await self._listener.ensure(startup=True)
            fetchers = [
                asyncio.create_task(self._fetch_loop()) for _ in range(self.settings.concurrency)
            ]
            writers = [
                asyncio.create_task(self._writer.run(self._to_store))
                for _ in range(self.options.writers)
            ]
            renewer = asyncio.create_task(self._renew_loop())
            try:
                await self._claim_loop()
                await self._release_unstarted()
                for _ in fetchers:
                    await self._put_to_fetch(STOP)
                _done, pending = await asyncio.wait(fetchers, timeout=self.options.shutdown_grace_s)
                for task in pending:
                    task.cancel()
                for _ in writers:
                    await self._to_store.put(STOP)
                await asyncio.gather(*writers)
            finally:
                renewer.cancel()
                for task in [*fetchers, *writers]:
                    task.cancel()
                await self._retry_db(lambda: self._release(list(self._held)), attempts=3)
                await self._listener.close()
            s = self.stats
            log.info(
                "worker stopped",
                done=s.done,
                dead=s.dead,
                retried=s.retried,
                rows=s.rows,
                runs_per_s=round(s.done / s.elapsed, 1) if s.elapsed else 0,
            )
        if self._fatal:
            raise FatalApiError(self._fatal)
        return self.stats

    # -- claim -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        o = self.options
        last_reclaim = 0.0
        while not self._stopping.is_set():
            # Cleared before looking, so that a wake-up while claiming (work arrives, a batch
            # commits) is not lost and the wait below returns at once.
            self._wake.clear()
            try:
                if await self._pause_in_force():
                    await self._idle(o.pause_check_s)
                    continue
                free = self._capacity - len(self._held)
                if free < min(o.claim_size, self._capacity // 2):
                    await self._idle(1.0)
                    continue
                if time.monotonic() - last_reclaim > o.lease_s / 4:
                    last_reclaim = time.monotonic()
                    async with transaction(self.engine) as conn:
                        await queue.reclaim_expired(conn)
                async with transaction(self.engine) as conn:
                    claims = await queue.claim(conn, self.id, min(free, o.claim_size), o.lease_s)
            except DatabaseUnavailable as exc:
                log.warning("database unreachable while claiming; retrying", error=str(exc))
                await self._idle(1.0)
                continue
            if claims:
                self.stats.claimed += len(claims)
                for c in claims:
                    if c.run_id in self._held:
                        # Our own lease ran out while we still had the run (a stalled loop)
                        # and we took it back: the attempt in flight completes it, a second
                        # one could finish first and leave the queue a poll behind the rows.
                        continue
                    self._held.add(c.run_id)
                    await self._put_to_fetch(c)
                continue
            if o.drain and await self._retry_db(self._drained):
                log.info("queue drained")
                return
            await self._listener.ensure()
            await self._idle(await self._retry_db(self._idle_wait))

    async def _pause_in_force(self) -> bool:
        """Whether claiming is paused: read every `pause_check_s`, and on every wake-up while
        paused (a resume notifies). When a pause begins, the claims not started go back."""
        if self.paused is None and time.monotonic() - self._pause_read < self.options.pause_check_s:
            return False
        self._pause_read = time.monotonic()
        async with connection(self.engine) as conn:
            pause = await queue.paused(conn)
        if pause is not None and self.paused is None:
            log.warning(
                "paused: claiming nothing until `hr-ingest resume`; runs in flight finish",
                since=pause.since.isoformat(),
                by=pause.by,
                reason=pause.reason,
            )
            await self._release_unstarted()
        elif pause is None and self.paused is not None:
            log.info("resumed: claiming again")
        self.paused = pause
        return pause is not None

    async def _put_to_fetch(self, item: queue.Claim | object) -> None:
        # STOP after every claim still waiting (at shutdown none is: they were handed back).
        rank = -item.priority if isinstance(item, queue.Claim) else math.inf
        await self._to_fetch.put((rank, next(self._claim_order), item))

    async def _drained(self) -> bool:
        if self._held:
            return False
        async with connection(self.engine) as conn:
            return await queue.outstanding(conn) == 0

    async def _idle_wait(self) -> float:
        async with connection(self.engine) as conn:
            due = await queue.next_due_in(conn)
        poll = self.options.idle_poll_s
        if self.options.drain:
            # Nothing notifies when another worker finishes (or fails) the runs it holds:
            # look often, or the drain ends up to a whole poll after the queue did.
            poll = min(poll, 0.25)
        return poll if due is None else min(due + 0.01, poll)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # -- fetch + normalize -----------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while True:
            _, _, item = await self._to_fetch.get()
            if item is STOP or self._fatal:
                return
            assert isinstance(item, queue.Claim)
            with structlog.contextvars.bound_contextvars(
                run_id=str(item.run_id), attempt=item.attempt
            ):
                outcome = await self._process(item)
            if outcome is not None:
                await self._to_store.put(outcome)

    async def _process(self, claim: queue.Claim) -> Outcome | None:
        fetched = await self._fetch(claim)
        if not isinstance(fetched, FetchedRun):
            return fetched
        try:
            rows = normalize(
                fetched.body, claim.run_id, fetched.fetched_at, document=fetched.document
            )
        except PayloadRejected as exc:
            failure = Failure(
                kind=FailureKind.PAYLOAD_REJECTED,
                detail=str(exc),
                permanent=True,
                http_status=fetched.status,
                body=fetched.body,
            )
            return Failed(claim=claim, failure=failure)
        except Exception as exc:  # a normalizer bug must not lose the body either
            log.exception("normalize crashed")
            failure = Failure(
                kind=FailureKind.NORMALIZE_ERROR,
                detail=f"{type(exc).__name__}: {exc}",
                permanent=True,
                body=fetched.body,
            )
            return Failed(claim=claim, failure=failure)
        return Stored(claim, rows)

    async def _fetch(self, claim: queue.Claim) -> FetchedRun | Failed | None:
        """The run's body, or why not (None: nothing to record, the run went back or the
        worker is stopping)."""
        try:
            return await self.client.get_run(claim.run_id)
        except AuthError as exc:
            await self._refused_credentials(claim, exc)
            return None
        except ApiError as exc:
            failure = exc.failure()
        except InvalidRunId as exc:
            failure = Failure(kind=FailureKind.INVALID_RUN_ID, detail=str(exc), permanent=True)
        except DatabaseUnavailable:
            # The shared rate limiter lost its database: not the run's fault, so it gets its
            # attempt back once the database answers again.
            log.warning("database unreachable before fetching; returning the run")
            await self._retry_db(functools.partial(self._release, [claim.run_id]))
            return None
        except Exception as exc:  # never let one run kill the worker
            log.exception("unexpected fetch error")
            detail = f"{type(exc).__name__}: {exc}"
            failure = Failure(kind=FailureKind.UNEXPECTED, detail=detail, permanent=False)
        return Failed(claim=claim, failure=failure)

    async def _refused_credentials(self, claim: queue.Claim, exc: AuthError) -> None:
        self._fatal = (
            f"the API refused the credentials (HTTP {exc.status}): check HAPPYROBOT_API_KEY"
            " and HAPPYROBOT_ORG_ID"
        )
        log.error("API refused credentials; stopping", status=exc.status)
        self._let_go([claim.run_id])
        await self._retry_db(lambda: self._release([claim.run_id]), attempts=3)
        self.stop()

    async def _retry_db(self, action: Callable[[], Awaitable[T]], attempts: int = 0) -> T:
        return await wait_out_unavailable(action, attempts=attempts, stopping=self._stopping.is_set)

    # -- leases ----------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.lease_s / 3)
            held = list(self._held)
            try:
                async with transaction(self.engine) as conn:
                    kept = await queue.renew(conn, self.id, held, self.options.lease_s)
            except Exception as exc:
                log.warning("lease renewal failed", error=str(exc))
                continue
            lost = set(held) - kept
            if lost:
                # Another worker may own these now; our completion of them will be a no-op.
                log.warning("leases lost", runs=len(lost))

    def _let_go(self, run_ids: list[uuid.UUID]) -> None:
        """These runs are no longer held; the claim loop may have room (or, draining, be done)
        and need not wait out its poll to see it."""
        self._held.difference_update(run_ids)
        self._wake.set()

    async def _release(self, run_ids: list[uuid.UUID]) -> None:
        if not run_ids:
            return
        async with transaction(self.engine) as conn:
            await queue.release(conn, self.id, run_ids)
        self._let_go(run_ids)

    async def _release_unstarted(self) -> None:
        unstarted: list[uuid.UUID] = []
        while not self._to_fetch.empty():
            _, _, item = self._to_fetch.get_nowait()
            if isinstance(item, queue.Claim):
                unstarted.append(item.run_id)
        if unstarted:
            await self._retry_db(lambda: self._release(unstarted), attempts=3)
            log.info("unstarted claims returned to the queue", runs=len(unstarted))
