"""A worker's statements: claim under a lease, renew, complete, fail, dead-letter, release."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.db.driver import Db, driver_connection, rowcount
from ingest.failures import Failure

# Pending only to poll a run not terminal upstream yet: not work `worker --drain` waits for.
POLLING = "state = 'pending' AND awaiting_terminal"
OUTSTANDING = f"state = 'running' OR (state = 'pending' AND NOT ({POLLING}))"


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: uuid.UUID
    attempt: int
    priority: int = 0  # a webhook's runs go ahead of the claims a worker holds already


@dataclass(frozen=True, slots=True)
class Requeue:
    """A run stored fine but not terminal upstream yet: poll it again after `delay_s`."""

    run_id: uuid.UUID
    delay_s: float


async def claim(conn: AsyncConnection, owner: str, limit: int, lease_s: float) -> list[Claim]:
    """Take up to `limit` due runs under a lease; SKIP LOCKED so workers never collide.
    Nothing while paused (ingest.queue.control): not one claim commits after a pause has."""
    db = await driver_connection(conn)
    rows = await db.fetch(
        """
        WITH due AS (
            SELECT run_id FROM ingest_queue
            WHERE state = 'pending' AND available_at <= now()
                AND NOT EXISTS (SELECT FROM ingest_paused())
            ORDER BY priority DESC, available_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE ingest_queue q
        SET state = 'running', lease_owner = $2,
            lease_expires_at = now() + make_interval(secs => $3),
            attempts = q.attempts + 1, awaiting_terminal = false, updated_at = now()
        FROM due WHERE q.run_id = due.run_id
        RETURNING q.run_id, q.attempts, q.priority
        """,
        limit,
        owner,
        lease_s,
    )
    return [
        Claim(cast(uuid.UUID, r["run_id"]), cast(int, r["attempts"]), cast(int, r["priority"]))
        for r in rows
    ]


async def reclaim_expired(conn: AsyncConnection) -> int:
    """Put runs whose lease ran out (their worker died) back in line; returns how many."""
    db = await driver_connection(conn)
    status = await db.execute(
        """
        UPDATE ingest_queue SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL,
            available_at = now(), updated_at = now()
        WHERE run_id IN (
            SELECT run_id FROM ingest_queue
            WHERE state = 'running' AND lease_expires_at < now()
            FOR UPDATE SKIP LOCKED
        )
        """
    )
    return rowcount(status)


async def renew(
    conn: AsyncConnection, owner: str, run_ids: Sequence[uuid.UUID], lease_s: float
) -> set[uuid.UUID]:
    """Extend our leases; returns the runs we still hold (a lost one must not be completed)."""
    if not run_ids:
        return set()
    db = await driver_connection(conn)
    rows = await db.fetch(
        """
        UPDATE ingest_queue SET lease_expires_at = now() + make_interval(secs => $3)
        WHERE run_id = ANY($1::uuid[]) AND state = 'running' AND lease_owner = $2
        RETURNING run_id
        """,
        list(run_ids),
        owner,
        lease_s,
    )
    return {cast(uuid.UUID, r["run_id"]) for r in rows}


# A poll of a run a webhook announced comes sooner: it was announced because it is about to
# finish (5 s, 10 s, 20 s, ... up to the caller's delay, a minute by default).
FIRST_WEBHOOK_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class Landed:
    """A run stored finished upstream for the first time: how it came, and how long after its
    completed_at (None: the API did not say when it completed)."""

    source: str
    freshness_s: float | None


@dataclass(frozen=True, slots=True)
class Completed:
    held: int  # queue rows we still held, and updated
    landed: list[Landed]


async def complete(
    conn: AsyncConnection,
    owner: str,
    done: Sequence[uuid.UUID],
    polls: Sequence[Requeue] = (),
    first_webhook_poll_s: float = FIRST_WEBHOOK_POLL_S,
) -> Completed:
    """Mark stored runs done (or pending again to poll a non-terminal run), in the caller's
    transaction so the rows and the queue agree. A run enqueued again while it ran goes
    back to pending for one more fetch.

    A done run lands the first time it is stored finished: new to the queue, or polled until
    now (a refresh of a run stored finished before is not a landing). Its landed_at and
    freshness (now - the stored run's completed_at) are kept for `status`, and returned."""
    db = await driver_connection(conn)
    n = 0
    landed: list[Landed] = []
    if done:
        rows = await db.fetch(
            """
            UPDATE ingest_queue q SET
                state = CASE WHEN refresh_requested THEN 'pending' ELSE 'done' END,
                available_at = now(), refresh_requested = false, attempts = 0,
                lease_owner = NULL, lease_expires_at = NULL, last_error = NULL,
                finished_at = now(), updated_at = now(), polls = 0,
                landed_at = CASE WHEN l.landing THEN now() ELSE q.landed_at END,
                freshness_s = CASE WHEN l.landing THEN extract(
                    epoch FROM clock_timestamp()
                        - (SELECT r.completed_at FROM runs AS r WHERE r.id = q.run_id)
                )::float8 ELSE q.freshness_s END
            FROM (
                SELECT run_id, landed_at IS NULL AND (finished_at IS NULL OR polls > 0)
                    AS landing
                FROM ingest_queue WHERE run_id = ANY($1::uuid[])
            ) AS l
            WHERE q.run_id = l.run_id AND q.state = 'running' AND q.lease_owner = $2
            RETURNING q.source, q.freshness_s, l.landing
            """,
            list(done),
            owner,
        )
        n += len(rows)
        landed = [
            Landed(cast(str, r["source"]), cast(float | None, r["freshness_s"]))
            for r in rows
            if r["landing"]
        ]
    if polls:
        status = await db.execute(
            """
            UPDATE ingest_queue q SET
                state = 'pending', awaiting_terminal = NOT q.refresh_requested,
                available_at = CASE
                    WHEN q.refresh_requested THEN now()
                    WHEN q.source = 'webhook' THEN now() + make_interval(
                        secs => least(p.delay, $4 * power(2, least(q.polls, 12))))
                    ELSE now() + make_interval(secs => p.delay) END,
                refresh_requested = false, attempts = 0, polls = least(q.polls + 1, 32767),
                lease_owner = NULL, lease_expires_at = NULL, last_error = NULL,
                finished_at = now(), updated_at = now()
            FROM unnest($1::uuid[], $2::float8[]) AS p(run_id, delay)
            WHERE q.run_id = p.run_id AND q.state = 'running' AND q.lease_owner = $3
            """,
            [p.run_id for p in polls],
            [p.delay_s for p in polls],
            owner,
            first_webhook_poll_s,
        )
        n += rowcount(status)
    return Completed(held=n, landed=landed)


async def fail(
    conn: AsyncConnection,
    owner: str,
    run_id: uuid.UUID,
    failure: Failure,
    *,
    max_attempts: int,
    delay_s: float = 0.0,
) -> str:
    """A failed attempt: the next one waits `delay_s` in the queue (no lease held), or the
    run is dead-lettered once it has had `max_attempts`. Returns the new state ('pending',
    'dead', or '' if the run is not ours any more: nothing is recorded then)."""
    db = await driver_connection(conn)
    attempts = cast(
        int | None,
        await db.fetchval(
            "SELECT attempts FROM ingest_queue WHERE run_id = $1 AND state = 'running'"
            " AND lease_owner = $2 FOR UPDATE",
            run_id,
            owner,
        ),
    )
    if attempts is None:
        return ""
    if attempts >= max_attempts:
        reason = f"{failure.reason} (after {attempts} attempts)"
        return "dead" if await _bury(db, owner, run_id, failure, reason) else ""
    await db.execute(
        """
        UPDATE ingest_queue SET state = 'pending', last_error = $3,
            available_at = now() + make_interval(secs => $4),
            lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
        WHERE run_id = $1 AND lease_owner = $2
        """,
        run_id,
        owner,
        failure.reason,
        delay_s,
    )
    return "pending"


async def dead_letter(
    conn: AsyncConnection, owner: str, run_id: uuid.UUID, failure: Failure
) -> bool:
    """Give up on a run for good: state dead, its failure kept with the raw body. False when
    the run is not ours any more (its lease was lost): nothing is recorded then."""
    db = await driver_connection(conn)
    return await _bury(db, owner, run_id, failure, failure.reason)


async def _bury(db: Db, owner: str, run_id: uuid.UUID, failure: Failure, reason: str) -> bool:
    attempts = await db.fetchval(  # None: not ours any more
        """
        UPDATE ingest_queue SET state = 'dead', last_error = $3, lease_owner = NULL,
            lease_expires_at = NULL, refresh_requested = false, finished_at = now(),
            updated_at = now()
        WHERE run_id = $1 AND state = 'running' AND lease_owner = $2
        RETURNING attempts
        """,
        run_id,
        owner,
        reason,
    )
    if attempts is None:
        return False
    await db.execute(
        """
        INSERT INTO dead_letters (run_id, kind, reason, http_status, body, attempts)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (run_id) DO UPDATE SET kind = excluded.kind, reason = excluded.reason,
            http_status = excluded.http_status, body = excluded.body,
            attempts = excluded.attempts, created_at = now()
        """,
        run_id,
        failure.kind.value,
        reason,
        failure.http_status,
        failure.body,
        attempts,
    )
    return True


async def release(conn: AsyncConnection, owner: str, run_ids: Iterable[uuid.UUID]) -> int:
    """Hand back claims we never started (shutdown, or the API key was refused): they did
    not use an attempt."""
    ids = list(run_ids)
    if not ids:
        return 0
    db = await driver_connection(conn)
    status = await db.execute(
        """
        UPDATE ingest_queue SET state = 'pending', attempts = greatest(attempts - 1, 0),
            lease_owner = NULL, lease_expires_at = NULL, available_at = now(),
            updated_at = now()
        WHERE run_id = ANY($1::uuid[]) AND state = 'running' AND lease_owner = $2
        """,
        ids,
        owner,
    )
    return rowcount(status)


async def outstanding(conn: AsyncConnection) -> int:
    """Runs `worker --drain` still waits for: running, or pending for any reason but a
    poll of a run that is not terminal upstream yet (retries count, however far off)."""
    db = await driver_connection(conn)
    return cast(int, await db.fetchval(f"SELECT count(*) FROM ingest_queue WHERE {OUTSTANDING}"))


async def in_flight(conn: AsyncConnection) -> int:
    """Runs a live worker holds (running under a lease not yet run out): what a pause waits
    for. A dead worker's runs are not counted; they go back when their lease runs out."""
    db = await driver_connection(conn)
    return cast(
        int,
        await db.fetchval(
            "SELECT count(*) FROM ingest_queue WHERE state = 'running' AND lease_expires_at > now()"
        ),
    )


async def next_due_in(conn: AsyncConnection) -> float | None:
    """Seconds until the next pending run is due (0 if one is due now), None if none."""
    db = await driver_connection(conn)
    value = cast(
        float | None,
        await db.fetchval(
            "SELECT extract(epoch FROM min(available_at) - now())::float8 FROM ingest_queue"
            " WHERE state = 'pending'"
        ),
    )
    return None if value is None else max(0.0, value)


async def record_batch(
    conn: AsyncConnection, worker: str, runs_done: int, runs_failed: int, rows: int
) -> None:
    """One row of throughput history per transaction that finished runs: a batch stored
    (`runs_done`), or its failed attempts recorded (`runs_failed`)."""
    db = await driver_connection(conn)
    await db.execute(
        "INSERT INTO ingest_batches (worker, runs_done, runs_failed, rows_written)"
        " VALUES ($1, $2, $3, $4)",
        worker,
        runs_done,
        runs_failed,
        rows,
    )
