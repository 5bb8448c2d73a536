"""`hr-ingest webhook` over real HTTP and PostgreSQL: each answer, the secret kept, nothing
acknowledged that was not written, and a run announced while it runs landing complete."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import webhook
from ingest.config import Secret, Settings
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from ingest.webhook import WebhookServer
from tests.helpers import API_KEY, cli_env, free_port, scalar, start_cli

SECRET = "whk-Secret-9f3Kq-never-shown"
U = [uuid.UUID(int=n, version=4) for n in range(1, 9)]


@pytest_asyncio.fixture
async def server(engine: AsyncEngine) -> AsyncIterator[WebhookServer]:
    async with WebhookServer(engine, Secret(SECRET), host="127.0.0.1", port=0) as s:
        yield s


async def post(
    url: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = orjson.dumps(body) if isinstance(body, dict) else body
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers or {}) as response,
    ):
        raw = await response.read()
        try:
            doc = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            doc = {"text": raw.decode(errors="replace")}
        return response.status, doc, dict(response.headers)


BEARER = {"Authorization": f"Bearer {SECRET}"}


async def queued(engine: AsyncEngine) -> dict[uuid.UUID, tuple[str, int, str]]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            "SELECT run_id, source, priority, state FROM ingest_queue"
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def test_each_way_of_naming_runs_and_authenticating_is_enqueued_at_high_priority(
    server: WebhookServer, engine: AsyncEngine
) -> None:
    basic = base64.b64encode(f"happyrobot:{SECRET}".encode()).decode()
    calls: list[tuple[str, dict[str, Any] | None, dict[str, str]]] = [
        ("/", {"run_id": str(U[0]), "status": "completed"}, BEARER),
        ("/", {"id": str(U[1])}, {"X-Api-Key": SECRET}),
        ("/", {"run": {"id": str(U[2]), "use_case": "x"}}, {"Authorization": f"Basic {basic}"}),
        (f"/?run_id={U[3]}", None, BEARER),
        ("/", {"run_ids": [str(U[4]), str(U[5]).replace("-", ""), str(U[4])]}, BEARER),
    ]
    answers = [await post(server.url + path, body, h) for path, body, h in calls]
    assert [(status, doc["enqueued"]) for status, doc, _ in answers] == [
        (202, 1),
        (202, 1),
        (202, 1),
        (202, 1),
        (202, 2),
    ]
    assert await queued(engine) == {u: ("webhook", webhook.PRIORITY, "pending") for u in U[:6]}

    # The same id again: still one row, counted as unchanged.
    status, doc, _ = await post(server.url, {"run_id": str(U[0])}, BEARER)
    assert (status, doc["added"], doc["unchanged"]) == (202, 0, 1)
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue") == 6


async def test_a_run_sync_queued_first_moves_ahead_when_a_webhook_names_it(
    server: WebhookServer, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO ingest_queue (run_id, source, available_at) VALUES"
            f" ('{U[0]}', 'sync', now()), ('{U[1]}', 'sync', now())"
        )
    status, _, _ = await post(server.url, {"run_id": str(U[0])}, BEARER)
    assert status == 202
    rows = await queued(engine)
    assert rows[U[0]] == ("webhook", webhook.PRIORITY, "pending")
    assert rows[U[1]] == ("sync", 0, "pending")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"run_id": str(U[0])}),
        ({"Authorization": "Bearer wrong"}, {"run_id": str(U[0])}),
        ({"Authorization": f"Bearer {SECRET}x"}, {"run_id": str(U[0])}),
        ({"X-Api-Key": SECRET[:-1]}, {"run_id": str(U[0])}),
        ({"Authorization": "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()}, {}),
        ({"Authorization": "Basic not base64!"}, {}),
        ({"Authorization": SECRET}, {}),  # no scheme
    ],
    ids=["none", "wrong", "longer", "shorter", "user-not-password", "bad-basic", "no-scheme"],
)
async def test_a_missing_or_wrong_secret_is_401_with_no_detail(
    server: WebhookServer, engine: AsyncEngine, headers: dict[str, str], body: dict[str, Any]
) -> None:
    status, doc, response_headers = await post(server.url, body, headers)
    assert (status, doc) == (401, {"error": "unauthorized"})
    assert SECRET not in str(response_headers)
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue") == 0


async def test_the_secret_is_compared_in_constant_time(
    server: WebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = webhook.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhook.hmac, "compare_digest", spy)
    await post(server.url, {"run_id": str(U[0])}, {"Authorization": "Bearer nope"})
    await post(server.url, {"run_id": str(U[0])}, {"X-Api-Key": SECRET})
    assert compared == [(b"nope", SECRET.encode()), (SECRET.encode(), SECRET.encode())]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        (b'["' + str(U[0]).encode() + b'"]', 400, "not a JSON object"),
        (b"{}", 422, "no run id"),
        (b'{"run_id": "../../etc/passwd"}', 422, "'../../etc/passwd'"),
        (b'{"run_ids": ["' + str(U[0]).encode() + b'", 7]}', 422, "7"),
        (b'{"run_ids": "' + str(U[0]).encode() + b'"}', 422, "not a list"),
        (b'{"run_id": null}', 422, "None"),
        (orjson.dumps({"run_ids": [str(U[0])] * 1001}), 422, "too many"),
        (b"{" + b" " * (64 * 1024) + b"}", 413, "over 65536 bytes"),
    ],
    ids=["bad-json", "array", "empty", "path", "number", "string", "null", "1001", "65k"],
)
async def test_bad_bodies_are_refused_with_a_reason_and_nothing_enqueued(
    server: WebhookServer, engine: AsyncEngine, body: bytes, status: int, says: str
) -> None:
    got, doc, _ = await post(server.url, body, BEARER)
    assert got == status
    assert says in doc["error"]
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue") == 0


async def test_only_post_on_the_root_and_health_without_the_secret(
    server: WebhookServer,
) -> None:
    assert (await post(server.url, method="GET"))[0] == 405
    assert (await post(server.url, method="PUT", headers=BEARER))[0] == 405
    assert (await post(server.url + "/other", {"run_id": str(U[0])}, BEARER))[0] == 404
    status, doc, _ = await post(server.url + "/healthz", method="GET")
    assert (status, doc) == (200, {"status": "ok"})
    status, doc, _ = await post(server.url + "/readyz", method="GET")
    assert (status, doc) == (200, {"status": "ready"})


# -- the database away ----------------------------------------------------------------------


class Gate:
    """A TCP relay to PostgreSQL that can be shut (connections dropped, new ones refused)
    and opened again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.port = upstream, free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def shut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._links):
            w.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._links |= {writer, up_writer}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links -= {writer, up_writer}


