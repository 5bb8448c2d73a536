"""Writing batches of normalized runs, and rebuilding them from stored payloads (reprocess).

`store_batch` runs inside the caller's transaction, so the worker can mark its queue rows done
in the same one: either every row of the batch is written, or (on any error) none is.

Set-based: a handful of statements per batch whatever its size. Runs and versions are upserted
from `unnest` arrays; every child of the written runs is deleted in one statement, then events,
intermediates and payloads are COPYed in and issues (which can move between runs) upserted.
That is what makes "exactly what the latest payload says" cheap to guarantee.

Locks are taken in one global order - runs, then issues, then versions, each sorted by id - so
any number of concurrent writers sharing versions wait for each other but never deadlock.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest import archive, normalize, rollup
from ingest.db import tables
from ingest.db.bulk import R, Target
from ingest.db.driver import Db, connection, driver_connection, transaction


@dataclass
class StoreStats:
    runs: int  # runs written
    rows: int  # rows written across all tables
    skipped_stale: int  # runs not written: a newer payload is already stored (or in the batch)


@dataclass
class ReprocessResult:
    runs: int = 0  # runs rebuilt
    rows: int = 0  # rows written for them
    skipped_stale: int = 0  # a newer fetch landed while reprocess ran: it wins
    refused: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # today's rules say no
    missing: list[uuid.UUID] = field(default_factory=list)  # asked for, but no stored payload


_RUNS = Target.of(tables.runs, normalize.RunRow)
_VERSIONS = Target.of(tables.versions, normalize.VersionRow)
_EVENTS = Target.of(tables.run_events, normalize.EventRow)
_INTERMEDIATES = Target.of(tables.event_intermediates, normalize.IntermediateRow)
_SESSIONS = Target.of(tables.run_sessions, normalize.SessionRow)
_MESSAGES = Target.of(tables.session_messages, normalize.MessageRow)
_TOOL_CALLS = Target.of(tables.message_tool_calls, normalize.ToolCallRow)
_ISSUES = Target.of(tables.run_issues, normalize.IssueRow)
_PAYLOADS = Target.of(tables.run_payloads, normalize.PayloadRow)

# Only runs whose stored payload is not newer are written; RETURNING says which. A fetched
# completed_at wins over the listing's; NULL (still running, or a payload from before the API
# sent it, on reprocess) keeps what the listing said: a run does not un-complete.
_UPSERT_RUNS = _RUNS.insert(
    f"ON CONFLICT (id) DO UPDATE SET {_RUNS.set_all('id', 'completed_at')}, updated_at = now(),"
    " completed_at = coalesce(excluded.completed_at, t.completed_at)"
    " WHERE t.fetched_at IS NULL OR t.fetched_at <= excluded.fetched_at"
    " RETURNING id"
)
_UPSERT_VERSIONS = _VERSIONS.insert(
    f"ON CONFLICT (id) DO UPDATE SET {_VERSIONS.set_all('id')}"
    " WHERE excluded.fetched_at >= t.fetched_at"
)
# An issue can move to another run. It follows the run whose payload was fetched last, so a
# stale payload of its former run cannot pull it back.
_UPSERT_ISSUES = _ISSUES.insert(
    f"ON CONFLICT (id) DO UPDATE SET {_ISSUES.set_all('id')}"
    " WHERE coalesce((SELECT fetched_at FROM runs WHERE id = t.run_id), '-infinity')"
    " <= (SELECT fetched_at FROM runs WHERE id = excluded.run_id)"
)
# Children are replaced, not upserted: deleted (one statement for all their tables), then
# COPYed in. For every written run, not only re-fetched ones: events, intermediates, sessions,
# messages and tool calls have no foreign key (see ingest.db.tables), so rows left behind by a run
# deleted by hand must not make the COPY of its next fetch fail; probing the primary keys for
# runs that have no children costs a few ms per 200 runs (and runs listed by discovery before
# their fetch, the usual case, are not new to `runs` anyway). A separate statement after the runs
# upsert, so that it runs under the runs' row locks with a fresh snapshot: a concurrent
# writer of the same run has committed by then, and its children are seen and deleted.
_DELETE_CHILDREN = (
    "WITH "
    + ", ".join(
        f"d{n} AS (DELETE FROM {table.name} WHERE run_id = ANY($1::uuid[]))"
        for n, table in enumerate(
            (
                tables.message_tool_calls,
                tables.session_messages,
                tables.run_sessions,
                tables.event_intermediates,
                tables.run_events,
                tables.run_issues,
                tables.run_payloads,
            )
        )
    )
    # The statement's snapshot predates its deletes: issues of this batch still stored under
    # another run are about to move here (see _recount_issues).
    + " SELECT DISTINCT run_id FROM run_issues WHERE id = ANY($2::uuid[])"
    " AND run_id <> ALL($1::uuid[])"
)
# runs.issue_count is counted by normalize from the run's own body. An issue that moved between
# runs (rare) leaves its former run's count stale, and stays put if that run's stored fetch is
# newer: count those runs again from the rows, after the issues are written.
_RECOUNT_ISSUES = """
UPDATE runs AS r SET issue_count = (SELECT count(*) FROM run_issues AS i WHERE i.run_id = r.id)
WHERE r.id = ANY($1::uuid[])
"""


def _newest_per_run(batch: Sequence[normalize.RunRows]) -> list[normalize.RunRows]:
    """One entry per run (the latest fetch; on a tie the later in the batch), sorted by id."""
    newest: dict[uuid.UUID, normalize.RunRows] = {}
    for rows in batch:
        seen = newest.get(rows.run.id)
        if seen is None or rows.run.fetched_at >= seen.run.fetched_at:
            newest[rows.run.id] = rows
    return [newest[run_id] for run_id in sorted(newest)]


def _newest_by_id(candidates: list[tuple[uuid.UUID, datetime, R]]) -> list[R]:
    """(id, fetched_at, row) triples -> one row per id, the latest fetch winning, sorted by id."""
    newest: dict[uuid.UUID, tuple[datetime, R]] = {}
    for key, fetched_at, row in candidates:
        seen = newest.get(key)
        if seen is None or fetched_at >= seen[0]:
            newest[key] = (fetched_at, row)
    return [newest[key][1] for key in sorted(newest)]


async def _copy(db: Db, target: Target[R], rows: list[R]) -> int:
    if rows:
        await target.copy(db, rows)
    return len(rows)


async def upsert_versions(db: Db, versions: Sequence[normalize.VersionRow]) -> None:
    """Versions, by id and sorted (the lock order), each kept unless a later fetch is stored.
    From run bodies, and from the catalog's use cases."""
    if versions:
        await db.execute(_UPSERT_VERSIONS, *_VERSIONS.arrays(versions))


