"""The use case catalog and usage: parsing, and `discover`/`sync` refreshing `use_cases`,
`versions` and `usage` from the simulator (real HTTP) into real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import discovery
from ingest.api.client import open_client
from ingest.api.retry import RetryPolicy
from ingest.config import Settings
from ingest.discovery import Paging, SyncOptions, catalog
from ingest.simulator import Simulator
from tests.helpers import API_KEY, api_settings, run_cli

SECRET = "whsec_PLANTED-catalog-Zq7-never-stored"
PAGING = Paging(page_size=500, retry=RetryPolicy(retries=0))
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


class Served:
    """Counts what the simulator serves on GET /use-cases and GET /usage (and the usage
    windows asked for), by wrapping the simulator's own producers of those bodies."""

    def __init__(self, sim: Simulator) -> None:
        self.use_cases = 0
        self.usage: list[tuple[datetime, datetime]] = []
        use_cases_body, usage = sim.runs.use_cases_body, sim.runs.usage

        def counted_use_cases() -> bytes:
            self.use_cases += 1
            return use_cases_body()

        def counted_usage(start: datetime, end: datetime) -> list[dict[str, Any]]:
            self.usage.append((start, end))
            return usage(start, end)

        sim.runs.use_cases_body = counted_use_cases  # type: ignore[method-assign]
        sim.runs.usage = counted_usage  # type: ignore[method-assign]


def json(value: Any) -> bytes:
    """A jsonb value (text or parsed, whichever the driver gives) as comparable JSON."""
    parsed = orjson.loads(value) if isinstance(value, str) else value
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)


def replace(sim: Simulator, name: str, fn: Callable[..., Any]) -> None:
    setattr(sim.runs, name, fn)


def api_env(subprocess_env: dict[str, str], sim: Simulator) -> dict[str, str]:
    # Not the default 10 requests/s: these tests are not about the rate limit.
    return {
        **subprocess_env,
        "HAPPYROBOT_BASE_URL": sim.base_url,
        "HAPPYROBOT_API_KEY": API_KEY,
        "INGEST_RATE_LIMIT": "1000",
    }


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, *args, env=env)
    return done.returncode, done.stdout, done.stderr


# -- parsing (pure) --------------------------------------------------------------------------


def use_case_item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "icon": "truck",
        "name": "Carrier sales",
        "slug": "carrier-sales",
        "order": 2,
        "source_use_case_version_id": str(uuid.uuid4()),
        "run_columns": [{"group_id": "g", "variable_id": "v", "name": "load_id"}],
        "timestamp": "2026-01-02T03:04:05Z",
        "data_retention_days": 30,
        "webhooks": [{"url": "https://x.example", "headers": {"Authorization": SECRET}}],
        "versions": [
            {"id": str(uuid.uuid4()), "version_number": 1, "environment": "staging"},
            {"id": str(uuid.uuid4()), "version_number": 2, "environment": "production"},
        ],
    }
    item.update(changes)
    return item


def test_a_use_case_is_read_whole_but_its_webhooks() -> None:
    item = use_case_item()
    parsed = catalog.parse_use_case(item, T0)
    row = parsed.row
    assert row.id == uuid.UUID(item["id"]) and row.org_id == uuid.UUID(item["org_id"])
    assert (row.name, row.slug, row.icon) == ("Carrier sales", "carrier-sales", "truck")
    assert row.sort_order == 2 and row.data_retention_days == 30
    assert row.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert orjson.loads(row.run_columns or "null") == item["run_columns"]
    assert row.refreshed_at == T0
    assert [(v.version_number, v.environment) for v in parsed.versions] == [
        (1, "staging"),
        (2, "production"),
    ]
    assert all(v.fetched_at == T0 for v in parsed.versions) and not parsed.bad_versions
    assert SECRET not in repr(parsed)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "not-a-uuid"}, "id"),
        ({"id": None}, "id"),
        ({"order": "first"}, "order"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"data_retention_days": 2**40}, "data_retention_days"),
    ],
)
def test_a_use_case_that_cannot_be_stored_names_its_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(catalog.BadItem) as bad:
        catalog.parse_use_case(use_case_item(**changes), T0)
    assert bad.value.field == field and SECRET not in str(bad.value)


def test_a_bad_version_is_left_out_and_the_use_case_kept() -> None:
    good = {"id": str(uuid.uuid4()), "version_number": 3}
    bad_number = {"id": str(uuid.uuid4()), "version_number": "three"}
    item = use_case_item(versions=[bad_number, "v2", {"name": "no id"}, good])
    parsed = catalog.parse_use_case(item, T0)
    assert [v.version_number for v in parsed.versions] == [3]
    assert [b.field for b in parsed.bad_versions] == [
        "versions[0].version_number",
        "versions[1]",
        "versions[2].id",
    ]