async def test_database_down_is_503_with_retry_after_then_the_same_call_succeeds(
    settings: Settings, engine: AsyncEngine
) -> None:
    assert settings.database_url is not None
    url = make_url(settings.database_url.reveal())
    gate = Gate((url.host or "127.0.0.1", url.port or 5432))
    await gate.open()
    gated = create_engine(
        settings,
        url.set(drivername="postgresql+asyncpg", host="127.0.0.1", port=gate.port).render_as_string(
            hide_password=False
        ),
        pool_size=2,
    )
    try:
        async with WebhookServer(gated, Secret(SECRET), host="127.0.0.1", port=0) as server:
            call = {"run_id": str(U[0])}
            assert (await post(server.url, call, BEARER))[0] == 202
            await gate.shut()
            status, doc, headers = await post(server.url, {"run_id": str(U[1])}, BEARER)
            assert (status, headers.get("Retry-After")) == (503, str(webhook.RETRY_AFTER_S))
            assert "call again" in doc["error"]
            assert (await post(server.url + "/readyz", method="GET"))[0] == 503
            await gate.open()
            status, doc, _ = await post(server.url, {"run_id": str(U[1])}, BEARER)
            assert (status, doc["added"]) == (202, 1)
    finally:
        await gated.dispose()
        with contextlib.suppress(AssertionError):
            await gate.shut()
    assert set(await queued(engine)) == {U[0], U[1]}


# -- the command -----------------------------------------------------------------------------


async def test_the_command_refuses_to_start_without_a_secret(
    subprocess_env: dict[str, str],
) -> None:
    proc = await start_cli(subprocess_env, "webhook", "--port", "0")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == [
        "hr-ingest: error: INGEST_WEBHOOK_SECRET: required to start the webhook (set it in the"
        " environment)"
    ]


# -- announced, fetched, polled, landed ------------------------------------------------------


async def test_a_run_announced_while_it_runs_lands_complete_with_its_freshness(
    settings: Settings, engine: AsyncEngine, server: WebhookServer
) -> None:
    from ingest.api.client import open_client
    from ingest.ops.metrics import Metrics
    from ingest.simulator.data import RUNNING
    from ingest.worker import Worker, WorkerOptions
    from tests.helpers import api_settings, run_cli_async

    async with Simulator(runs=200, seed=31, api_key=API_KEY) as sim:
        run = next(r for r in sim.runs.by_key.values() if r.stage == RUNNING)
        options = WorkerOptions(first_webhook_poll_s=0.3, flush_interval_s=0.05, idle_poll_s=0.5)
        s = api_settings(settings, sim)
        async with open_client(s, engine) as client:
            worker = Worker(s, engine, client, options)
            working = asyncio.create_task(worker.run())
            try:
                status, _, _ = await post(server.url, {"run_id": str(run.id)}, BEARER)
                assert status == 202
                for _ in range(200):  # fetched running, then polled again 0.3 s later
                    stored = await scalar(engine, "SELECT status FROM runs WHERE id = :r", r=run.id)
                    if stored not in (None, "scheduled", "running"):
                        break
                    await asyncio.sleep(0.05)
            finally:
                worker.stop()
                await working
        assert stored == run.final_status
        assert sim.fetch_count(run.id) == 2  # not a minute later: the webhook's quick poll
        assert (
            await scalar(engine, "SELECT count(*) FROM run_events WHERE run_id = :r", r=run.id)
            == run.n_events
        )

        async with engine.connect() as conn:
            row = (
                await conn.exec_driver_sql(
                    "SELECT q.source, q.polls, q.state,"
                    " extract(epoch FROM q.landed_at - r.completed_at), q.freshness_s"
                    " FROM ingest_queue q JOIN runs r ON r.id = q.run_id"
                    f" WHERE q.run_id = '{run.id}'"
                )
            ).one()
        source, polls, state, since_completed, freshness = row
        assert (source, polls, state) == ("webhook", 0, "done")
        assert freshness == pytest.approx(float(since_completed), abs=5.0)

        # The histogram of the worker's /metrics, and `status`.
        metrics = Metrics(worker).render().decode()
        assert 'hr_ingest_run_freshness_seconds_count{source="webhook"} 1.0' in metrics
        code, out, err = await run_cli_async(cli_env(settings), "status")
        assert code == 0, err
        lines = out.splitlines()
        at = lines.index(
            "call ended -> in the tables, runs first stored finished in the last hour:"
        )
        assert lines[at + 1].split() == ["came", "by", "runs", "p50", "p95"]
        assert lines[at + 2].split()[:2] == ["webhook", "1"]


