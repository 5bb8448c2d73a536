"""The use case catalog and billed usage (GET /use-cases, GET /usage) in `use_cases`, `versions`
and `usage`, for dashboards (use case names, versions' environment, calls and minutes).

When: `discover` and `sync` call `refresh`. Use cases change rarely and are one request for
the whole catalog, so they are asked at most once an hour (the last refresh is the
`catalog` row of `sync_state`). Usage is asked for the window the command covers: `discover`
its whole window every time; `sync`, whose window moves every minute, at most once an hour,
then from where its last usage refresh ended (the `catalog.usage` row), so nothing between
two refreshes is missed. A failed request is reported, not raised: the catalog feeds
dashboards, and must never stop run discovery. The next command asks again, since the state
only moves on success.

A use case's `webhooks` can carry its targets' credentials (static authentication headers):
`parse_use_case` drops it before anything else looks at the item, and nothing here logs an
item, only the name of a field that made one unusable.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.api.client import ApiClient
from ingest.api.errors import ApiError
from ingest.db import run_data, tables
from ingest.db.bulk import Target
from ingest.db.driver import driver_connection
from ingest.discovery.state import read_watermark, write_watermark
from ingest.logs import get_logger

# Reused, not copied: a catalog version is a run's `version` object, so it is read by the
# same builder and written by the same statement (with its fetched_at guard) as a fetch's.
from ingest.normalize import VersionRow, version_row
from ingest.normalize.fields import (
    BadField,
    Notes,
    json_text,
    read_float,
    read_int,
    read_name,
    read_text,
    read_timestamp,
    read_uuid,
    strip_nul,
)
from ingest.store import upsert_versions

log = get_logger("ingest.catalog")

REFRESH_EVERY = timedelta(hours=1)
USE_CASES_STATE = "catalog"  # sync_state: watermark = when use cases were last refreshed
USAGE_STATE = "catalog.usage"  # sync_state: watermark = end of sync's last usage window
SECRET_FIELDS = frozenset({"webhooks"})  # never stored, never logged


def _utcnow() -> datetime:
    """The clock of the hourly rule (a function, so that tests can move it)."""
    return datetime.now(UTC)


class BadItem(ValueError):
    """An item that cannot be stored; `field` names what is wrong with it (never its value
    beyond that field)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


# -- rows: fields named and ordered like the table's columns ---------------------------------


@dataclass(frozen=True, slots=True)
class UseCaseRow:
    id: uuid.UUID
    org_id: uuid.UUID | None
    name: str | None
    slug: str | None
    icon: str | None
    source_use_case_version_id: uuid.UUID | None
    run_columns: str | None  # JSON text for the jsonb column, as sent
    timestamp: datetime | None
    data_retention_days: int | None
    sort_order: int | None  # the API's `order`
    refreshed_at: datetime


@dataclass(frozen=True, slots=True)
class UsageRow:
    org_id: uuid.UUID
    use_case_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    calls: int | None
    minutes: float | None
    refreshed_at: datetime


@dataclass
class ParsedUseCase:
    row: UseCaseRow
    versions: list[VersionRow]
    bad_versions: list[BadItem]  # versions left out; the use case itself is kept


# -- parsing (pure) --------------------------------------------------------------------------


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise BadItem(name, "is missing")
    return value


