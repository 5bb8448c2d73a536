"""Security: hostile run IDs (from files and from the API) never reach a URL or SQL; the API key
and the database password never show in any output; TLS is verified and cannot be switched
off; the worker runs under a role with only the grants docs/operations.md lists.

The container's non-root user is checked by tests/test_deploy.py
(`test_dockerfile_is_multi_stage_pinned_slim_and_non_root`)."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.api.client import ApiClient
from ingest.api.errors import RetryableError
from ingest.config import Secret, Settings
from ingest.simulator import Simulator
from tests.helpers import API_KEY, cli_env, dsn, run_cli, scalar
from tests.oracle import check_rows
from tests.payloads import make_run_payload

ROOT = Path(__file__).resolve().parent.parent
CANONICAL_PATH = re.compile(
    r"/api/v1/runs/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)

HOSTILE_IDS = [
    "../x",
    "../../admin",
    "%2e%2e%2fadmin",
    "%2E%2E/runs",
    "'; DROP TABLE ingest_queue; --",
    "1' OR '1'='1",
    "00000000-0000-4000-8000-000000000000'; DELETE FROM runs; --",
    "00000000-0000-4000-8000-000000000000/../../x",
    "00000000-0000-4000-8000-000000000000?x=1",
    "00000000-0000-4000-8000-000000000000#frag",
    "00000000-0000-4000-8000-000000000000%00",
    "{00000000-0000-4000-8000-000000000000}",
    "urn:uuid:00000000-0000-4000-8000-000000000000",
    "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667-0000-4000-8000-000000000000",  # Arabic-Indic
    "\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff10-0000-4000-8000-000000000000",  # fullwidth
    "0000000\u00b2-0000-4000-8000-000000000000",  # superscript two
    "00000000-0000-4000-8000-00000000000g",
    "00000000-0000-4000-8000-000000000000\u0000",
    "00000000\n-0000-4000-8000-000000000000",  # a newline inside: two bad lines in a file
    "\u202e00000000-0000-4000-8000-000000000000",  # right-to-left override
    "x" * 5000,
]


def base_env(settings: Settings, **extra: str) -> dict[str, str]:
    defaults = {
        "HAPPYROBOT_API_KEY": API_KEY,
        "INGEST_RATE_LIMIT": "5000",
        "INGEST_MAX_ATTEMPTS": "1",
    }
    return cli_env(settings, **{**defaults, **extra})


class RecordingApi:
    """An API on loopback that lists the IDs it is given (hostile ones included), serves a
    valid body for every real run, and records the raw path of every request."""

    def __init__(self, listed: list[Any], real: list[uuid.UUID]) -> None:
        now = datetime.now(UTC)
        self.items = [
            {
                "id": i,
                "status": "completed",
                "timestamp": (now - timedelta(hours=1 + n)).isoformat(),
            }
            for n, i in enumerate(listed)
        ]
        rng = random.Random(4)
        self.bodies = {str(r): orjson.dumps(make_run_payload(rng, r, events=2)) for r in real}
        self.paths: list[str] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> RecordingApi:
        app = web.Application()
        app.router.add_get("/api/v1/runs", self._list)
        app.router.add_route("GET", "/{tail:.*}", self._run)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/api/v1"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _list(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        q = request.query
        start = datetime.fromisoformat(q["start"]) if "start" in q else None
        end = datetime.fromisoformat(q["end"]) if "end" in q else None
        page = [
            i
            for i in self.items
            if (start is None or datetime.fromisoformat(i["timestamp"]) >= start)
            and (end is None or datetime.fromisoformat(i["timestamp"]) < end)
        ]
        page.sort(key=lambda i: i["timestamp"])
        offset, limit = int(q.get("offset", 0)), int(q.get("limit", 1000))
        return web.json_response(page[offset : offset + limit])

    async def _run(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        body = self.bodies.get(request.path.rsplit("/", 1)[-1])
        if body is None:
            return web.json_response({"message": "Run not found"}, status=404)
        return web.Response(body=body, content_type="application/json")


# -- run IDs from files and from the API ---------------------------------------------------------


async def test_hostile_ids_in_a_file_are_reported_by_line_and_never_queued(
    settings: Settings, engine: AsyncEngine
) -> None:
    good = [uuid.uuid4() for _ in range(3)]
    lines = [str(good[0]), *HOSTILE_IDS, str(good[1]).upper(), str(good[2]).replace("-", "")]
    content = "\n".join(lines) + "\n"
    # Line numbers as a reader counts them, newlines inside an ID included.
    bad_lines = [
        n
        for n, line in enumerate(content.split("\n"), start=1)
        if line.strip()
        and line.strip().lower() not in {str(g) for g in good}
        and line.strip().lower() not in {g.hex for g in good}
    ]
    path = Path(settings.data_dir).parent / "ids.txt"
    path.write_text(content, encoding="utf-8")
    result = run_cli("enqueue", "--file", str(path), env=base_env(settings))
    assert result.returncode == 1, result.stderr
    reported = [int(m) for m in re.findall(r"^line (\d+): ", result.stderr, re.M)]
    assert reported == bad_lines
    assert "3 new" in result.stdout
    async with engine.connect() as conn:
        queued = {r[0] for r in await conn.execute(text("SELECT run_id FROM ingest_queue"))}
        tables = await conn.execute(text("SELECT count(*) FROM ingest_queue"))
    assert queued == set(good) and tables.scalar() == 3  # and the table is still there


async def test_hostile_ids_listed_by_the_api_are_skipped_and_never_requested(
    settings: Settings, engine: AsyncEngine
) -> None:
    real = [uuid.uuid4() for _ in range(4)]
    listed: list[Any] = [*HOSTILE_IDS, 42, None, ["x"], {"id": "y"}, *map(str, real)]
    async with RecordingApi(listed, real) as api:
        env = base_env(settings, HAPPYROBOT_BASE_URL=api.base_url)
        found = await asyncio.to_thread(run_cli, "discover", "--since", "2d", env=env)
        assert found.returncode == 0, found.stderr
        assert f"{len(listed) - len(real)} invalid IDs" in found.stdout
        drained = await asyncio.to_thread(run_cli, "worker", "--drain", env=env)
        assert drained.returncode == 0, drained.stderr
    # Listings and the catalog (use cases, usage) take no run id; every other path is a fetch.
    listings = ("/api/v1/runs?", "/api/v1/use-cases", "/api/v1/usage?")
    fetched = [p for p in api.paths if not p.startswith(listings)]
    assert sorted(fetched) == sorted(f"/api/v1/runs/{r}" for r in real)
    assert all(CANONICAL_PATH.fullmatch(p) for p in fetched)
    async with engine.connect() as conn:
        queued = {r[0] for r in await conn.execute(text("SELECT run_id FROM ingest_queue"))}
    assert queued == set(real)
    assert await check_rows(engine) == []


# -- secrets -------------------------------------------------------------------------------------

PASSWORD = "pw-Qz81-NeverShown"
KEY = "sk-live-Tq93-NeverShown"


def _with_password(url: str, **changes: Any) -> str:
    return make_url(url).set(password=PASSWORD, **changes).render_as_string(hide_password=False)


@pytest.mark.slow
async def test_the_api_key_and_the_password_never_show_in_any_output(
    settings: Settings, engine: AsyncEngine
) -> None:
    assert settings.database_url is not None
    url = settings.database_url.reveal()
    good_db = _with_password(url)  # the test server trusts; the password is carried along
    unreachable_db = _with_password(url, host="127.0.0.1", port=1)
    missing_db = _with_password(url, database="no_such_database_here")
    async with Simulator(runs=5, seed=2, api_key=KEY) as sim:
        ids = [str(r) for r in sim.run_ids()]
        sim.set_status_override(ids[0], 500, b'{"message": "boom"}')
        sim.inject_fault(ids[1], "reset", times=9)
        sim.set_status_override(ids[2], 404, b'{"message": "gone"}')
        live = sim.base_url
        env = base_env(settings, DATABASE_URL=good_db, HAPPYROBOT_API_KEY=KEY)
        runs: list[tuple[tuple[str, ...], dict[str, str]]] = [
            (("enqueue", *ids), env),
            (("worker", "--drain"), dict(env, HAPPYROBOT_BASE_URL=live)),
            (("status",), env),
            (("status", "--json"), env),
            (("worker", "--drain"), dict(env, HAPPYROBOT_BASE_URL="http://127.0.0.1:1/api/v1")),
            (("discover", "--since", "1d"), dict(env, HAPPYROBOT_BASE_URL="http://127.0.0.1:1/x")),
            (("status",), dict(env, DATABASE_URL=unreachable_db, INGEST_LOG_FORMAT="console")),
            (
                ("worker", "--drain"),
                dict(env, DATABASE_URL=unreachable_db, HAPPYROBOT_BASE_URL=live),
            ),
            (("enqueue", ids[0]), dict(env, DATABASE_URL=missing_db)),
            (("db", "upgrade"), dict(env, DATABASE_URL=missing_db)),
            (("status",), dict(env, DATABASE_URL=f"postgresql://u:{PASSWORD}@bad host:x/db")),
            (
                ("worker", "--drain"),
                dict(env, HAPPYROBOT_API_KEY=KEY + "-wrong", HAPPYROBOT_BASE_URL=live),
            ),
            (("status", "--rate-limit", "-1"), env),
        ]
        # The enqueue first (the workers need its runs); the rest at once, to keep this fast.
        first = await asyncio.to_thread(run_cli, *runs[0][0], env=runs[0][1])
        results = [first] + await asyncio.gather(
            *(asyncio.to_thread(run_cli, *args, env=run_env) for args, run_env in runs[1:])
        )
        outputs = [(args, r.stdout + r.stderr) for (args, _), r in zip(runs, results, strict=True)]
        failures = sum(r.returncode != 0 for r in results)
    assert failures >= 6  # the failing commands did fail (and so printed their errors)
    for args, out in outputs:
        for secret in (PASSWORD, KEY, KEY + "-wrong"):
            assert secret not in out, (args, out[-2000:])
    # The dead letters and errors stored in the database carry no secret either.
    async with engine.connect() as conn:
        stored = " ".join(
            str(r)
            for r in await conn.execute(
                text(
                    "SELECT q.last_error, d.reason FROM ingest_queue q"
                    " LEFT JOIN dead_letters d USING (run_id)"
                )
            )
        )
    assert KEY not in stored and PASSWORD not in stored


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest_asyncio.fixture
async def https_api(self_signed: tuple[Path, Path]) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS API with a certificate nobody trusts; records every request that gets in."""
    import ssl

    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({"id": request.path.rsplit("/", 1)[-1]})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/api/v1", seen
    finally:
        await runner.cleanup()