async def store_batch(conn: AsyncConnection, batch: Sequence[normalize.RunRows]) -> StoreStats:
    """Write a batch of normalized runs within the caller's transaction; raise on any error.

    Stale payloads (fetched before what is stored) are skipped and counted, never written.
    Sequential scans are off for the rest of the transaction (see below).
    """
    if not batch:
        return StoreStats(runs=0, rows=0, skipped_stale=0)
    await archive.pack_payloads([rows.payload for rows in batch])
    raw = await driver_connection(conn)
    if not raw.is_in_transaction():
        raise RuntimeError("store_batch needs a transaction (use `async with engine.begin()`)")
    # Every statement here finds its rows by key. On tables that have not been analyzed yet
    # (the first minutes of a backfill), the planner takes `run_id = ANY(200 ids)` for the
    # whole table and the children's DELETE scans all of it, slower with every batch.
    await raw.execute("SET LOCAL enable_seqscan = off")
    candidates = _newest_per_run(batch)
    written = {
        cast(uuid.UUID, record["id"])
        for record in await raw.fetch(
            _UPSERT_RUNS, *_RUNS.arrays([rows.run for rows in candidates])
        )
    }
    runs = [rows for rows in candidates if rows.run.id in written]
    stats = StoreStats(runs=len(runs), rows=0, skipped_stale=len(batch) - len(runs))
    if not runs:
        return stats

    listed = [(issue.id, rows.run.fetched_at, issue) for rows in runs for issue in rows.issues]
    issues = _newest_by_id(listed)
    moved_from = await raw.fetch(
        _DELETE_CHILDREN, [rows.run.id for rows in runs], [issue.id for issue in issues]
    )

    copied = sum(
        [
            await _copy(raw, _EVENTS, [event for rows in runs for event in rows.events]),
            await _copy(raw, _INTERMEDIATES, [i for rows in runs for i in rows.intermediates]),
            await _copy(raw, _SESSIONS, [session for rows in runs for session in rows.sessions]),
            await _copy(raw, _MESSAGES, [message for rows in runs for message in rows.messages]),
            await _copy(raw, _TOOL_CALLS, [call for rows in runs for call in rows.tool_calls]),
            await _copy(raw, _PAYLOADS, [rows.payload for rows in runs]),
        ]
    )

    if issues:
        await raw.execute(_UPSERT_ISSUES, *_ISSUES.arrays(issues))
    if moved_from or len(issues) < len(listed):  # moved from a stored run, or within the batch
        recount = {cast(uuid.UUID, r["run_id"]) for r in moved_from}
        recount |= {rows.run.id for rows in runs if rows.issues}
        await raw.execute(_RECOUNT_ISSUES, sorted(recount))

    # Last: every batch shares a handful of versions, and their row locks are held until
    # commit; taken earlier, they would queue every other writer behind this whole batch.
    versions = _newest_by_id(
        [(r.version.id, r.version.fetched_at, r.version) for r in runs if r.version is not None]
    )
    await upsert_versions(raw, versions)

    stats.rows = len(runs) + copied + len(issues) + len(versions)
    return stats