def parse_use_case(item: dict[str, Any], refreshed_at: datetime) -> ParsedUseCase:
    """A GET /use-cases item; BadItem when it cannot be stored (no UUID id, a field of the
    wrong type). A version that cannot be stored is left out, the rest kept."""
    notes = Notes()  # drift in catalog items is not tracked: nothing to keep it with
    doc = strip_nul({k: v for k, v in item.items() if k not in SECRET_FIELDS}, "", notes)
    try:
        row = UseCaseRow(
            id=_required(read_uuid(doc, "id"), "id"),
            org_id=read_uuid(doc, "org_id"),
            name=read_name(doc, "name", notes, ""),
            slug=read_name(doc, "slug", notes, ""),
            icon=read_text(doc, "icon", notes, ""),
            source_use_case_version_id=read_uuid(doc, "source_use_case_version_id"),
            run_columns=json_text(doc.get("run_columns")),
            timestamp=read_timestamp(doc, "timestamp", notes, ""),
            data_retention_days=read_int(doc, "data_retention_days", notes, ""),
            sort_order=read_int(doc, "order", notes, ""),
            refreshed_at=refreshed_at,
        )
    except BadField as bad:
        raise BadItem(bad.path, bad.problem) from None
    versions, bad_versions = [], []
    raw_versions = doc.get("versions")
    if raw_versions is not None and not isinstance(raw_versions, list):
        bad_versions.append(BadItem("versions", "is not an array"))
        raw_versions = None
    for i, version in enumerate(raw_versions or ()):
        where = f"versions[{i}]"
        if not isinstance(version, dict):
            bad_versions.append(BadItem(where, "is not an object"))
            continue
        try:
            parsed = version_row(version, refreshed_at, notes)
        except BadField as bad:
            bad_versions.append(BadItem(f"{where}.{bad.path}", bad.problem))
            continue
        if parsed is None:
            bad_versions.append(BadItem(f"{where}.id", "is missing"))
        else:
            versions.append(parsed)
    return ParsedUseCase(row, versions, bad_versions)


def parse_usage(item: dict[str, Any], refreshed_at: datetime) -> UsageRow:
    """A GET /usage item; BadItem when a key field is missing or any field is of the wrong
    type."""
    notes = Notes()
    try:
        return UsageRow(
            org_id=_required(read_uuid(item, "org_id"), "org_id"),
            use_case_id=_required(read_uuid(item, "use_case_id"), "use_case_id"),
            period_start=_required(read_timestamp(item, "start", notes, ""), "start"),
            period_end=_required(read_timestamp(item, "end", notes, ""), "end"),
            calls=read_int(item, "calls", notes, ""),
            minutes=read_float(item, "minutes", notes, ""),
            refreshed_at=refreshed_at,
        )
    except BadField as bad:
        raise BadItem(bad.path, bad.problem) from None


# -- writing ---------------------------------------------------------------------------------

_USE_CASES = Target.of(tables.use_cases, UseCaseRow)
_UPSERT_USE_CASES = _USE_CASES.insert(f"ON CONFLICT (id) DO UPDATE SET {_USE_CASES.set_all('id')}")
_USAGE_KEY = ("org_id", "use_case_id", "period_start", "period_end")
_USAGE = Target.of(tables.usage, UsageRow)
_UPSERT_USAGE = _USAGE.insert(
    f"ON CONFLICT ({', '.join(_USAGE_KEY)}) DO UPDATE SET {_USAGE.set_all(*_USAGE_KEY)}"
)

K = TypeVar("K")
R = TypeVar("R")


def _unique(rows: Sequence[R], key: Callable[[R], K]) -> list[R]:
    """One row per key (the later wins, as a second ON CONFLICT hit in one statement would
    fail), in key order, so that concurrent writers lock rows in the same order."""
    by_key = {key(r): r for r in rows}
    return [by_key[k] for k in sorted(by_key)]  # type: ignore[type-var]


# -- refresh ---------------------------------------------------------------------------------


@dataclass
class CatalogResult:
    """What one refresh did. A count is None when that part was not due (or failed)."""

    use_cases: int | None = None
    versions: int = 0
    usage: int | None = None
    skipped: int = 0  # items and versions left out as malformed (each logged)
    failed: dict[str, str] = field(default_factory=dict)  # part -> one-line API error

    def summary(self) -> str:
        parts = [
            self._part("use cases", f"{self.use_cases} use cases, {self.versions} versions"),
            self._part("usage", f"{self.usage} usage rows"),
        ]
        if self.skipped:
            parts.append(f"{self.skipped} malformed items skipped (see the log)")
        line = "catalog: " + ", ".join(parts)
        if self.failed:
            line += "; " + "; ".join(self.failed.values()) + " (asked again next time)"
        return line

    def _part(self, part: str, done: str) -> str:
        if part in self.failed:
            return f"{part} not refreshed"
        count = self.use_cases if part == "use cases" else self.usage
        return done if count is not None else f"{part} refreshed within the hour"