async def test_tls_is_verified(https_api: tuple[str, list[str]]) -> None:
    url, seen = https_api
    settings = Settings(base_url=url, api_key=Secret(API_KEY))
    async with ApiClient(settings, in_claim_retries=0) as client:
        with pytest.raises(RetryableError, match=r"(?i)certificate"):
            await client.get_run(uuid.uuid4())
    assert seen == []


async def test_tls_verification_cannot_be_switched_off_from_the_environment(
    settings: Settings, engine: AsyncEngine, https_api: tuple[str, list[str]]
) -> None:
    url, seen = https_api
    run_id = uuid.uuid4()
    env = base_env(
        settings,
        HAPPYROBOT_BASE_URL=url,
        # What turns verification off for other tools; none of it may work here.
        PYTHONHTTPSVERIFY="0",
        CURL_CA_BUNDLE="",
        REQUESTS_CA_BUNDLE="",
        SSL_CERT_FILE="/dev/null",
    )
    async with engine.begin() as conn:
        await queue.enqueue(conn, [run_id])
    result = await asyncio.to_thread(run_cli, "worker", "--drain", env=env)
    assert result.returncode == 0, result.stderr
    assert seen == []
    reason = await scalar(engine, "SELECT reason FROM dead_letters WHERE run_id = :r", r=run_id)
    assert re.search("(?i)certificate", reason), reason


