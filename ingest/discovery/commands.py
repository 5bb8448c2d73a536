"""The commands: `discover` (backfill a stretch of time), `sync` (incremental, from a
watermark) and `sync_every` (the worker's periodic sync).

What lands where
- Every run listed is upserted into `runs` in one set-based statement per sub-window:
  `completed_at`, `data` and `listed_at` always (only the list endpoint has them); the fields
  a fetch also gives only while the run has never been fetched, since a fetch is fresher.
- `discover` enqueues every run it lists (source `backfill`) and records each finished
  sub-window in `discovery_windows`, so rerunning it skips what is done.
- `sync` enqueues only what needs a fetch (new, not fetched yet, or listed with a status,
  annotation or completion time that differs from the stored one), because its overlap lists
  the same runs minute after minute.
- Change capture: at most every `recheck_every` (an hour), `sync` also lists the trailing
  `recheck` window (7 days) again, and each use case's issues (`GET /issues`), and enqueues the
  runs that changed upstream since their fetch. Its cost is the listing pages of the window,
  one `GET /issues` per use case, and one fetch per changed run; an unchanged run is never
  fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.api.client import ApiClient
from ingest.api.errors import ApiError
from ingest.discovery import state
from ingest.discovery.catalog import CatalogResult
from ingest.discovery.catalog import refresh as refresh_catalog
from ingest.discovery.listing import (
    ALL_RUNS,
    DEFAULT_PAGING,
    DiscoveryError,
    Filters,
    Lister,
    Paging,
    Slice,
    parse_issue,
    uncovered,
    walk,
)
from ingest.logs import get_logger

log = get_logger("ingest.discovery")

# A sub-window ending this close to now may still receive runs (late arrivals): it is listed
# but not recorded as finished, so a rerun lists it again.
SETTLE = timedelta(minutes=15)
_RECHECK_STATE = "sync.recheck"  # ... and of its last change capture


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
# Writes one listed slice; returns how many of its runs it wrote, and what the queue did.
SaveSlice = Callable[[Slice], Awaitable[tuple[int, queue.EnqueueResult]]]


def _tallied(
    save: SaveSlice, tally: Tally, on_progress: ProgressCallback | None
) -> Callable[[Slice], Awaitable[None]]:
    """`save` each slice, then count it into `tally` and report progress."""

    async def on_slice(piece: Slice) -> None:
        written, enqueued = await save(piece)
        tally.windows += 1
        tally.runs += written
        tally.invalid += piece.invalid
        tally.count(enqueued)
        tally.reached = piece.end
        if on_progress is not None:
            on_progress(tally)

    return on_slice


# -- discover (backfill) ---------------------------------------------------------------------


async def discover(
    engine: AsyncEngine,
    client: ApiClient,
    *,
    since: datetime,
    until: datetime,
    filters: Filters = ALL_RUNS,
    paging: Paging = DEFAULT_PAGING,
    relist: bool = False,
    on_progress: ProgressCallback | None = None,
    tally: Tally | None = None,
    catalog: bool = False,
) -> Tally:
    """List [since, until) and enqueue every run (source `backfill`). Sub-windows finished by
    an earlier call with the same filters are skipped unless `relist`. An API error
    propagates; the sub-windows finished before it stay recorded. Pass `tally` to read the
    totals reached when that happens. With `catalog`, then refresh the use cases (hourly)
    and the usage of [since, until] (ingest.discovery.catalog; its API errors are reported
    in `tally.catalog`, never raised)."""
    tally = tally if tally is not None else Tally()
    scope = filters.scope
    settled = datetime.now(UTC) - SETTLE
    covered = [] if relist else await state.finished_windows(engine, scope, since, until)
    # Split at `settled`, so that everything before it is recorded even when the last
    # sub-window would otherwise reach into the unsettled stretch.
    gaps = [
        part
        for a, b in uncovered(since, until, covered)
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

    async def save(piece: Slice) -> tuple[int, queue.EnqueueResult]:
        async with engine.begin() as conn:
            await state.store_listed(conn, piece.runs)
            result = await queue.enqueue(conn, [r.id for r in piece.runs], source="backfill")
            if piece.start is not None and piece.end <= settled:
                await state.record_window(conn, scope, piece)
        return len(piece.runs), result

    await walk(Lister(client, paging, filters), gaps, _tallied(save, tally, on_progress))
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
    # Change capture (see the module doc); a zero `recheck` turns it off.
    recheck: timedelta = timedelta(days=7)
    recheck_every: timedelta = timedelta(hours=1)
    # Also refresh the use cases and usage (hourly; see ingest.discovery.catalog). Off by
    # default so that a library caller asks only for what it names; the CLI and the worker
    # turn it on.
    catalog: bool = False


@dataclass
class SyncResult:
    ran: bool  # False: another sync held the lock
    since: datetime | None = None
    until: datetime | None = None
    tally: Tally = field(default_factory=Tally)  # added/refreshed: new/changed runs listed
    non_terminal: int = 0  # re-enqueued because not terminal yet
    refreshed: int = 0  # re-enqueued by --refresh-days
    rechecked: bool = False  # change capture ran (it runs at most every recheck_every)
    relisted: Tally = field(default_factory=Tally)  # its trailing window: changed runs enqueued
    changed_issues: int = 0  # runs enqueued because their issues changed upstream
    recheck_failed: str | None = None  # why change capture failed (sync itself did not)


async def sync(
    engine: AsyncEngine,
    client: ApiClient,
    options: SyncOptions = SyncOptions(),
    on_progress: ProgressCallback | None = None,
) -> SyncResult:
    """One incremental sync: list runs timestamped, and runs completed, since the watermark
    minus the overlap; enqueue what needs a fetch; re-enqueue runs not terminal yet (and,
    with `refresh_days`, recently finished ones); then move the watermark. Returns at once
    with `ran=False` when another sync on this database holds the lock. A failure is
    recorded (`sync_state`: freshness shows it) and raised."""
    try:
        return await _sync(engine, client, options, on_progress)
    except Exception as exc:
        with contextlib.suppress(Exception):  # the database may be what failed
            await state.record_failure(engine, state.SYNC_STATE, f"{type(exc).__name__}: {exc}")
        raise


async def _sync(
    engine: AsyncEngine,
    client: ApiClient,
    options: SyncOptions,
    on_progress: ProgressCallback | None,
) -> SyncResult:
    async with state.sync_lock(engine) as held:
        if not held:
            return SyncResult(ran=False)
        now = datetime.now(UTC)
        watermark = await state.read_watermark(engine, state.SYNC_STATE)
        if watermark is not None:
            since = watermark - options.overlap
        else:
            since = options.since or now - options.lookback
        result = SyncResult(ran=True, since=since, until=now)
        tally = result.tally
        on_slice = _tallied(_sync_saver(engine), tally, on_progress)
        # By start time: new runs, and late arrivals within the overlap.
        await walk(Lister(client, options.paging, ALL_RUNS), [(since, now)], on_slice)
        # By completion time: runs that started before the window and finished inside it.
        completed = Lister(client, options.paging, ALL_RUNS, completed=(since, now))
        await walk(completed, [(None, now)], on_slice)

        result.non_terminal = await state.requeue_non_terminal(engine, options.non_terminal_days)
        if options.refresh_days > 0:
            result.refreshed = await state.requeue_finished(
                engine, options.refresh_days, options.refresh_age
            )
        async with engine.begin() as conn:
            await state.write_watermark(conn, state.SYNC_STATE, now)
        # After the watermark moved too: a failure here is reported, and retried next time.
        if options.recheck > timedelta(0):
            await _recheck(engine, client, options, (since, now), result)
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
        rechecked=result.rechecked,
        changed_runs=result.relisted.added + result.relisted.refreshed,
        changed_issues=result.changed_issues,
    )
    return result


async def _recheck(
    engine: AsyncEngine,
    client: ApiClient,
    options: SyncOptions,
    window: tuple[datetime, datetime],
    result: SyncResult,
) -> None:
    """Change capture, when due: the trailing window listed again (stored runs updated, the
    fetched ones that changed enqueued; runs never seen are left to discover), then every use
    case's issues."""
    since, now = window
    last = await state.read_watermark(engine, _RECHECK_STATE)
    if last is not None and now - last < options.recheck_every:
        return
    try:
        start = now - options.recheck
        if start < since:
            on_slice = _tallied(_sync_saver(engine, known_only=True), result.relisted, None)
            await walk(Lister(client, options.paging, ALL_RUNS), [(start, since)], on_slice)
        for use_case_id in await state.known_use_cases(engine):
            result.changed_issues += await _recheck_issues(engine, client, use_case_id)
    except (ApiError, DiscoveryError) as exc:
        result.recheck_failed = str(exc)
        log.warning("sync.recheck_failed", error=str(exc))
        return
    async with engine.begin() as conn:
        await state.write_watermark(conn, _RECHECK_STATE, now)
    result.rechecked = True