def test_usage_items() -> None:
    uc, org = str(uuid.uuid4()), str(uuid.uuid4())
    item = {
        "org_id": org,
        "use_case_id": uc,
        "start": "2026-03-01T00:00:00Z",
        "end": "2026-03-02T00:00:00Z",
        "calls": 12,
        "minutes": 30.5,
    }
    row = catalog.parse_usage(item, T0)
    assert (row.period_start, row.period_end) == (
        T0 - timedelta(hours=12),
        T0 + timedelta(hours=12),
    )
    assert (row.calls, row.minutes, row.use_case_id) == (12, 30.5, uuid.UUID(uc))
    for key, value in (("use_case_id", None), ("start", None), ("org_id", "x"), ("calls", "a")):
        with pytest.raises(catalog.BadItem) as bad:
            catalog.parse_usage({**item, key: value}, T0)
        assert bad.value.field == key


# -- discover and sync against the simulator -------------------------------------------------


async def test_discover_fills_use_cases_versions_and_usage(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with Simulator(runs=400, seed=21, api_key=API_KEY) as sim:
        served = Served(sim)
        since, until = now() - timedelta(days=8), now()
        async with open_client(api_settings(settings, sim, API_KEY), engine) as client:
            tally = await discovery.discover(
                engine, client, since=since, until=until, paging=PAGING, catalog=True
            )
        assert served.use_cases == 1 and served.usage == [(since, until)]
        expected_use_cases = orjson.loads(sim.runs.use_cases_body())
        expected_usage = sim.runs.usage(since, until)
    assert tally.catalog is not None
    assert tally.catalog.summary() == (
        f"catalog: 4 use cases, 40 versions, {len(expected_usage)} usage rows"
    )

    stored = await rows(
        engine, "SELECT id, name, slug, icon, sort_order, run_columns, refreshed_at FROM use_cases"
    )
    assert {(str(r[0]), r[1], r[2], r[3], r[4], json(r[5])) for r in stored} == {
        (u["id"], u["name"], u["slug"], u["icon"], u["order"], json(u["run_columns"]))
        for u in expected_use_cases
    }
    assert all(until <= r[6] <= now() for r in stored)

    versions = await rows(
        engine, "SELECT id, use_case_id, version_number, environment FROM versions"
    )
    assert {(str(v[0]), str(v[1]), v[2], v[3]) for v in versions} == {
        (v["id"], v["use_case_id"], v["version_number"], v["environment"])
        for u in expected_use_cases
        for v in u["versions"]
    }
    assert {v[3] for v in versions} == {"staging", "production"}

    usage = await rows(
        engine,
        "SELECT count(*), sum(calls), sum(minutes), min(period_start), max(period_end) FROM usage",
    )
    assert expected_usage and usage[0][0] == len(expected_usage)
    assert usage[0][1] == sum(u["calls"] for u in expected_usage)
    assert usage[0][2] == pytest.approx(sum(u["minutes"] for u in expected_usage))
    assert usage[0][3] == min(u["start"] for u in expected_usage)
    assert usage[0][4] == max(u["end"] for u in expected_usage)
    # Names join onto runs: what the dashboards' use_case_name is made of.
    named = await rows(
        engine,
        "SELECT count(*) FILTER (WHERE u.name IS NULL) FROM runs r"
        " LEFT JOIN use_cases u ON u.id = r.use_case_id",
    )
    assert named == [(0,)]


async def test_a_second_sync_within_the_hour_does_not_ask_again(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny overlap, so that each sync's window starts after the one before it ended.
    options = SyncOptions(paging=PAGING, catalog=True, overlap=timedelta(milliseconds=1))
    async with Simulator(runs=300, seed=22, api_key=API_KEY) as sim:
        served = Served(sim)
        async with open_client(api_settings(settings, sim, API_KEY), engine) as client:
            first = await discovery.sync(engine, client, options)
            assert (served.use_cases, len(served.usage)) == (1, 1)
            assert served.usage[0] == (first.since, first.until)

            second = await discovery.sync(engine, client, options)
            assert (served.use_cases, len(served.usage)) == (1, 1)
            assert second.tally.catalog is not None
            assert second.tally.catalog.summary() == (
                "catalog: use cases refreshed within the hour, usage refreshed within the hour"
            )

            # An hour later (only the catalog's clock moves): both are asked again, and usage
            # from where the last usage refresh ended, although this sync's window starts later.
            later = now() + timedelta(minutes=61)
            monkeypatch.setattr(catalog, "_utcnow", lambda: later)
            third = await discovery.sync(engine, client, options)
            assert (served.use_cases, len(served.usage)) == (2, 2)
            assert third.since is not None and first.until is not None
            assert third.since > first.until
            assert served.usage[1] == (first.until, third.until)
    refreshed = await rows(engine, "SELECT DISTINCT refreshed_at FROM use_cases")
    assert refreshed == [(later,)]
    state = await rows(engine, "SELECT name, watermark FROM sync_state ORDER BY name")
    assert state == [
        (catalog.USE_CASES_STATE, later),
        (catalog.USAGE_STATE, third.until),
        ("sync", third.until),
        ("sync.recheck", first.until),  # change capture: hourly by sync's own clock
    ]


@pytest.mark.slow
async def test_the_webhook_secret_is_nowhere_in_the_database_or_the_output(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=200, seed=23, api_key=API_KEY, webhook_secret=SECRET) as sim:
        assert SECRET.encode() in sim.runs.use_cases_body()  # planted where the API puts it
        env = api_env(subprocess_env, sim)
        outputs = []
        for args in (("discover", "--since", "8d"), ("sync",), ("worker", "--drain")):
            code, out, err = await cli(env, *args)
            assert code == 0, err
            outputs.append(out + err)
    assert "catalog: 4 use cases, 40 versions" in outputs[0]
    assert not [o for o in outputs if SECRET in o]

    tables = await rows(
        engine,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = :schema",
        schema=settings.db_schema,
    )
    assert {"use_cases", "usage", "versions", "runs", "run_payloads", "sync_state"} <= {
        t[0] for t in tables
    }
    found = {}
    for (table,) in tables:
        texts = await rows(engine, f'SELECT t::text FROM "{table}" t')
        found[table] = sum(SECRET in t[0] for t in texts)
    assert sum(found.values()) == 0, found
    assert await rows(engine, "SELECT count(*) FROM use_cases") == [(4,)]


async def test_an_api_failure_of_the_catalog_does_not_fail_discover_or_sync(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=200, seed=24, api_key=API_KEY) as sim:
        served = Served(sim)
        counted_use_cases, counted_usage = sim.runs.use_cases_body, sim.runs.usage

        def broken(*_: Any) -> Any:
            # The handler raises, so the simulator answers HTTP 500 on that path only (its
            # fault injection targets runs, or every path at random).
            raise RuntimeError("catalog down")

        replace(sim, "use_cases_body", broken)
        env = api_env(subprocess_env, sim)
        code, out, err = await cli(env, "discover", "--since", "8d")
        assert code == 0, err
        assert "200 runs" in out
        assert "catalog: use cases not refreshed" in out and "GET /use-cases: HTTP 500" in out
        assert '"catalog.failed"' in err
        assert await rows(engine, "SELECT count(*) FROM use_cases") == [(0,)]
        assert await rows(engine, "SELECT count(*) FROM ingest_queue") == [(200,)]

        # Repaired: the next command asks again (no hour to wait), and usage failing now
        # does not stop sync from moving its watermark.
        replace(sim, "use_cases_body", counted_use_cases)
        replace(sim, "usage", broken)
        code, out, err = await cli(env, "sync")
        assert code == 0, err
        assert "catalog: 4 use cases, 40 versions, usage not refreshed" in out
        assert "GET /usage: HTTP 500" in out
        assert await rows(engine, "SELECT count(*) FROM use_cases") == [(4,)]
        assert await rows(engine, "SELECT count(*) FROM sync_state WHERE name = 'sync'") == [(1,)]

        replace(sim, "usage", counted_usage)
        code, out, err = await cli(env, "sync")
        assert code == 0, err
        assert "use cases refreshed within the hour" in out and "usage rows" in out
    assert served.use_cases == 1  # once it succeeded, not again within the hour
    assert await rows(engine, "SELECT count(*) > 0 FROM usage") == [(True,)]


async def test_malformed_items_are_skipped_with_a_log_line(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=100, seed=25, api_key=API_KEY) as sim:
        items = orjson.loads(sim.runs.use_cases_body())
        items[1]["id"] = "not-a-uuid"
        items[1]["webhooks"] = [{"headers": {"Authorization": f"Bearer {SECRET}"}}]
        items[2]["order"] = "second"
        items[3]["versions"][0]["version_number"] = "one"
        body = orjson.dumps(items)
        replace(sim, "use_cases_body", lambda: body)
        usage = sim.runs.usage

        def bad_usage(start: datetime, end: datetime) -> list[dict[str, Any]]:
            served = usage(start, end)
            served[0] = {**served[0], "use_case_id": None}
            served[1] = {**served[1], "calls": "many"}
            return served

        replace(sim, "usage", bad_usage)
        code, out, err = await cli(api_env(subprocess_env, sim), "discover", "--since", "8d")
        expected_usage = len(usage(now() - timedelta(days=8), now())) - 2
    assert code == 0, err
    assert f"catalog: 2 use cases, 19 versions, {expected_usage} usage rows" in out
    assert "5 malformed items skipped" in out
    skipped = [
        orjson.loads(line)
        for line in err.splitlines()
        if line.startswith("{") and orjson.loads(line)["event"] == "catalog.item_skipped"
    ]
    assert sorted((s["request"], s["index"], s["field"]) for s in skipped) == [
        ("GET /usage", 0, "use_case_id"),
        ("GET /usage", 1, "calls"),
        ("GET /use-cases", 1, "id"),
        ("GET /use-cases", 2, "order"),
        ("GET /use-cases", 3, "versions[0].version_number"),
    ]
    assert all(s["level"] == "warning" for s in skipped)
    assert SECRET not in out + err
    assert await rows(engine, "SELECT count(*) FROM use_cases") == [(2,)]
