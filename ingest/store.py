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

import dataclasses
import operator
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.db import tables
from ingest.db.driver import driver_connection
from ingest.normalize import (
    EventRow,
    IntermediateRow,
    IssueRow,
    MessageRow,
    PayloadRejected,
    PayloadRow,
    RunRow,
    RunRows,
    SessionRow,
    ToolCallRow,
    VersionRow,
    normalize,
)


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


@dataclass(frozen=True)
class _Target:
    """One table as written from one row type: column list, SQL types, row -> record."""

    table: str
    columns: tuple[str, ...]
    sql_types: tuple[str, ...]
    record: Callable[[Any], tuple[Any, ...]]

    @classmethod
    def of(cls, table: Table, row_type: type) -> _Target:
        columns = tuple(f.name for f in dataclasses.fields(row_type))
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        sql_types = tuple(table.c[name].type.compile(dialect=dialect) for name in columns)
        return cls(table.name, columns, sql_types, operator.attrgetter(*columns))

    def unnest_select(self) -> str:
        """`SELECT * FROM unnest($1::type[], ...)`: one array parameter per column."""
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(self.sql_types, start=1))
        return f"SELECT * FROM unnest({arrays})"

    def arrays(self, rows: Sequence[Any]) -> list[list[Any]]:
        """The rows as one list per column (the unnest parameters)."""
        columns: list[list[Any]] = [[] for _ in self.columns]
        for record in map(self.record, rows):
            for column, value in zip(columns, record, strict=True):
                column.append(value)
        return columns

    def insert(self, conflict: str) -> str:
        names = ", ".join(f'"{c}"' for c in self.columns)
        return f"INSERT INTO {self.table} AS t ({names}) {self.unnest_select()} {conflict}"

    def set_all(self, *keep: str) -> str:
        """Every column from the new row, but those in `keep` (the key, or set otherwise)."""
        return ", ".join(f'"{c}" = excluded."{c}"' for c in self.columns if c not in keep)


_RUNS = _Target.of(tables.runs, RunRow)
_VERSIONS = _Target.of(tables.versions, VersionRow)
_EVENTS = _Target.of(tables.run_events, EventRow)
_INTERMEDIATES = _Target.of(tables.event_intermediates, IntermediateRow)
_SESSIONS = _Target.of(tables.run_sessions, SessionRow)
_MESSAGES = _Target.of(tables.session_messages, MessageRow)
_TOOL_CALLS = _Target.of(tables.message_tool_calls, ToolCallRow)
_ISSUES = _Target.of(tables.run_issues, IssueRow)
_PAYLOADS = _Target.of(tables.run_payloads, PayloadRow)

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
    + " SELECT"
)


def _newest_per_run(batch: Sequence[RunRows]) -> list[RunRows]:
    """One entry per run (the latest fetch; on a tie the later in the batch), sorted by id."""
    newest: dict[uuid.UUID, RunRows] = {}
    for rows in batch:
        seen = newest.get(rows.run.id)
        if seen is None or rows.run.fetched_at >= seen.run.fetched_at:
            newest[rows.run.id] = rows
    return [newest[run_id] for run_id in sorted(newest)]


def _newest_by_id(candidates: list[tuple[Any, Any, Any]]) -> list[Any]:
    """(id, fetched_at, row) triples -> one row per id, the latest fetch winning, sorted by id."""
    newest: dict[Any, tuple[Any, Any]] = {}
    for key, fetched_at, row in candidates:
        seen = newest.get(key)
        if seen is None or fetched_at >= seen[0]:
            newest[key] = (fetched_at, row)
    return [newest[key][1] for key in sorted(newest)]