async def _recheck_issues(engine: AsyncEngine, client: ApiClient, use_case_id: uuid.UUID) -> int:
    """Enqueue the runs of `use_case_id` whose issues changed upstream; returns how many."""
    issues = []
    for item in await client.list_issues(use_case_id):
        try:
            issues.append(parse_issue(item))
        except ValueError as exc:
            log.warning("sync.issue_skipped", use_case_id=str(use_case_id), error=str(exc))
    async with engine.begin() as conn:
        runs = await state.runs_with_changed_issues(conn, use_case_id, issues)
        enqueued = await queue.enqueue(conn, runs, source="sync")
    return enqueued.added + enqueued.refreshed


def _sync_saver(engine: AsyncEngine, *, known_only: bool = False) -> SaveSlice:
    """Writes each run once and enqueues only what needs a fetch (see the module doc);
    `known_only`: see state.store_listed."""
    # Both listings of a sync see runs that started and finished in the window; count and
    # write each once. A sync window is minutes long, so this set stays small.
    listed: set[uuid.UUID] = set()

    async def save(piece: Slice) -> tuple[int, queue.EnqueueResult]:
        runs = [r for r in piece.runs if r.id not in listed]
        listed.update(r.id for r in runs)
        async with engine.begin() as conn:
            changed = await state.store_listed(conn, runs, known_only=known_only)
            enqueued = await queue.enqueue(conn, changed, source="sync")
        return len(runs), enqueued

    return save


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
