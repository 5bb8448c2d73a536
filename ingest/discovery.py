"""Discovery: find runs through `GET /runs` and feed the queue (`discover` and `sync`).

How a stretch of time is listed
- The list endpoint pages with limit/offset, gives no totals, and offset paging over a set
  that changes while we page can repeat or skip items. So we page in ascending timestamp
  order over bounded sub-windows, and never deep: once a sub-window has given `max_pages`
  full pages we cut it at the latest timestamp seen. Everything before the cut has been
  listed, so [start, cut) is a finished sub-window; the rest starts a new sub-window at the
  cut, from offset 0, and the span of the next sub-windows shrinks to what fitted (it grows
  back, doubling, over sparse stretches, up to `Paging.span`). Deep offsets, and the wasted
  requests of splitting and starting over, never happen.
- Only when `max_pages` full pages all carry the cut timestamp itself can the cut not move:
  that instant (`RESOLUTION` wide) is then paged to its end with offsets, the only way left.
- The API's bounds are inclusive at both ends; we ask for [start, end - 1 µs], so adjacent
  sub-windows never share a run. Listed timestamps are taken to be truncated to their
  precision, never rounded up: a run listed at the cut is at or after it, so the next
  sub-window (which starts at the cut) holds it. Runs listed exactly at the cut are listed
  again there and dropped as already seen.

What lands where
- Every run listed is upserted into `runs` in one set-based statement per sub-window:
  `completed_at`, `data` and `listed_at` always (only the list endpoint has them); the fields
  a fetch also gives only while the run has never been fetched, since a fetch is fresher.
- `discover` enqueues every run it lists (source `backfill`) and records each finished
  sub-window in `discovery_windows`, so rerunning it skips what is done.
- `sync` enqueues only what needs a fetch (new, not fetched yet, or listed with a status that
  differs from the stored one), because its overlap lists the same runs minute after minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import jsontext, queue
from ingest.api.client import ApiClient
from ingest.api.retry import RetryPolicy, with_retries
from ingest.catalog import CatalogResult
from ingest.catalog import refresh as refresh_catalog
from ingest.db.engine import driver_connection
from ingest.ids import parse_run_id
from ingest.logs import get_logger

log = get_logger("ingest.discovery")

RESOLUTION = timedelta(seconds=1)  # coarsest timestamp precision we expect in listings
MIN_SPAN = timedelta(seconds=1)
_EPSILON = timedelta(microseconds=1)
# A sub-window ending this close to now may still receive runs (late arrivals): it is listed
# but not recorded as finished, so a rerun lists it again.
SETTLE = timedelta(minutes=15)
NON_TERMINAL = ("scheduled", "running")
# Two int4 keys for pg_try_advisory_lock: this constant, and a hash of the schema name, so
# syncs of different schemas in one database do not block each other.
_SYNC_LOCK_CLASS = 0x68725359  # "hrSY"
_SYNC_STATE = "sync"


class DiscoveryError(Exception):
    """The list endpoint behaved in a way paging cannot cope with."""


@dataclass(frozen=True)
class Paging:
    page_size: int = 1000
    max_pages: int = 5  # full pages of one sub-window before it is cut (see module doc)
    # The largest sub-window. Cuts make a dense sub-window cost nothing extra, so this only
    # bounds how many requests a sparse stretch takes (a quiet year: ~52).
    span: timedelta = timedelta(days=7)
    # On top of the client's few in-call retries: a backfill has no queue to fall back on,
    # so a page is asked again patiently (Retry-After honoured up to a minute) before giving up.
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(4, base=1.0, max_backoff=60.0))


@dataclass(frozen=True)
class Filters:
    use_case_id: uuid.UUID | None = None
    status: str | None = None

    @property
    def scope(self) -> str:
        """Names the filters in `discovery_windows`: a window finished under other filters
        does not count as finished for these."""
        return f"runs use_case_id={self.use_case_id or '*'} status={self.status or '*'}"


@dataclass(frozen=True, slots=True)
class ListedRun:
    id: uuid.UUID
    org_id: uuid.UUID | None
    use_case_id: uuid.UUID | None
    version_id: uuid.UUID | None
    status: str | None
    annotation: str | None
    timestamp: datetime | None
    completed_at: datetime | None
    data: str | None  # JSON text for a jsonb column


@dataclass
class Slice:
    """One finished sub-window [start, end) and the runs listed in it."""

    start: datetime | None
    end: datetime
    runs: list[ListedRun]
    invalid: int
    at_end: set[uuid.UUID]  # runs listed at `end` itself (after a cut): seen, skip next time


@dataclass
class Tally:
    """Running totals of one discover or sync; passed to the progress callback."""

    windows: int = 0
    windows_skipped: int = 0  # finished by an earlier discover
    runs: int = 0
    invalid: int = 0
    added: int = 0
    refreshed: int = 0
    unchanged: int = 0
    reached: datetime | None = None
    started: float = field(default_factory=time.monotonic)
    catalog: CatalogResult | None = None  # when the command refreshed the catalog too

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def count(self, result: queue.EnqueueResult) -> None:
        self.added += result.added
        self.refreshed += result.refreshed
        self.unchanged += result.unchanged


ProgressCallback = Callable[[Tally], None]


# -- one listing item ------------------------------------------------------------------------


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return parse_run_id(value) if value is not None else None
    except ValueError:
        return None


def _time_or_none(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_item(item: dict[str, Any]) -> ListedRun:
    """A listing item; ValueError only for a bad `id` (a bad other field is stored as NULL,
    the fetch fills it in)."""
    data = item.get("data")
    # jsonb cannot hold NUL characters; the rest of `data` is worth more than refusing it all.
    data_text = None if data is None else jsontext.dumps(data).replace("\\u0000", "\\ufffd")
    return ListedRun(
        id=parse_run_id(item.get("id")),
        org_id=_uuid_or_none(item.get("org_id")),
        use_case_id=_uuid_or_none(item.get("use_case_id")),
        version_id=_uuid_or_none(item.get("version_id")),
        status=_text_or_none(item.get("status")),
        annotation=_text_or_none(item.get("annotation")),
        timestamp=_time_or_none(item.get("timestamp")),
        completed_at=_time_or_none(item.get("completed_at")),
        data=data_text,
    )


# -- listing ---------------------------------------------------------------------------------


class _Lister:
    """Lists one sub-window at a time under fixed filters (see the module doc)."""

    def __init__(
        self,
        client: ApiClient,
        paging: Paging,
        filters: Filters,
        completed: tuple[datetime, datetime] | None = None,
    ) -> None:
        self.client, self.paging, self.filters, self.completed = client, paging, filters, completed

    @property
    def capacity(self) -> int:
        return self.paging.page_size * self.paging.max_pages

    async def _page(self, start: datetime | None, end: datetime, offset: int) -> list[Any]:
        completed_start, completed_end = self.completed or (None, None)

        async def once() -> list[dict[str, Any]]:
            return await self.client.list_runs(
                limit=self.paging.page_size,
                offset=offset,
                use_case_id=self.filters.use_case_id,
                status=self.filters.status,
                start=start,
                end=end - _EPSILON,
                completed_start=completed_start,
                completed_end=completed_end,
                sort="asc",
            )

        page, _ = await with_retries(once, self.paging.retry, f"GET /runs?offset={offset}")
        return page

    async def slice(self, start: datetime | None, end: datetime, seen: set[uuid.UUID]) -> Slice:
        """List [start, end) up to `max_pages` deep; the slice returned ends at `end`, or
        earlier at a cut. `seen`: runs already listed at `start` by the previous slice."""
        runs: dict[uuid.UUID, ListedRun] = {}
        invalid = 0
        latest: datetime | None = None
        previous: list[Any] = []

        async def take(s: datetime | None, e: datetime, offset: int) -> bool:
            """One page into `runs`; True when it was the last (short) page."""
            nonlocal invalid, latest, previous
            page = await self._page(s, e, offset)
            if page and page == previous:
                raise DiscoveryError("GET /runs returned the same page for a new offset")
            previous = page
            last_in_page: datetime | None = None
            for item in page:
                try:
                    run = parse_item(item)
                except ValueError as exc:
                    invalid += 1
                    log.warning("discovery.invalid_run_id", error=str(exc))
                    continue
                if run.timestamp is not None:
                    # Cuts rely on ascending order: an API ignoring `sort` must stop us.
                    if last_in_page is not None and run.timestamp < last_in_page:
                        raise DiscoveryError("GET /runs did not sort by timestamp ascending")
                    last_in_page = run.timestamp
                    if latest is None or run.timestamp > latest:
                        latest = run.timestamp
                if run.id not in seen:
                    runs[run.id] = run
            return len(page) < self.paging.page_size

        offset = 0
        for _ in range(self.paging.max_pages):
            if await take(start, end, offset):
                return Slice(start, end, list(runs.values()), invalid, set())
            offset += self.paging.page_size
        if latest is not None and (start is None or latest > start):
            at_cut = {r.id for r in runs.values() if r.timestamp == latest}
            return Slice(start, min(latest, end), list(runs.values()), invalid, at_cut)
        # Every run listed so far sits at `start` itself: page that instant to its end.
        assert start is not None
        instant_end = min(start + RESOLUTION, end)
        log.warning("discovery.dense_instant", at=start.isoformat(), listed=len(runs))
        while not await take(start, instant_end, offset):
            offset += self.paging.page_size
        return Slice(start, instant_end, list(runs.values()), invalid, set())


def _gaps(
    start: datetime, end: datetime, covered: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) outside the `covered` intervals (sorted by start)."""
    gaps, t = [], start
    for a, b in covered:
        if b <= t:
            continue
        if a >= end:
            break
        if a > t:
            gaps.append((t, a))
        t = max(t, b)
    if t < end:
        gaps.append((t, end))
    return gaps