async def test_the_secret_is_in_no_output_of_the_command_when_calls_fail(
    subprocess_env: dict[str, str],
) -> None:
    port = free_port()
    env = {**subprocess_env, "INGEST_WEBHOOK_SECRET": SECRET, "INGEST_LOG_LEVEL": "debug"}
    proc = await start_cli(env, "webhook", "--port", str(port), "--host", "127.0.0.1")
    url = f"http://127.0.0.1:{port}/"
    answers = []
    try:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                if (await post(url + "healthz", method="GET"))[0] == 200:
                    break
            await asyncio.sleep(0.1)
        basic = base64.b64encode(f"{SECRET}:{SECRET}x".encode()).decode()
        for headers, body in [
            ({"Authorization": f"Bearer {SECRET}x"}, {"run_id": str(U[0])}),
            ({"Authorization": f"Basic {basic}"}, {"run_id": str(U[0])}),
            ({"X-Api-Key": SECRET[1:]}, {"run_id": SECRET}),
            (BEARER, {"run_id": SECRET}),  # authorized, but the id is the secret itself
            (BEARER, b"{" + SECRET.encode()),
        ]:
            answers.append(await post(url, body, headers))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert [a[0] for a in answers] == [401, 401, 401, 422, 400]
    assert proc.returncode == 0, err.decode()[-2000:]
    output = out.decode() + err.decode() + repr(answers)
    assert SECRET not in output
    assert "webhook: 1 x 400, 3 x 401, 1 x 422" in out.decode()


async def test_an_announced_run_is_fetched_ahead_of_a_backlog_the_worker_holds(
    settings: Settings, engine: AsyncEngine, server: WebhookServer
) -> None:
    from ingest.api.client import open_client
    from ingest.worker import Worker, WorkerOptions
    from tests.helpers import api_settings, enqueue, wait_for

    async with Simulator(runs=70, seed=32, api_key=API_KEY) as sim:
        backlog, announced = sim.run_ids()[:60], sim.run_ids()[60]
        await enqueue(engine, backlog)
        # 20 requests/s: the worker claims the whole backlog at once and works through it
        # for three seconds.
        s = api_settings(settings, sim).with_overrides(rate_limit=20.0, concurrency=2)
        options = WorkerOptions(flush_interval_s=0.05, idle_poll_s=0.5)
        async with open_client(s, engine) as client:
            worker = Worker(s, engine, client, options)
            working = asyncio.create_task(worker.run())
            try:
                await wait_for(engine, "SELECT count(*) FROM runs", lambda n: n >= 3, 30)
                assert (await post(server.url, {"run_id": str(announced)}, BEARER))[0] == 202
                await wait_for(
                    engine, f"SELECT count(*) FROM runs WHERE id = '{announced}'", bool, 30
                )
            finally:
                worker.stop()
                await working
        fetched_before = await scalar(
            engine,
            "SELECT count(*) FROM runs WHERE fetched_at < (SELECT fetched_at FROM runs"
            " WHERE id = :r)",
            r=announced,
        )
    assert fetched_before < 15  # of the 60 held: it went next, not last


async def test_the_command_refuses_a_schema_without_the_queue(
    subprocess_env: dict[str, str],
) -> None:
    env = {**subprocess_env, "INGEST_WEBHOOK_SECRET": SECRET, "INGEST_DB_SCHEMA": "no_such_one"}
    proc = await start_cli(env, "webhook", "--port", "0")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert err.decode().strip().splitlines()[-1] == (
        "hr-ingest: webhook failed: SchemaMissing: no ingest_queue table in the configured"
        " schema: run `hr-ingest db upgrade` (or check INGEST_DB_SCHEMA)"
    )
