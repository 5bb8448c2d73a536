"""`hr-ingest check`: is this configuration ready to run? One line per thing checked.

Each check returns a `Line`; a failed one says what to do. The API key is tried with the
cheapest call there is (one run listed), outside the shared rate limiter: a single request
whose latency also tells whether one worker's concurrency can reach the rate limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text

from ingest.api.client import ApiClient
from ingest.api.errors import ApiError, AuthError
from ingest.api.ratelimit import configured_rate
from ingest.config import Settings
from ingest.db.driver import connection
from ingest.db.engine import create_engine
from ingest.logs import scrub

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True, slots=True)
class Line:
    what: str
    verdict: str  # OK, WARN (holds, but worth a look) or FAIL
    detail: str

    def __str__(self) -> str:
        return f"{self.what:<11} {self.verdict:<4}  {self.detail}"


def config_line(settings: Settings) -> Line:
    return Line(
        "config",
        OK,
        f"API {settings.base_url}, rate limit {settings.rate_limit:g}/s, concurrency"
        f" {settings.concurrency}, schema {settings.db_schema}",
    )


async def database_line(settings: Settings) -> tuple[Line, float | None]:
    """Reachable, and the schema at the head revision; also the server's shared rate (the one
    the workers last set), for the rate limit's line."""
    from alembic.script import ScriptDirectory

    from ingest.db import migrate

    where = settings.database_url_redacted
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    try:
        engine = create_engine(settings, pool_size=1, connect_timeout=10.0)
    except Exception as exc:  # the embedded server could not start, say
        return Line("database", FAIL, f"{where}: {_one_line(exc)}"), None
    try:
        async with connection(engine) as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
        current = await migrate.current_revision(engine)
        shared = None
        if current == head:
            async with connection(engine) as conn:
                shared = await configured_rate(conn)
    except Exception as exc:
        return Line("database", FAIL, f"{where}: cannot connect: {_one_line(exc)}"), None
    finally:
        await engine.dispose()
    found = f"{where}, PostgreSQL {str(version).split()[0]}, schema {settings.db_schema}"
    if current is None:
        return Line("database", FAIL, f"{found} has no tables: run `hr-ingest db upgrade`"), None
    if current != head:
        return (
            Line(
                "database",
                FAIL,
                f"{found} at revision {current}, this version's head is {head}: run"
                " `hr-ingest db upgrade` (or, if it is newer, upgrade hr-ingest)",
            ),
            None,
        )
    return Line("database", OK, f"{found} at revision {current} (head)"), shared


async def api_line(settings: Settings) -> tuple[Line, float | None]:
    """One run listed with the configured key; returns the request's seconds when it worked."""
    if settings.api_key is None:
        return Line("api key", FAIL, "HAPPYROBOT_API_KEY is not set"), None
    started = time.monotonic()
    try:
        async with ApiClient(settings, in_claim_retries=0) as client:
            await client.list_runs(limit=1, sort="desc")
    except AuthError as exc:
        return (
            Line(
                "api key",
                FAIL,
                f"refused by {settings.base_url} (HTTP {exc.status}): check HAPPYROBOT_API_KEY"
                " and HAPPYROBOT_ORG_ID",
            ),
            None,
        )
    except ApiError as exc:
        return Line("api key", FAIL, f"not tried: {_one_line(exc)}"), None
    except Exception as exc:
        return Line("api key", FAIL, f"{settings.base_url}: {_one_line(exc)}"), None
    seconds = time.monotonic() - started
    return Line(
        "api key", OK, f"accepted: GET /runs?limit=1 answered in {seconds * 1000:.0f} ms"
    ), seconds


def rate_line(settings: Settings, shared: float | None, request_s: float | None) -> Line:
    """The limit against what the workers share, and against what one worker can reach."""
    limit = settings.rate_limit
    if shared is not None and shared != limit:
        return Line(
            "rate limit",
            WARN,
            f"{limit:g}/s here, but the workers last set {shared:g}/s: every process sharing this"
            " database must have the same INGEST_RATE_LIMIT, or they take turns setting it",
        )
    if request_s is not None and request_s > 0:
        reach = settings.concurrency / request_s
        if reach < limit:
            return Line(
                "rate limit",
                WARN,
                f"{limit:g}/s, but one worker reaches ~{reach:.0f}/s at {request_s * 1000:.0f} ms"
                f" a request with INGEST_CONCURRENCY={settings.concurrency}: run"
                f" {int(limit // reach) + 1} workers or raise it",
            )
        return Line(
            "rate limit",
            OK,
            f"{limit:g}/s; one worker reaches ~{reach:.0f}/s at {request_s * 1000:.0f} ms"
            " a request",
        )
    return Line("rate limit", OK, f"{limit:g}/s (not compared: the API was not reached)")


async def run_checks(settings: Settings) -> list[Line]:
    db, shared = await database_line(settings)
    api, request_s = await api_line(settings)
    return [config_line(settings), db, api, rate_line(settings, shared, request_s)]


def _one_line(exc: BaseException) -> str:
    text_ = str(exc) or type(exc).__name__
    return scrub(text_.splitlines()[0])[:300]