async def refresh(
    engine: AsyncEngine,
    client: ApiClient,
    since: datetime,
    until: datetime,
    *,
    hourly_usage: bool = False,
) -> CatalogResult:
    """Use cases (and their versions) when the last refresh is an hour old; usage over
    [since, until]. With `hourly_usage` (sync), usage too only when its last refresh is an
    hour old, and then from that refresh's end if earlier than `since`. API errors are
    logged and put in the result, never raised."""
    result = CatalogResult()
    now = _utcnow()
    if _due(await read_watermark(engine, USE_CASES_STATE), now):
        await _guarded(result, "use cases", _refresh_use_cases(engine, client, now, result))
    covered = await read_watermark(engine, USAGE_STATE) if hourly_usage else None
    if not hourly_usage or _due(covered, now):
        since = since if covered is None else min(since, covered)
        state = USAGE_STATE if hourly_usage else None
        await _guarded(
            result, "usage", _refresh_usage(engine, client, since, until, now, result, state)
        )
    log.info(
        "catalog.done",
        use_cases=result.use_cases,
        versions=result.versions,
        usage=result.usage,
        skipped=result.skipped,
        failed=sorted(result.failed),
    )
    return result


def _due(last: datetime | None, now: datetime) -> bool:
    return last is None or now - last >= REFRESH_EVERY


async def _guarded(result: CatalogResult, part: str, work: Awaitable[None]) -> None:
    try:
        await work
    except ApiError as exc:
        # str(exc) is one scrubbed line naming the request; its body stays out of the log.
        result.failed[part] = str(exc)
        log.warning("catalog.failed", part=part, error=str(exc))


async def _refresh_use_cases(
    engine: AsyncEngine, client: ApiClient, now: datetime, result: CatalogResult
) -> None:
    parsed: list[ParsedUseCase] = []
    for i, item in enumerate(await client.list_use_cases()):
        try:
            use_case = parse_use_case(item, now)
        except BadItem as bad:
            _skipped(result, "GET /use-cases", i, bad)
            continue
        for bad_version in use_case.bad_versions:
            _skipped(result, "GET /use-cases", i, bad_version, use_case=str(use_case.row.id))
        parsed.append(use_case)
    use_cases = _unique([p.row for p in parsed], lambda r: r.id)
    versions = _unique([v for p in parsed for v in p.versions], lambda v: v.id)
    async with engine.begin() as conn:
        db = await driver_connection(conn)
        if use_cases:
            await db.execute(_UPSERT_USE_CASES, *_USE_CASES.arrays(use_cases))
        await upsert_versions(db, versions)
        await write_watermark(conn, USE_CASES_STATE, now)
    result.use_cases, result.versions = len(use_cases), len(versions)
    await _refresh_run_data(engine)


async def _refresh_run_data(engine: AsyncEngine) -> None:
    """bi_run_data follows the run_columns just stored, when this role may make views."""
    made = await run_data.refresh_if_allowed(engine)
    if made:
        log.info("catalog.run_data_view", view=run_data.VIEW)
    elif made is None:
        # A least-privilege worker role cannot create views: the owner's `db upgrade` does.
        log.warning(
            "catalog.run_data_view_not_refreshed",
            view=run_data.VIEW,
            reason="this role may not create views; run `hr-ingest db upgrade` as the owner",
        )


async def _refresh_usage(
    engine: AsyncEngine,
    client: ApiClient,
    since: datetime,
    until: datetime,
    now: datetime,
    result: CatalogResult,
    state: str | None,
) -> None:
    rows: list[UsageRow] = []
    for i, item in enumerate(await client.list_usage(since, until)):
        try:
            rows.append(parse_usage(item, now))
        except BadItem as bad:
            _skipped(result, "GET /usage", i, bad)
    usage = _unique(rows, lambda r: (r.org_id, r.use_case_id, r.period_start, r.period_end))
    async with engine.begin() as conn:
        db = await driver_connection(conn)
        if usage:
            await db.execute(_UPSERT_USAGE, *_USAGE.arrays(usage))
        if state is not None:
            await write_watermark(conn, state, until)
    result.usage = len(usage)


def _skipped(result: CatalogResult, what: str, index: int, bad: BadItem, **context: str) -> None:
    result.skipped += 1
    log.warning(
        "catalog.item_skipped",
        request=what,
        index=index,
        field=bad.field,
        problem=bad.problem,
        **context,
    )
