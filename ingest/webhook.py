"""`hr-ingest webhook`: runs announced over HTTP by HappyRobot workflows, put in line at once.

A workflow's webhook node (or its webhook settings) POSTs a JSON body its author writes, with a
static authentication header. Each run id in it is enqueued at high priority with a NOTIFY, so
an idle worker fetches it within ~100 ms. A webhook is a hint, never the only path: the API
documents no delivery guarantee, and `sync` finds whatever never came.

Answers: 202 {"enqueued": n, ...}; 400 not a JSON object; 401 no or wrong secret (no detail);
405 not POST; 413 over 64 KiB; 422 no run id, too many, or one that is not a UUID (named);
503 with Retry-After while the database cannot take them (nothing was written: call again).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from multidict import MultiMapping
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.config import Secret
from ingest.db.driver import DatabaseUnavailable, connection, transaction
from ingest.ids import InvalidRunId, parse_run_id
from ingest.ops.server import serve

log = structlog.get_logger("ingest.webhook")

DEFAULT_HOST = "0.0.0.0"  # a container's port is reached from outside its loopback
DEFAULT_PORT = 8080
MAX_BODY = 64 * 1024
MAX_IDS = 1000  # bounded work per request
PRIORITY = 100  # ahead of sync (0) and of `enqueue --priority` up to 99
SOURCE = "webhook"
RETRY_AFTER_S = 5
# Far below aiohttp's 8 KiB: a webhook's headers are a few hundred bytes.
MAX_FIELD_SIZE = 4096


class Refused(Exception):
    """The request is answered with `status` and `message` (safe to show: no secret in it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# -- what a request says --------------------------------------------------------------------


def presented_secrets(headers: Mapping[str, str]) -> list[bytes]:
    """Every secret the request presents: a Bearer token, an X-Api-Key, a Basic password."""
    found = []
    if key := headers.get("X-Api-Key"):
        found.append(key.strip().encode())
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        found.append(value.strip().encode())
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        found.append(decoded.partition(b":")[2])
    return found


def authorized(headers: Mapping[str, str], secret: bytes) -> bool:
    """Whether one of the presented secrets is ours, compared in constant time (all of them
    are compared, so the time does not say which header came closest either)."""
    ok = False
    for presented in presented_secrets(headers):
        ok |= hmac.compare_digest(presented, secret)
    return ok


def run_ids_of(body: bytes, query: MultiMapping[str]) -> list[uuid.UUID]:
    """The runs a call names, deduplicated, in order: `run_ids`/`run_id` of the body, else
    `run.id`, else `id`; and `?run_id=` on the URL. Raises Refused."""
    named: list[object] = list(query.getall("run_id", []))
    if body.strip():
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(doc, dict):
            raise Refused(400, "the body is not a JSON object")
        named += _named_in(doc)
    if not named:
        raise Refused(422, "no run id: send run_id, run_ids, run.id or id (or ?run_id=)")
    if len(named) > MAX_IDS:
        raise Refused(422, f"too many run ids: {len(named)} (at most {MAX_IDS} a call)")
    ids: dict[uuid.UUID, None] = {}
    for value in named:
        try:
            ids[parse_run_id(value)] = None
        except InvalidRunId as exc:
            raise Refused(422, str(exc)) from None
    return list(ids)


def _named_in(doc: dict[str, Any]) -> list[object]:
    if "run_ids" in doc or "run_id" in doc:
        many = doc.get("run_ids", [])
        if not isinstance(many, list):
            raise Refused(422, "run_ids is not a list")
        return [*many, *([doc["run_id"]] if "run_id" in doc else [])]
    run = doc.get("run")
    if isinstance(run, dict) and "id" in run:
        return [run["id"]]
    if "id" in doc:
        return [doc["id"]]
    return []


# -- the server -----------------------------------------------------------------------------


class SchemaMissing(Exception):
    """The database answers but holds no queue in the configured schema."""


async def prepare(engine: AsyncEngine, connections: int) -> None:
    """Refuse to start against a schema without hr-ingest's queue (a wrong INGEST_DB_SCHEMA
    would answer 500 to every call), and make `connections` ready before the first call:
    opened, with the enqueue statement prepared (the first calls of a burst would otherwise
    wait ~0.3 s for them). A database that cannot be reached is waited out: calls get 503
    until it answers."""
    try:
        async with connection(engine) as conn:
            found = await conn.exec_driver_sql("SELECT to_regclass('ingest_queue') IS NOT NULL")
            present = found.scalar()
        if present:
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(connections):
                    conn = await stack.enter_async_context(connection(engine))
                    # The first enqueue on a connection prepares its statement and looks up
                    # the uuid[] type: ~50 ms, once. Done here, rolled back.
                    async with conn.begin() as tx:
                        await queue.enqueue(conn, [uuid.UUID(int=0)], source=SOURCE)
                        await tx.rollback()
    except (DatabaseUnavailable, PoolTimeout) as exc:
        log.warning(
            "webhook: database unavailable at start; answering 503 until it is back",
            error=str(exc),
        )
        return
    if not present:
        raise SchemaMissing(
            "no ingest_queue table in the configured schema: run `hr-ingest db upgrade`"
            " (or check INGEST_DB_SCHEMA)"
        )


def _answer(code: int, **fields: object) -> web.Response:
    return web.Response(status=code, body=orjson.dumps(fields), content_type="application/json")


class WebhookServer:
    """`async with WebhookServer(engine, secret, port=0) as s:` serves on `s.port`."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: Secret,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
    ) -> None:
        if not secret.reveal():
            raise ValueError("an empty secret would let anyone in")
        self.engine = engine
        self.host = host
        self.port = port
        self._secret = secret.reveal().encode()
        self._runner: web.AppRunner | None = None
        self.counts: dict[int, int] = {}  # answers by status, for the log at shutdown

    async def __aenter__(self) -> WebhookServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(
            client_max_size=MAX_BODY, handler_args={"max_field_size": MAX_FIELD_SIZE}
        )
        app.router.add_post("/", self._announce)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # No access log: ours says what matters, and never a header.
        self._runner, self.port = await serve(app, self.host, self.port, 5.0, backlog=1024)
        log.info("webhook listening", url=self.url, host=self.host)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _announce(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            response = await self._enqueue(request)
        except Refused as exc:
            # A 422 quotes the id it refuses: never the secret, should a caller send it as one.
            text = exc.message.replace(self._secret.decode(), "[secret]")
            response = _answer(exc.status, error=text)
            if exc.status == 503:
                response.headers["Retry-After"] = str(RETRY_AFTER_S)
        except Exception:  # a bug or a refused statement: said, never a 2xx
            log.exception("webhook: not enqueued")
            response = _answer(500, error="internal error; nothing was enqueued")
        self.counts[response.status] = self.counts.get(response.status, 0) + 1
        log.info(
            "webhook",
            status=response.status,
            remote=request.remote,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response

    async def _enqueue(self, request: web.Request) -> web.Response:
        if not authorized(request.headers, self._secret):
            raise Refused(401, "unauthorized")
        if (request.content_length or 0) > MAX_BODY:
            raise Refused(413, f"the body is over {MAX_BODY} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refused(413, f"the body is over {MAX_BODY} bytes") from None
        ids = run_ids_of(body, request.query)
        try:
            async with transaction(self.engine) as conn:
                result = await queue.enqueue(conn, ids, source=SOURCE, priority=PRIORITY)
        except (DatabaseUnavailable, PoolTimeout) as exc:
            log.warning("webhook: database unavailable", error=str(exc), runs=len(ids))
            raise Refused(503, "the database is unavailable; call again") from None
        return _answer(
            202,
            enqueued=len(ids),
            added=result.added,
            refreshed=result.refreshed,
            unchanged=result.unchanged,
        )

    async def _healthz(self, _: web.Request) -> web.Response:
        return _answer(200, status="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        try:
            async with connection(self.engine) as conn:
                await conn.exec_driver_sql("SELECT 1")
        except (DatabaseUnavailable, PoolTimeout):
            return _answer(503, status="database unavailable")
        return _answer(200, status="ready")