async def _stored_payloads(
    engine: AsyncEngine, run_ids: Sequence[uuid.UUID] | None, batch_size: int
) -> AsyncIterator[list[tuple[uuid.UUID, bytes, datetime, str]]]:
    """Stored payloads in chunks: the given runs, or all of them in run id order."""
    select = "SELECT run_id, body, fetched_at, encoding FROM run_payloads"
    wanted = sorted(set(run_ids)) if run_ids is not None else None
    after: uuid.UUID | None = None  # all runs: keyset paging, whatever their number
    for start in itertools.count(0, batch_size):
        async with connection(engine) as conn:
            db = await driver_connection(conn)
            if wanted is None:
                records = await db.fetch(
                    f"{select} WHERE $1::uuid IS NULL OR run_id > $1 ORDER BY run_id LIMIT $2",
                    after,
                    batch_size,
                )
            elif start < len(wanted):
                chunk = wanted[start : start + batch_size]
                records = await db.fetch(
                    f"{select} WHERE run_id = ANY($1::uuid[]) ORDER BY run_id", chunk
                )
            else:
                return
        rows = [cast(tuple[uuid.UUID, bytes, datetime, str], tuple(r)) for r in records]
        if rows:
            after = rows[-1][0]
            yield rows
        elif wanted is None:
            return


async def reprocess(
    engine: AsyncEngine, run_ids: Sequence[uuid.UUID] | None = None, batch_size: int = 500
) -> ReprocessResult:
    """Rebuild the rows of some runs (None: every stored one) from their stored payloads.

    No API call. A payload today's rules refuse is reported and its rows are left as they are.
    """
    result = ReprocessResult()
    found: set[uuid.UUID] = set()  # only filled (and needed) when run_ids are given
    async for chunk in _stored_payloads(engine, run_ids, batch_size):
        batch = []
        for run_id, stored, fetched_at, encoding in chunk:
            if run_ids is not None:
                found.add(run_id)
            try:
                body = archive.unpack(stored, encoding)
                batch.append(normalize.normalize(body, run_id, fetched_at))
            except archive.ArchiveError as exc:
                result.refused.append((run_id, str(exc)))
            except normalize.PayloadRejected as exc:
                result.refused.append((run_id, exc.reason))
        async with transaction(engine) as conn:
            stats = await store_batch(conn, batch)
        result.runs += stats.runs
        result.rows += stats.rows
        result.skipped_stale += stats.skipped_stale
    if run_ids is not None:
        result.missing = sorted(set(run_ids) - found)
    async with transaction(engine) as conn:
        await rollup.compact(await driver_connection(conn), rollup.EVERY_DAY)
    return result


# -- one stored payload, and retention ----------------------------------------------------------


@dataclass(frozen=True)
class StoredPayload:
    """A run's stored payload, decoded."""

    body: bytes
    sha256: str
    fetched_at: datetime

    @property
    def intact(self) -> bool:
        return hashlib.sha256(self.body).hexdigest() == self.sha256


async def read_payload(engine: AsyncEngine, run_id: uuid.UUID) -> StoredPayload | None:
    """The raw body stored for a run, as received (None: none stored, or pruned)."""
    async with connection(engine) as conn:
        db = await driver_connection(conn)
        row = await db.fetchrow(
            "SELECT body, encoding, sha256, fetched_at FROM run_payloads WHERE run_id = $1", run_id
        )
    if row is None:
        return None
    body, encoding, sha256, fetched_at = cast(tuple[bytes, str, str, datetime], tuple(row))
    return StoredPayload(archive.unpack(body, encoding), sha256, fetched_at)


@dataclass
class Pruned:
    payloads: int = 0
    stored_bytes: int = 0  # as stored (compressed), what the deletes free for reuse


_PRUNE = """
WITH doomed AS (
    SELECT run_id FROM run_payloads WHERE run_id > $1 AND fetched_at < $2 ORDER BY run_id LIMIT $3
)
DELETE FROM run_payloads AS p USING doomed AS d WHERE p.run_id = d.run_id
RETURNING p.run_id, pg_column_size(p.body) AS size
"""
_COUNT = (
    "SELECT count(*), coalesce(sum(pg_column_size(body)), 0) FROM run_payloads"
    " WHERE fetched_at < $1"
)


async def prune_payloads(
    engine: AsyncEngine, before: datetime, *, dry_run: bool = False, chunk: int = 5000
) -> Pruned:
    """Delete the stored payloads fetched before `before`; no other table is touched. One
    short transaction per chunk, walking the primary key once (no index on fetched_at needed,
    and a running worker is never held up for long)."""
    if dry_run:
        async with connection(engine) as conn:
            row = await (await driver_connection(conn)).fetchrow(_COUNT, before)
        assert row is not None
        payloads, stored_bytes = cast(tuple[int, int], tuple(row))
        return Pruned(payloads=payloads, stored_bytes=stored_bytes)
    pruned, after = Pruned(), uuid.UUID(int=0)
    while True:
        async with transaction(engine) as conn:
            rows = await (await driver_connection(conn)).fetch(_PRUNE, after, before, chunk)
        if not rows:
            return pruned
        deleted = [cast(tuple[uuid.UUID, int], tuple(r)) for r in rows]
        pruned.payloads += len(deleted)
        pruned.stored_bytes += sum(size for _, size in deleted)
        after = max(run_id for run_id, _ in deleted)