def test_no_code_path_turns_tls_verification_off() -> None:
    """The only way to skip verification would be in the code: there is none."""
    switches = re.compile(
        r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname\s*=\s*False|_create_unverified"
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "ingest").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if switches.search(line)
    ]
    assert offenders == []


# -- least privilege -----------------------------------------------------------------------------


async def test_the_worker_runs_under_a_role_with_only_the_documented_grants(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> None:
    """The grants of "Least database privileges" (docs/operations.md), on a role created here:
    migrations by the owner; enqueue, discovery and a worker drain by the role; no DDL."""
    role = f"hr_ingest_worker_{uuid.uuid4().hex[:8]}"
    database = make_url(database_url).database
    schema = settings.db_schema
    grants = [
        f'CREATE ROLE "{role}" LOGIN',
        f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC',
        f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{role}"',
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"',
    ]
    admin = await asyncpg.connect(dsn(database_url))
    try:
        for statement in grants:
            await admin.execute(statement)
        # As a deployment granted before migrations 0011-0013 added the daily counts and
        # percentiles: their triggers, compaction and refresh run as the owner, so nothing
        # fails and nothing is uncounted.
        await admin.execute(
            f'REVOKE ALL ON "{schema}".daily_run_counts, "{schema}".daily_call_counts,'
            f' "{schema}".daily_tool_counts, "{schema}".daily_issue_counts,'
            f' "{schema}".stale_call_days, "{schema}".daily_call_percentiles FROM "{role}"'
        )
        url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
        role_settings = settings.with_overrides(database_url=Secret(url))
        async with Simulator(runs=40, seed=9, api_key=API_KEY) as sim:
            env = base_env(role_settings, HAPPYROBOT_BASE_URL=sim.base_url, INGEST_MAX_ATTEMPTS="8")
            ids = [str(r) for r in sim.run_ids()]
            for args in (
                ("enqueue", *ids[:20]),
                ("discover", "--since", "30d"),
                ("worker", "--drain"),
                ("reprocess",),  # which compacts the daily counts at its end
            ):
                result = await asyncio.to_thread(run_cli, *args, env=env)
                assert result.returncode == 0, (args, result.stderr[-2000:])
            status = await asyncio.to_thread(run_cli, "status", env=env)
            assert status.returncode == 0, status.stderr
        assert await scalar(engine, "SELECT count(*) FROM run_payloads") == 40
        assert await check_rows(engine) == []
        assert await scalar(engine, "SELECT sum(runs) FROM bi_daily_runs") == 40
        assert await scalar(engine, "SELECT sum(calls) FROM bi_daily_calls") == await scalar(
            engine, "SELECT count(*) FROM run_sessions"
        )
        # reprocess refreshed every day's percentiles.
        assert await scalar(
            engine, "SELECT sum(calls) FROM bi_daily_call_percentiles WHERE up_to_date"
        ) == await scalar(engine, 'SELECT count(*) FROM run_sessions WHERE "timestamp" IS NOT NULL')
        # No DDL: the role can neither create nor alter nor drop.
        conn = await asyncpg.connect(dsn(url))
        try:
            for ddl in (
                f'CREATE TABLE "{schema}".x (a int)',
                f'ALTER TABLE "{schema}".runs ADD COLUMN x int',
                f'DROP TABLE "{schema}".ingest_queue',
                f'TRUNCATE "{schema}".runs CASCADE',
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(ddl)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO PUBLIC')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
