"""The worker's last stage: fetched runs and failed attempts, written in batches.

One transaction per batch stores the rows and marks the queue, so the two always agree. A
batch PostgreSQL refuses is halved until the run that causes it is found and dead-lettered;
an unavailable database is waited out without blaming any run.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest import archive, queue, rollup
from ingest.api.retry import backoff
from ingest.db.driver import (
    DatabaseUnavailable,
    driver_connection,
    transaction,
    values_refused,
    wait_out_unavailable,
)
from ingest.failures import Failure, FailureKind
from ingest.normalize import RunRows
from ingest.store import store_batch

if TYPE_CHECKING:
    from ingest.worker import WorkerOptions, WorkerStats

log = structlog.get_logger("ingest.worker")

STOP = object()  # put in a stage's inbox: finish what is there, then return


@dataclass(frozen=True, slots=True)
class Stored:
    claim: queue.Claim
    rows: RunRows


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    claim: queue.Claim
    failure: Failure


Outcome = Stored | Failed


class BatchWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        owner: str,
        options: WorkerOptions,
        max_attempts: int,
        stats: WorkerStats,
        *,
        let_go: Callable[[list[uuid.UUID]], None],
        stopping: Callable[[], bool],
    ) -> None:
        self._engine, self._owner, self._options = engine, owner, options
        self._max_attempts, self._stats = max_attempts, stats
        self._let_go, self._stopping = let_go, stopping
        self._next_compaction = time.monotonic() + rollup.EVERY_S

    async def run(self, inbox: asyncio.Queue[Outcome | object]) -> None:
        """Write batches from `inbox` until STOP: up to `batch_size` outcomes, or what came
        within `flush_interval_s` of the first."""
        stopping = False
        while not stopping:
            item = await inbox.get()
            if item is STOP:
                return
            batch, stopping = await self._fill(inbox, [item])  # type: ignore[list-item]
            try:
                await self.write(batch)
            except Exception:
                # Not the runs' fault, and not a connection fault: let their leases run out
                # so that they are claimed again, rather than holding them forever.
                log.exception("batch write failed; its runs will be retried", runs=len(batch))
                self._let_go([b.claim.run_id for b in batch])

    async def _fill(
        self, inbox: asyncio.Queue[Outcome | object], batch: list[Outcome]
    ) -> tuple[list[Outcome], bool]:
        size = self._options.batch_size
        deadline = time.monotonic() + self._options.flush_interval_s
        while len(batch) < size:
            while len(batch) < size and not inbox.empty():
                item = inbox.get_nowait()
                if item is STOP:
                    return batch, True
                batch.append(item)  # type: ignore[arg-type]
            left = deadline - time.monotonic()
            if len(batch) >= size or left <= 0:
                break
            # Look again shortly rather than wake up for every run (about a thousand a
            # second): a few ms of delay, against a task switch and timer per run.
            await asyncio.sleep(min(left, 0.01))
        return batch, False

    async def write(self, batch: list[Outcome]) -> None:
        failed = [b for b in batch if isinstance(b, Failed)]
        stored = [b for b in batch if isinstance(b, Stored)]
        if failed:
            await self._retry_db(functools.partial(self._record_failures, failed))
        if stored:
            await self._store(stored)

    async def _retry_db(self, action: Callable[[], Awaitable[None]]) -> None:
        await wait_out_unavailable(action, stopping=self._stopping)

    async def _store(self, stored: list[Stored]) -> None:
        try:
            await self._retry_db(lambda: self._commit(stored))
        except DatabaseUnavailable:
            raise  # not the runs' fault: none of them is blamed
        except Exception as exc:
            # A statement error: find the run that causes it rather than failing them all.
            if len(stored) == 1:
                await self._unstorable(stored[0], exc)
                return
            half = len(stored) // 2
            await self._store(stored[:half])
            await self._store(stored[half:])

    async def _unstorable(self, s: Stored, exc: Exception) -> None:
        failure = Failure(
            kind=FailureKind.STORE_ERROR,
            detail=f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
            permanent=values_refused(exc),
            body=archive.unpack(s.rows.payload.body, s.rows.payload.encoding),
        )
        log.error("run could not be stored", run_id=str(s.claim.run_id), error=failure.reason)
        failed = Failed(claim=s.claim, failure=failure)
        await self._retry_db(functools.partial(self._record_failures, [failed]))

    async def _commit(self, stored: list[Stored]) -> None:
        poll_s = self._options.poll_unfinished_s
        done = [s.claim.run_id for s in stored if s.rows.terminal]
        polls = [queue.Requeue(s.claim.run_id, poll_s) for s in stored if not s.rows.terminal]
        started = time.monotonic()
        async with transaction(self._engine) as conn:
            result = await store_batch(conn, [s.rows for s in stored])
            completed = await queue.complete(
                conn, self._owner, done, polls, self._options.first_webhook_poll_s
            )
            await queue.record_batch(conn, self._owner, len(stored), 0, result.rows)
        stats = self._stats
        stats.batch_seconds.append(time.monotonic() - started)
        stats.done += len(done)
        stats.polled += len(polls)
        stats.rows += result.rows
        stats.batches += 1
        stats.landed.extend(
            (run.source, run.freshness_s) for run in completed.landed if run.freshness_s is not None
        )
        self._let_go([s.claim.run_id for s in stored])
        if time.monotonic() >= self._next_compaction:
            await self._compact()

    async def _compact(self) -> None:
        """Compact the daily counts and refresh percentiles; a failure is logged and tried
        again next time, never the batch's (which is committed)."""
        self._next_compaction = time.monotonic() + rollup.EVERY_S
        try:
            async with transaction(self._engine) as conn:
                await rollup.compact(await driver_connection(conn))
        except Exception as exc:  # the next compaction makes up for this one
            log.warning("daily counts not compacted", error=f"{type(exc).__name__}: {exc}")

    async def _record_failures(self, failed: list[Failed]) -> None:
        """Each failed attempt in the queue (retry later, or the dead letter), and how many
        were recorded in `ingest_batches`, in one transaction."""
        async with transaction(self._engine) as conn:
            states = [await self._record_failure(conn, f) for f in failed]
            recorded = sum(1 for state in states if state)
            if recorded:
                await queue.record_batch(conn, self._owner, 0, recorded, 0)
        self._let_go([f.claim.run_id for f in failed])
        for f, state in zip(failed, states, strict=True):
            self._count_failure(f, state)

    async def _record_failure(self, conn: AsyncConnection, f: Failed) -> str:
        """The run's new state: 'dead', 'pending', or '' when its lease was lost meanwhile
        (another worker has it now: nothing of this attempt is recorded)."""
        if f.failure.permanent:
            lettered = await queue.dead_letter(conn, self._owner, f.claim.run_id, f.failure)
            return "dead" if lettered else ""
        return await queue.fail(
            conn,
            self._owner,
            f.claim.run_id,
            f.failure,
            max_attempts=self._max_attempts,
            delay_s=self._retry_delay(f),
        )

    def _count_failure(self, f: Failed, state: str) -> None:
        run_id, reason, stats = str(f.claim.run_id), f.failure.reason, self._stats
        if not state:
            stats.lost += 1
            log.warning("run's lease was lost: another worker has it", run_id=run_id, reason=reason)
            return
        kind = f.failure.kind
        stats.failures_by_kind[kind] = stats.failures_by_kind.get(kind, 0) + 1
        if state == "dead":
            stats.dead += 1
            log.warning("run dead-lettered", run_id=run_id, kind=kind.value, reason=reason)
        else:
            stats.retried += 1
            log.info("run will be retried", run_id=run_id, kind=kind.value, reason=reason)

    def _retry_delay(self, f: Failed) -> float:
        o = self._options
        jittered = backoff(f.claim.attempt, base=o.retry_base_s, cap=o.retry_cap_s)
        # Never sooner than the API asked, nor (full jitter can draw ~0) at once.
        return max(f.failure.retry_after or 0.0, jittered, o.retry_base_s / 2)
