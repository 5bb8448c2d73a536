"""The HappyRobot API over aiohttp: one session per client, every request through the limiter.

The API key lives only in the session's default headers, built once in `__aenter__`: no
frame that can appear in a traceback holds it in a local, and errors are raised `from None`
(with the cause's type and text in their message) so no aiohttp frame's locals get logged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from ingest import __version__, jsontext
from ingest.api.errors import (
    ApiError,
    AuthError,
    InvalidBody,
    PermanentError,
    RetryableError,
)
from ingest.api.ratelimit import RateLimiter
from ingest.api.retry import RetryPolicy, parse_retry_after, with_retries
from ingest.config import Settings
from ingest.failures import FailureKind
from ingest.ids import parse_run_id
from ingest.logs import register_secret


@dataclass(frozen=True)
class FetchedRun:
    run_id: uuid.UUID
    body: bytes  # exactly as received; checked to be one JSON object
    status: int
    fetched_at: datetime
    attempts: int  # HTTP requests this fetch took, retries included
    # The body parsed while checking it, so that normalize need not parse it again.
    document: dict[str, Any] | None = None


def _iso(t: datetime) -> str:
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ApiClient:
    """`async with ApiClient(settings, limiter) as api: await api.get_run(run_id)`."""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter | None = None,
        *,
        in_claim_retries: int = 2,
        max_backoff: float = 5.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
    ) -> None:
        self._settings = settings
        self._limiter = limiter
        self._policy = RetryPolicy(retries=in_claim_retries, max_backoff=max_backoff)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._base = URL(settings.base_url.rstrip("/"))
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = asyncio.Semaphore(settings.concurrency)
        self.responses: dict[int, int] = {}  # HTTP status -> responses, read by ops.metrics
        if settings.api_key is not None:
            register_secret(settings.api_key.reveal())

    @property
    def limiter(self) -> RateLimiter | None:
        return self._limiter

    def __repr__(self) -> str:
        return f"ApiClient(base_url={str(self._base)!r})"

    async def __aenter__(self) -> ApiClient:
        headers = {"accept": "application/json", "user-agent": f"hr-ingest/{__version__}"}
        if self._settings.api_key is not None:
            headers["authorization"] = f"Bearer {self._settings.api_key.reveal()}"
        if self._settings.org_id is not None:
            headers["x-organization-id"] = self._settings.org_id
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=self._timeout,
            # The pool is the per-process concurrency cap (INGEST_CONCURRENCY).
            connector=aiohttp.TCPConnector(limit=self._settings.concurrency, ttl_dns_cache=300),
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_run(self, run_id: uuid.UUID | str) -> FetchedRun:
        """GET /runs/{id}: the body as received, after a few in-call retries of transient errors."""
        rid = parse_run_id(run_id)
        what = f"GET /runs/{rid}"
        url = self._base / "runs" / str(rid)

        async def once() -> tuple[int, bytes, dict[str, Any]]:
            status, body, whole = await self._get(url, what)
            try:
                return status, body, jsontext.loads_object(body)
            except jsontext.JsonError as exc:
                if whole:
                    raise InvalidBody(what, exc.reason, status=status, body=body) from None
                raise _unreadable(what, status, body, exc, whole=False) from None

        (status, body, document), attempts = await with_retries(once, self._policy, what)
        return FetchedRun(rid, body, status, datetime.now(UTC), attempts, document)

    async def list_runs(
        self,
        *,
        limit: int = 1000,
        offset: int = 0,
        use_case_id: uuid.UUID | str | None = None,
        status: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        completed_start: datetime | None = None,
        completed_end: datetime | None = None,
        sort: str = "asc",
    ) -> list[dict[str, Any]]:
        """One page of GET /runs (a page shorter than `limit` is the last)."""
        params: dict[str, str] = {"limit": str(limit), "offset": str(offset), "sort": sort}
        if use_case_id is not None:
            params["use_case_id"] = str(parse_run_id(use_case_id))
        if status is not None:
            params["status"] = status
        for name, value in (
            ("start", start),
            ("end", end),
            ("completed_start", completed_start),
            ("completed_end", completed_end),
        ):
            if value is not None:
                params[name] = _iso(value)
        url = (self._base / "runs").with_query(params)
        return await self._get_objects(url, f"GET /runs?offset={offset}")

    async def list_use_cases(self) -> list[dict[str, Any]]:
        """GET /use-cases, whole (no paging documented). Items carry `webhooks`, which can hold
        credentials: whoever reads them drops it first (ingest.discovery.catalog does)."""
        return await self._get_objects(self._base / "use-cases", "GET /use-cases")

    async def list_usage(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """GET /usage: billed calls and minutes per use case and period within [start, end]."""
        url = (self._base / "usage").with_query({"start": _iso(start), "end": _iso(end)})
        return await self._get_objects(url, "GET /usage")

    async def list_issues(self, use_case_id: uuid.UUID | str) -> list[dict[str, Any]]:
        """GET /issues?use_case_id=: every issue of the use case's runs, whole (no paging
        documented), as they are now."""
        uc = str(parse_run_id(use_case_id))
        url = (self._base / "issues").with_query({"use_case_id": uc})
        return await self._get_objects(url, "GET /issues")

    async def _get_objects(self, url: URL, what: str) -> list[dict[str, Any]]:
        """A bare JSON array of objects (what every listing endpoint answers), after a few
        in-call retries."""

        async def once() -> list[dict[str, Any]]:
            # A listing has no dead letter: whatever is wrong with it, its caller asks again.
            status_code, body, whole = await self._get(url, what)
            try:
                page = jsontext.loads(body)
            except jsontext.JsonError as exc:
                raise _unreadable(what, status_code, body, exc, whole=whole) from None
            if not isinstance(page, list) or not all(isinstance(i, dict) for i in page):
                raise RetryableError(
                    what,
                    "unparsable body (not a JSON array of objects)",
                    kind=FailureKind.INVALID_BODY,
                    status=status_code,
                    body=body,
                )
            return page

        page, _ = await with_retries(once, self._policy, what)
        return page

    async def _get(self, url: URL, what: str) -> tuple[int, bytes, bool]:
        """One request under the limiter: (status, body, whole) for a 2xx, else the matching
        ApiError. `whole`: the body's framing (Content-Length, or chunked) proves it complete;
        a transfer cut against it raises ClientPayloadError instead. Without either, the body
        ends where the connection did, and a cut cannot be told from the end."""
        if self._session is None:
            raise RuntimeError("ApiClient used outside `async with`")
        async with self._in_flight:
            # The token is taken once a pooled connection is sure to be free: a token spent
            # queueing for the pool would reach the API late and bunch up with later ones.
            if self._limiter is not None:
                await self._limiter.acquire()
            try:
                async with self._session.get(url) as resp:
                    status, body = resp.status, await resp.read()
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    chunked = resp.headers.get("Transfer-Encoding", "").lower().endswith("chunked")
                    whole = chunked or resp.content_length is not None
            except TimeoutError:
                raise RetryableError(
                    what, "timed out waiting for the API", kind=FailureKind.TIMEOUT
                ) from None
            except aiohttp.ClientError as exc:
                # A payload error is a body that ended before its framing said it would.
                cut = isinstance(exc, aiohttp.ClientPayloadError)
                kind = FailureKind.CUT_TRANSFER if cut else FailureKind.CONNECTION
                raise RetryableError(what, f"{type(exc).__name__}: {exc}", kind=kind) from None
        self.responses[status] = self.responses.get(status, 0) + 1
        if 200 <= status < 300:
            return status, body, whole
        if status == 429 and self._limiter is not None:
            # Slow every process sharing the limiter, not just this request.
            await self._limiter.penalize(retry_after)
        raise _error(what, status, body, retry_after)


def _error(what: str, status: int, body: bytes, retry_after: float | None) -> ApiError:
    detail, kind = _message(body), FailureKind.of_http_status(status)
    if status in (401, 403):
        detail += " (the API key or organization id is wrong)"
        return AuthError(what, detail, kind=kind, status=status, body=body)
    if status in (408, 429) or status >= 500:
        return RetryableError(
            what, detail, kind=kind, status=status, body=body, retry_after=retry_after
        )
    return PermanentError(what, detail, kind=kind, status=status, body=body)


def _unreadable(
    what: str, status: int, body: bytes, exc: jsontext.JsonError, *, whole: bool
) -> RetryableError:
    # Without framing that proves it whole, an unparsable body is most likely a cut one.
    cut = "" if whole else f" (body of {len(body)} bytes, perhaps cut short)"
    kind = FailureKind.INVALID_BODY if whole else FailureKind.CUT_TRANSFER
    return RetryableError(what, f"{exc.reason}{cut}", kind=kind, status=status, body=body)


def _message(body: bytes) -> str:
    """The API's `{"message": ...}`, or the start of whatever the body is."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        text: str = parsed["message"]
    else:
        text = body[:200].decode("utf-8", "replace") or "(empty body)"
    return text if len(text) <= 200 else text[:197] + "..."


@asynccontextmanager
async def open_client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[ApiClient]:
    """An ApiClient under the rate limiter that every process on `engine`'s database shares."""
    limiter = RateLimiter(engine, settings.rate_limit)
    try:
        async with ApiClient(settings, limiter) as client:
            yield client
    finally:
        await limiter.close()
