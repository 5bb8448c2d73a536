"""Listing runs through `GET /runs`: parsing an item, and paging over time (no SQL here).

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
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest import jsontext
from ingest.api.client import ApiClient
from ingest.api.retry import RetryPolicy, with_retries
from ingest.ids import parse_run_id
from ingest.logs import get_logger
from ingest.normalize.rows import RunHead

log = get_logger("ingest.discovery")

RESOLUTION = timedelta(seconds=1)  # coarsest timestamp precision we expect in listings
MIN_SPAN = timedelta(seconds=1)
_EPSILON = timedelta(microseconds=1)


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


# Shared defaults (frozen, so one instance serves every call).
ALL_RUNS = Filters()
DEFAULT_PAGING = Paging()


@dataclass(slots=True)
class ListedRun(RunHead):
    """A `GET /runs` item: what a fetch would say too, and `data`, which only listings carry."""

    data: str | None  # JSON text for a jsonb column


@dataclass(frozen=True, slots=True)
class ListedIssue:
    """What change capture compares of a `GET /issues` item with the stored issue."""

    id: uuid.UUID
    run_id: uuid.UUID
    status: str | None
    updated_at: datetime | None


@dataclass
class Slice:
    """One finished sub-window [start, end) and the runs listed in it."""

    start: datetime | None
    end: datetime
    runs: list[ListedRun]
    invalid: int
    at_end: set[uuid.UUID]  # runs listed at `end` itself (after a cut): seen, skip next time


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


def parse_issue(item: dict[str, Any]) -> ListedIssue:
    """A `GET /issues` item; ValueError for a bad `id` or `run_id`."""
    return ListedIssue(
        id=parse_run_id(item.get("id")),
        run_id=parse_run_id(item.get("run_id")),
        status=_text_or_none(item.get("status")),
        updated_at=_time_or_none(item.get("updated_at")),
    )


# -- listing ---------------------------------------------------------------------------------


class Lister:
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


def uncovered(
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


async def walk(
    lister: Lister,
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