async def _walk(
    lister: _Lister,
    gaps: Sequence[tuple[datetime | None, datetime]],
    on_slice: Callable[[Slice], Awaitable[None]],
) -> None:
    """List each gap oldest first, in sub-windows of adaptive span (see the module doc).
    A gap starting at None has no lower bound (its runs may be years old): it is one
    sub-window, cut as needed, rather than a walk through the years in spans."""
    span = lister.paging.span
    for gap_start, gap_end in gaps:
        t, seen = gap_start, set[uuid.UUID]()
        while t is None or t < gap_end:
            stop = gap_end if gap_start is None or t is None else min(t + span, gap_end)
            piece = await lister.slice(t, stop, seen)
            await on_slice(piece)
            if t is not None and piece.end < stop:  # cut: this much fitted in max_pages
                span = max(MIN_SPAN, piece.end - t)
            elif len(piece.runs) < lister.capacity // 4:
                span = min(2 * span, lister.paging.span)
            t, seen = piece.end, piece.at_end


# -- writing ---------------------------------------------------------------------------------

_UPSERT_LISTED = """
WITH listed AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                         $6::text[], $7::timestamptz[], $8::timestamptz[], $9::text[])
        AS l(id, org_id, use_case_id, version_id, status, annotation, "timestamp",
             completed_at, data)
),
prior AS (
    SELECT r.id, r.status, r.fetched_at FROM runs r JOIN listed USING (id)
),
upserted AS (
    INSERT INTO runs AS r (id, org_id, use_case_id, version_id, status, annotation,
                           "timestamp", completed_at, data, listed_at)
    SELECT id, org_id, use_case_id, version_id, status, annotation, "timestamp",
           completed_at, data::jsonb, now()
    FROM listed
    ON CONFLICT (id) DO UPDATE SET
        -- a run does not un-complete: a listing without the field keeps what we had; once a
        -- fetch has its own completed_at, that one wins
        completed_at = CASE WHEN r.fetched_at IS NULL
                            THEN coalesce(excluded.completed_at, r.completed_at)
                            ELSE coalesce(r.completed_at, excluded.completed_at) END,
        data = coalesce(excluded.data, r.data),
        listed_at = excluded.listed_at,
        org_id = CASE WHEN r.fetched_at IS NULL THEN excluded.org_id ELSE r.org_id END,
        use_case_id = CASE WHEN r.fetched_at IS NULL
                           THEN excluded.use_case_id ELSE r.use_case_id END,
        version_id = CASE WHEN r.fetched_at IS NULL
                          THEN excluded.version_id ELSE r.version_id END,
        status = CASE WHEN r.fetched_at IS NULL THEN excluded.status ELSE r.status END,
        annotation = CASE WHEN r.fetched_at IS NULL
                          THEN excluded.annotation ELSE r.annotation END,
        "timestamp" = CASE WHEN r.fetched_at IS NULL
                           THEN excluded."timestamp" ELSE r."timestamp" END,
        updated_at = now()
)
-- `prior` reads the rows as they were before the upsert (one snapshot for the statement)
SELECT l.id FROM listed l LEFT JOIN prior p USING (id)
WHERE p.id IS NULL OR p.fetched_at IS NULL OR p.status IS DISTINCT FROM l.status
"""