async def store_batch(conn: AsyncConnection, batch: Sequence[RunRows]) -> StoreStats:
    """Write a batch of normalized runs within the caller's transaction; raise on any error.

    Stale payloads (fetched before what is stored) are skipped and counted, never written.
    Sequential scans are off for the rest of the transaction (see below).
    """
    if not batch:
        return StoreStats(runs=0, rows=0, skipped_stale=0)
    raw = await driver_connection(conn)
    if not raw.is_in_transaction():
        raise RuntimeError("store_batch needs a transaction (use `async with engine.begin()`)")
    # Every statement here finds its rows by key. On tables that have not been analyzed yet
    # (the first minutes of a backfill), the planner takes `run_id = ANY(200 ids)` for the
    # whole table and the children's DELETE scans all of it, slower with every batch.
    await raw.execute("SET LOCAL enable_seqscan = off")
    candidates = _newest_per_run(batch)
    written = {
        record["id"]
        for record in await raw.fetch(
            _UPSERT_RUNS, *_RUNS.arrays([rows.run for rows in candidates])
        )
    }
    runs = [rows for rows in candidates if rows.run.id in written]
    stats = StoreStats(runs=len(runs), rows=0, skipped_stale=len(batch) - len(runs))
    if not runs:
        return stats

    await raw.execute(_DELETE_CHILDREN, [rows.run.id for rows in runs])

    copied = 0
    for target, rows_ in (
        (_EVENTS, [event for rows in runs for event in rows.events]),
        (_INTERMEDIATES, [inter for rows in runs for inter in rows.intermediates]),
        (_SESSIONS, [session for rows in runs for session in rows.sessions]),
        (_MESSAGES, [message for rows in runs for message in rows.messages]),
        (_TOOL_CALLS, [call for rows in runs for call in rows.tool_calls]),
        (_PAYLOADS, [rows.payload for rows in runs]),
    ):
        if rows_:
            await raw.copy_records_to_table(
                target.table, records=map(target.record, rows_), columns=target.columns
            )
            copied += len(rows_)

    issues = _newest_by_id(
        [(issue.id, rows.run.fetched_at, issue) for rows in runs for issue in rows.issues]
    )
    if issues:
        await raw.execute(_UPSERT_ISSUES, *_ISSUES.arrays(issues))

    # Last: every batch shares a handful of versions, and their row locks are held until
    # commit; taken earlier, they would queue every other writer behind this whole batch.
    versions = _newest_by_id(
        [(r.version.id, r.version.fetched_at, r.version) for r in runs if r.version is not None]
    )
    if versions:
        await raw.execute(_UPSERT_VERSIONS, *_VERSIONS.arrays(versions))

    stats.rows = len(runs) + copied + len(issues) + len(versions)
    return stats


async def _stored_payloads(
    engine: AsyncEngine, run_ids: Sequence[uuid.UUID] | None, batch_size: int
) -> AsyncIterator[list[tuple[uuid.UUID, bytes, Any]]]:
    """Stored payloads in chunks: the given runs, or all of them in run id order."""
    p = tables.run_payloads
    query = select(p.c.run_id, p.c.body, p.c.fetched_at).order_by(p.c.run_id)
    wanted = sorted(set(run_ids)) if run_ids is not None else None
    start = 0
    after: uuid.UUID | None = None  # all runs: keyset paging, whatever their number
    while True:
        if wanted is None:
            page = query.limit(batch_size)
            if after is not None:
                page = page.where(p.c.run_id > after)
        elif start < len(wanted):
            page = query.where(p.c.run_id.in_(wanted[start : start + batch_size]))
            start += batch_size
        else:
            return
        async with engine.connect() as conn:
            rows = [(r.run_id, r.body, r.fetched_at) for r in await conn.execute(page)]
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
        for run_id, body, fetched_at in chunk:
            if run_ids is not None:
                found.add(run_id)
            try:
                batch.append(normalize(body, run_id, fetched_at))
            except PayloadRejected as exc:
                result.refused.append((run_id, exc.reason))
        async with engine.begin() as conn:
            stats = await store_batch(conn, batch)
        result.runs += stats.runs
        result.rows += stats.rows
        result.skipped_stale += stats.skipped_stale
    if run_ids is not None:
        result.missing = sorted(set(run_ids) - found)
    return result
