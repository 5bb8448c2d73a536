from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.failures import Failure, FailureKind


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def states(engine: AsyncEngine) -> dict[uuid.UUID, tuple[str, int, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT run_id, state, attempts, refresh_requested FROM ingest_queue")
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def test_enqueue_is_idempotent_and_deduplicates(engine: AsyncEngine) -> None:
    batch = ids(50)
    async with engine.begin() as conn:
        first = await queue.enqueue(conn, batch + batch[:10])
    assert (first.added, first.refreshed, first.unchanged) == (50, 0, 0)
    async with engine.begin() as conn:
        again = await queue.enqueue(conn, batch)
    assert (again.added, again.refreshed, again.unchanged) == (0, 0, 50)
    assert {s for s, _, _ in (await states(engine)).values()} == {"pending"}


async def test_enqueue_of_done_schedules_refresh_and_of_running_refetches_after(
    engine: AsyncEngine,
) -> None:
    a, b = ids(2)
    async with engine.begin() as conn:
        await queue.enqueue(conn, [a, b])
        claims = await queue.claim(conn, "w1", 10, 60)
    assert {c.run_id for c in claims} == {a, b}
    async with engine.begin() as conn:
        await queue.complete(conn, "w1", [a])
    async with engine.begin() as conn:
        result = await queue.enqueue(conn, [a, b])
    assert result.refreshed == 2
    st = await states(engine)
    assert st[a] == ("pending", 0, False)
    assert st[b][0] == "running" and st[b][2] is True
    # b finishes its current attempt, then goes round once more instead of ending done.
    async with engine.begin() as conn:
        await queue.complete(conn, "w1", [b])
    assert (await states(engine))[b][0] == "pending"


async def test_concurrent_claims_never_share_a_run(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await queue.enqueue(conn, ids(300))

    async def claimer(name: str) -> list[uuid.UUID]:
        got: list[uuid.UUID] = []
        while True:
            async with engine.begin() as conn:
                claims = await queue.claim(conn, name, 7, 60)
            if not claims:
                return got
            got += [c.run_id for c in claims]

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
    flat = [r for got in results for r in got]
    assert len(flat) == 300 == len(set(flat))


async def test_expired_lease_is_reclaimed_and_old_owner_cannot_complete(
    engine: AsyncEngine,
) -> None:
    (run,) = ids(1)
    async with engine.begin() as conn:
        await queue.enqueue(conn, [run])
        await queue.claim(conn, "crashed", 1, 0.05)
    await asyncio.sleep(0.2)
    async with engine.begin() as conn:
        assert await queue.reclaim_expired(conn) == 1
        (claim,) = await queue.claim(conn, "alive", 1, 60)
    assert claim.attempt == 2
    async with engine.begin() as conn:
        assert (await queue.complete(conn, "crashed", [run])).held == 0
        assert await queue.renew(conn, "crashed", [run], 60) == set()
        assert await queue.renew(conn, "alive", [run], 60) == {run}
        assert (await queue.complete(conn, "alive", [run])).held == 1
    assert (await states(engine))[run][0] == "done"


UNAVAILABLE = Failure(
    kind=FailureKind.HTTP_5XX,
    detail="down for maintenance",
    permanent=False,
    http_status=503,
    body=b"oops",
)


async def test_failures_back_off_then_dead_letter_with_body(engine: AsyncEngine) -> None:
    (run,) = ids(1)
    async with engine.begin() as conn:
        await queue.enqueue(conn, [run])
    for attempt in range(1, 4):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE ingest_queue SET available_at = now()"))
            (claim,) = await queue.claim(conn, "w", 1, 60)
            assert claim.attempt == attempt
            state = await queue.fail(conn, "w", run, UNAVAILABLE, max_attempts=3, delay_s=30)
        assert state == ("dead" if attempt == 3 else "pending")
        if state == "pending":
            async with engine.connect() as conn:
                due = (
                    await conn.execute(
                        text(
                            "SELECT available_at > now() + interval '29 s', last_error"
                            " FROM ingest_queue"
                        )
                    )
                ).one()
            assert due == (True, "HTTP 503: down for maintenance")
    async with engine.connect() as conn:
        dead = (
            await conn.execute(
                text("SELECT kind, reason, http_status, body, attempts FROM dead_letters")
            )
        ).one()
    assert dead == (
        "http_5xx",
        "HTTP 503: down for maintenance (after 3 attempts)",
        503,
        b"oops",
        3,
    )
    async with engine.begin() as conn:
        assert await queue.retry_dead(conn) == {"http_5xx": 1}
    assert (await states(engine))[run] == ("pending", 0, False)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM dead_letters"))).scalar() == 0


async def test_a_failure_after_the_lease_was_lost_records_nothing(engine: AsyncEngine) -> None:
    (run,) = ids(1)
    async with engine.begin() as conn:
        await queue.enqueue(conn, [run])
        await queue.claim(conn, "slow", 1, 60)
        # The lease ran out and another worker claimed the run while "slow" was still at it.
        await conn.execute(text("UPDATE ingest_queue SET lease_owner = 'fast'"))
    async with engine.begin() as conn:
        assert await queue.dead_letter(conn, "slow", run, UNAVAILABLE) is False
        assert await queue.fail(conn, "slow", run, UNAVAILABLE, max_attempts=1) == ""
        assert await queue.fail(conn, "slow", run, UNAVAILABLE, max_attempts=9) == ""
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT state, lease_owner, last_error FROM ingest_queue"))
        ).one()
        assert (await conn.execute(text("SELECT count(*) FROM dead_letters"))).scalar() == 0
    assert tuple(row) == ("running", "fast", None)


async def test_release_gives_the_attempt_back(engine: AsyncEngine) -> None:
    batch = ids(3)
    async with engine.begin() as conn:
        await queue.enqueue(conn, batch)
        await queue.claim(conn, "w", 3, 60)
        assert await queue.release(conn, "w", batch) == 3
    assert all(v == ("pending", 0, False) for v in (await states(engine)).values())


async def test_drain_does_not_wait_for_polls_of_unfinished_runs(engine: AsyncEngine) -> None:
    a, b = ids(2)
    async with engine.begin() as conn:
        await queue.enqueue(conn, [a, b])
        await queue.claim(conn, "w", 2, 60)
        assert await queue.outstanding(conn) == 2
        await queue.complete(conn, "w", [a], [queue.Requeue(b, 3600)])
        assert await queue.outstanding(conn) == 0
        assert await queue.next_due_in(conn) > 3000


async def test_claim_uses_the_partial_index_however_many_runs_are_done(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ingest_queue (run_id, state, finished_at)"
                " SELECT gen_random_uuid(), 'done', now() FROM generate_series(1, 50000)"
            )
        )
        await queue.enqueue(conn, ids(20))
        await conn.execute(text("ANALYZE ingest_queue"))
        plan = "\n".join(
            r[0]
            for r in await conn.execute(
                text(
                    "EXPLAIN SELECT run_id FROM ingest_queue"
                    " WHERE state = 'pending' AND available_at <= now()"
                    " ORDER BY priority DESC, available_at LIMIT 100 FOR UPDATE SKIP LOCKED"
                )
            )
        )
    assert "ix_ingest_queue_due" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_enqueue_notifies_listeners(engine: AsyncEngine) -> None:
    woke = asyncio.Event()
    async with engine.connect() as listener:
        stop = await queue.listen(listener, woke.set)
        async with engine.begin() as conn:
            await queue.enqueue(conn, ids(1))
        await asyncio.wait_for(woke.wait(), 5)
        await stop()


async def test_a_webhook_run_is_polled_sooner_each_time_doubling_up_to_the_usual_delay(
    engine: AsyncEngine,
) -> None:
    announced, listed = ids(2)
    async with engine.begin() as conn:
        await queue.enqueue(conn, [announced], source="webhook", priority=100)
        await queue.enqueue(conn, [listed], source="sync")
    waits: dict[uuid.UUID, list[int]] = {announced: [], listed: []}
    for _ in range(6):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE ingest_queue SET available_at = now()"))
            assert len(await queue.claim(conn, "w", 2, 60)) == 2
            polls = [queue.Requeue(announced, 60.0), queue.Requeue(listed, 60.0)]
            assert (await queue.complete(conn, "w", [], polls)).held == 2
            rows = await conn.execute(
                text("SELECT run_id, extract(epoch FROM available_at - now()) FROM ingest_queue")
            )
            for run_id, wait in rows:
                waits[run_id].append(round(float(wait)))
    assert waits == {announced: [5, 10, 20, 40, 60, 60], listed: [60] * 6}

    # Finished at last: done, its polls reset, and it counts as landed (first stored finished).
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE ingest_queue SET available_at = now()"))
        await queue.claim(conn, "w", 2, 60)
        completed = await queue.complete(conn, "w", [announced, listed])
    assert sorted(landed.source for landed in completed.landed) == ["sync", "webhook"]
    # A refresh of a run stored finished before is not a landing.
    async with engine.begin() as conn:
        await queue.enqueue(conn, [announced], source="webhook", priority=100)
        await queue.claim(conn, "w", 2, 60)
        assert (await queue.complete(conn, "w", [announced])).landed == []
        polls = await conn.scalar(text("SELECT max(polls) FROM ingest_queue"))
    assert polls == 0