async def store_listed(conn: Any, runs: Sequence[ListedRun]) -> list[uuid.UUID]:
    """Upsert listed runs into `runs` (in the caller's transaction); returns the ids that
    need a fetch: unknown before, never fetched, or listed with a different status."""
    if not runs:
        return []
    db = await driver_connection(conn)
    columns = list(
        zip(
            *(
                (
                    r.id,
                    r.org_id,
                    r.use_case_id,
                    r.version_id,
                    r.status,
                    r.annotation,
                    r.timestamp,
                    r.completed_at,
                    r.data,
                )
                for r in runs
            ),
            strict=True,
        )
    )
    rows = await db.fetch(_UPSERT_LISTED, *(list(c) for c in columns))
    return [r["id"] for r in rows]


async def _finished_windows(
    engine: AsyncEngine, scope: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        rows = await db.fetch(
            "SELECT window_start, window_end FROM discovery_windows"
            " WHERE scope = $1 AND window_end > $2 AND window_start < $3 ORDER BY window_start",
            scope,
            start,
            end,
        )
    return [(r["window_start"], r["window_end"]) for r in rows]


async def _record_window(conn: Any, scope: str, piece: Slice) -> None:
    db = await driver_connection(conn)
    await db.execute(
        """
        INSERT INTO discovery_windows (scope, window_start, window_end, runs_found)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (scope, window_start) DO UPDATE SET
            window_end = greatest(discovery_windows.window_end, excluded.window_end),
            runs_found = excluded.runs_found, finished_at = now()
        """,
        scope,
        piece.start,
        piece.end,
        len(piece.runs),
    )


# -- discover (backfill) ---------------------------------------------------------------------


async def discover(
    engine: AsyncEngine,
    client: ApiClient,
    *,
    since: datetime,
    until: datetime,
    filters: Filters = Filters(),
    paging: Paging = Paging(),
    relist: bool = False,
    on_progress: ProgressCallback | None = None,
    tally: Tally | None = None,
    catalog: bool = False,
) -> Tally:
    """List [since, until) and enqueue every run (source `backfill`). Sub-windows finished by
    an earlier call with the same filters are skipped unless `relist`. An API error
    propagates; the sub-windows finished before it stay recorded. Pass `tally` to read the
    totals reached when that happens. With `catalog`, then refresh the use cases (hourly)
    and the usage of [since, until] (ingest.catalog; its API errors are reported in
    `tally.catalog`, never raised)."""
    tally = tally if tally is not None else Tally()
    scope = filters.scope
    settled = datetime.now(UTC) - SETTLE
    covered = [] if relist else await _finished_windows(engine, scope, since, until)
    # Split at `settled`, so that everything before it is recorded even when the last
    # sub-window would otherwise reach into the unsettled stretch.
    gaps = [
        part
        for a, b in _gaps(since, until, covered)
        for part in (((a, settled), (settled, b)) if a < settled < b else ((a, b),))
    ]
    tally.windows_skipped = len(covered)
    log.info(
        "discover.start",
        since=since.isoformat(),
        until=until.isoformat(),
        scope=scope,
        finished_before=len(covered),
    )

    async def save(piece: Slice) -> None:
        async with engine.begin() as conn:
            await store_listed(conn, piece.runs)
            result = await queue.enqueue(conn, [r.id for r in piece.runs], source="backfill")
            if piece.start is not None and piece.end <= settled:
                await _record_window(conn, scope, piece)
        tally.windows += 1
        tally.runs += len(piece.runs)
        tally.invalid += piece.invalid
        tally.count(result)
        tally.reached = piece.end
        if on_progress is not None:
            on_progress(tally)

    await _walk(_Lister(client, paging, filters), gaps, save)
    log.info("discover.done", windows=tally.windows, runs=tally.runs, added=tally.added)
    if catalog:
        tally.catalog = await refresh_catalog(engine, client, since, until)
    return tally


# -- sync ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOptions:
    overlap: timedelta = timedelta(minutes=15)
    since: datetime | None = None  # first sync (no watermark yet); None: `lookback` ago
    lookback: timedelta = timedelta(days=1)
    refresh_days: float = 0.0  # re-fetch runs finished this recently (their issues change)
    refresh_age: timedelta = timedelta(hours=1)  # ... when last fetched longer ago than this
    # A run still not terminal this long after it started is stuck upstream: polling it
    # every minute forever would eat the rate limit.
    non_terminal_days: float = 7.0
    paging: Paging = field(default_factory=Paging)
    # Also refresh the use cases and usage (hourly; see ingest.catalog). Off by default so
    # that a library caller asks only for what it names; the CLI and the worker turn it on.
    catalog: bool = False


@dataclass
class SyncResult:
    ran: bool  # False: another sync held the lock
    since: datetime | None = None
    until: datetime | None = None
    tally: Tally = field(default_factory=Tally)  # added/refreshed: new/changed runs listed
    non_terminal: int = 0  # re-enqueued because not terminal yet
    refreshed: int = 0  # re-enqueued by --refresh-days


@contextlib.asynccontextmanager
async def sync_lock(engine: AsyncEngine) -> AsyncIterator[bool]:
    """Session-level advisory lock on a connection of its own, held for the block: yields
    False at once if another sync holds it. A killed process's lock goes with its session."""
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        held = bool(
            await db.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", _SYNC_LOCK_CLASS
            )
        )
        try:
            yield held
        finally:
            if held:
                try:
                    await db.fetchval(
                        "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
                        _SYNC_LOCK_CLASS,
                    )
                except Exception:
                    # Never hand a connection that may still hold the lock back to the pool.
                    await conn.invalidate()
                    raise


async def _requeue(engine: AsyncEngine, sql: str, *args: Any) -> int:
    async with engine.begin() as conn:
        db = await driver_connection(conn)
        ids = [r["id"] for r in await db.fetch(sql, *args)]
        result = await queue.enqueue(conn, ids, source="sync")
    return result.added + result.refreshed


async def sync(
    engine: AsyncEngine,
    client: ApiClient,
    options: SyncOptions = SyncOptions(),
    on_progress: ProgressCallback | None = None,
) -> SyncResult:
    """One incremental sync: list runs timestamped, and runs completed, since the watermark
    minus the overlap; enqueue what needs a fetch; re-enqueue runs not terminal yet (and,
    with `refresh_days`, recently finished ones); then move the watermark. Returns at once
    with `ran=False` when another sync on this database holds the lock."""
    async with sync_lock(engine) as held:
        if not held:
            return SyncResult(ran=False)
        now = datetime.now(UTC)
        async with engine.connect() as conn:
            db = await driver_connection(conn)
            watermark = await db.fetchval(
                "SELECT watermark FROM sync_state WHERE name = $1", _SYNC_STATE
            )
        if watermark is not None:
            since = watermark - options.overlap
        else:
            since = options.since or now - options.lookback
        result = SyncResult(ran=True, since=since, until=now)
        tally = result.tally
        # Both listings below see runs that started and finished in the window; count and
        # write each once. A sync window is minutes long, so this set stays small.
        listed: set[uuid.UUID] = set()

        async def save(piece: Slice) -> None:
            runs = [r for r in piece.runs if r.id not in listed]
            listed.update(r.id for r in runs)
            async with engine.begin() as conn:
                changed = await store_listed(conn, runs)
                enqueued = await queue.enqueue(conn, changed, source="sync")
            tally.windows += 1
            tally.runs += len(runs)
            tally.invalid += piece.invalid
            tally.count(enqueued)
            tally.reached = piece.end
            if on_progress is not None:
                on_progress(tally)

        # By start time: new runs, and late arrivals within the overlap.
        await _walk(_Lister(client, options.paging, Filters()), [(since, now)], save)
        # By completion time: runs that started before the window and finished inside it.
        completed = _Lister(client, options.paging, Filters(), completed=(since, now))
        await _walk(completed, [(None, now)], save)

        result.non_terminal = await _requeue(
            engine,
            "SELECT id FROM runs WHERE status = ANY($1::text[])"
            ' AND coalesce("timestamp", listed_at) > now() - make_interval(secs => $2)',
            list(NON_TERMINAL),
            options.non_terminal_days * 86400.0,
        )
        if options.refresh_days > 0:
            result.refreshed = await _requeue(
                engine,
                "SELECT id FROM runs WHERE NOT status = ANY($1::text[])"
                ' AND coalesce(completed_at, "timestamp")'
                "     > now() - make_interval(secs => $2)"
                " AND fetched_at < now() - make_interval(secs => $3)",
                list(NON_TERMINAL),
                options.refresh_days * 86400.0,
                options.refresh_age.total_seconds(),
            )
        async with engine.begin() as conn:
            db = await driver_connection(conn)
            await db.execute(
                """
                INSERT INTO sync_state (name, watermark) VALUES ($1, $2)
                ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark,
                    updated_at = now()
                """,
                _SYNC_STATE,
                now,
            )
        if options.catalog:
            # After the watermark moved: a catalog failure is reported, and cannot undo it.
            tally.catalog = await refresh_catalog(engine, client, since, now, hourly_usage=True)
    log.info(
        "sync.done",
        since=since.isoformat(),
        until=now.isoformat(),
        listed=tally.runs,
        new=tally.added,
        changed=tally.refreshed,
        non_terminal=result.non_terminal,
        refreshed=result.refreshed,
    )
    return result


async def sync_every(
    engine: AsyncEngine,
    client: ApiClient,
    every_s: float,
    options: SyncOptions = SyncOptions(catalog=True),
) -> None:
    """Sync now and then every `every_s` seconds until cancelled (`worker --sync-every`).
    A failed sync is logged and tried again next time: it must not stop the worker."""
    while True:
        try:
            result = await sync(engine, client, options)
            if not result.ran:
                log.info("sync.skipped", reason="another sync is running")
        except Exception as exc:
            log.warning("sync.failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(every_s)
