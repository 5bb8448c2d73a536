"""The simulated HappyRobot API over real HTTP: auth, its endpoints, latency, faults, a 429 limit.

Endpoints: GET /runs/{id}, GET /runs, GET /use-cases, GET /usage and GET /issues.

Handlers stay minimal because the simulator shares a 2-core machine with the pipeline it
feeds at 800 runs/s: bodies come pre-rendered from `RunSet`, there is no middleware and no
access log, and every per-request decision is a dict lookup or a random draw.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import math
import random
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from ingest.simulator import data, params
from ingest.simulator.data import RunSet

API_PREFIX = "/api/v1"
# Injected at random with --error-rate (equal shares), or per run with `inject_fault`.
FAULTS = ("500", "502", "503", "timeout", "truncate", "reset")
_JSON = {"Content-Type": "application/json"}


@dataclass
class _Override:
    status: int
    body: bytes
    headers: dict[str, str]
    times: int | None  # None: until cleared


@dataclass
class SimulatorStats:
    """What the simulator saw, so tests and benchmarks can check the client's behaviour."""

    total_requests: int = 0
    rate_limited: int = 0  # 429s sent because of --rate-limit
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)  # injected faults, by kind
    # Requests by route, e.g. "/api/v1/issues" or "/api/v1/runs/{run_id}".
    by_route: Counter[str] = field(default_factory=Counter)
    request_times: list[float] = field(default_factory=list)  # time.monotonic() of each

    def reset(self) -> None:
        self.total_requests = self.rate_limited = 0
        self.by_status.clear()
        self.faults.clear()
        self.by_route.clear()
        self.request_times.clear()

    def per_second(self) -> list[int]:
        """Requests received in each whole second since the first one."""
        if not self.request_times:
            return []
        t0 = self.request_times[0]
        counts = Counter(int(t - t0) for t in self.request_times)
        return [counts[s] for s in range(max(counts) + 1)]

    def between(self, start: float, end: float) -> list[float]:
        """Times of the requests received in [start, end) (time.monotonic(), as recorded)."""
        times = self.request_times
        return times[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)]

    def max_in_window(
        self, window: float = 1.0, *, start: float = -math.inf, end: float = math.inf
    ) -> int:
        """The most requests received in any sliding window of `window` seconds."""
        times, best, lo = self.between(start, end), 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


class Simulator:
    """The API on 127.0.0.1 (a free port by default), as an async context manager."""

    def __init__(
        self,
        runs: int = 500,
        seed: int = 1,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        rate_limit: float | None = None,
        api_key: str = "test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stall_seconds: float = 35.0,
        now: datetime | None = None,
        history: timedelta = timedelta(days=7),
        prerender: bool = False,
        webhook_secret: str | None = None,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if rate_limit is not None and rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 request per second")
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.rate_limit = rate_limit
        self.stall_seconds = stall_seconds
        self.stats = SimulatorStats()
        self._auth = f"Bearer {api_key}"
        self._host, self._port = host, port
        now = now or datetime.now(UTC).replace(microsecond=0)
        # webhook_secret: what the use cases' webhooks authenticate with (None: from the seed).
        self.runs = RunSet(seed, now, webhook_secret)
        self.runs.add(runs, start=now - history, end=now)
        self.org_id = uuid.UUID(self.runs.org_id)
        # Separate streams, so turning faults on does not change latencies, and vice versa.
        self._fault_rng = random.Random(seed + 1)
        self._latency_rng = random.Random(seed + 2)
        self._window: deque[float] = deque()  # accepted requests in the last second
        self._overrides: dict[str, _Override] = {}
        self._faults: dict[str, list[str]] = {}
        self._payloads: dict[str, bytes] = {}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._prerender = prerender
        self._warming: asyncio.Task[None] | None = None
        self.base_url = ""

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(f"{API_PREFIX}/runs", self._list_runs)
        app.router.add_get(f"{API_PREFIX}/runs/{{run_id}}", self._get_run)
        app.router.add_get(f"{API_PREFIX}/use-cases", self._list_use_cases)
        app.router.add_get(f"{API_PREFIX}/usage", self._list_usage)
        app.router.add_get(f"{API_PREFIX}/issues", self._list_issues)
        # handler_cancellation: a client that timed out on a stall frees the handler at once.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}{API_PREFIX}"
        if self._prerender:
            self._warming = asyncio.create_task(self._render_all())

    async def _render_all(self) -> None:
        """Render every body ahead of its first fetch (~0.4 ms each), yielding as it goes.

        Then the runs are frozen out of the cycle collector's sight: it walked them all in
        full passes that stalled the simulator for ~70 ms, and the requests that queued
        meanwhile were counted as one burst against its rate limit (429s an API that counts
        arrivals would not send). Prerendering is for a process of the simulator's own.
        """
        for i, run in enumerate(list(self.runs.by_key.values())):
            self.runs.body(run)
            if i % 32 == 0:
                await asyncio.sleep(0)
        gc.collect()
        gc.freeze()

    async def close(self) -> None:
        self._closing.set()
        if self._warming is not None:
            self._warming.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- controls for tests and benchmarks ---------------------------------------------------

    def add_runs(self, n: int, *, at: datetime | None = None) -> list[uuid.UUID]:
        """n new runs timestamped at `at` (default: now), visible to both endpoints at once."""
        at = at or datetime.now(UTC)
        return [run.id for run in self.runs.add(n, start=at, end=at)]

    def run_ids(self) -> list[uuid.UUID]:
        """Every run id, oldest first."""
        return self.runs.ids()

    def set_payload(self, run_id: uuid.UUID | str, body: bytes) -> None:
        """Serve `body` verbatim for this id from now on (the id need not be a known run)."""
        self._payloads[_key(run_id)] = body

    def set_status_override(
        self,
        run_id: uuid.UUID | str,
        status_code: int,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer this run with `status_code` and `body`: `times` times, or until cleared."""
        self._overrides[_key(run_id)] = _Override(status_code, body, headers or {}, times)

    def clear_override(self, run_id: uuid.UUID | str) -> None:
        self._overrides.pop(_key(run_id), None)

    def inject_fault(self, run_id: uuid.UUID | str, kind: str, *, times: int = 1) -> None:
        """Queue a fault (one of FAULTS) for this run's next `times` requests."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULTS}")
        self._faults.setdefault(_key(run_id), []).extend([kind] * times)

    def fetch_count(self, run_id: uuid.UUID | str) -> int:
        """Successful fetches of a known run so far."""
        return self.runs.by_key[_key(run_id)].fetches

    def change_run(self, run_id: uuid.UUID | str, **changes: Any) -> None:
        """Change a run upstream without fetching it: `annotation=`, `data=`, `issues=`,
        `stage=` (see RunSet.change)."""
        self.runs.change(self.runs.by_key[_key(run_id)], **changes)

    def run_issues(self, run_id: uuid.UUID | str) -> list[dict[str, Any]]:
        """The run's issues as served now (to change one: copy, edit, `change_run(issues=)`)."""
        return [dict(i) for i in data.run_issues(self.runs.by_key[_key(run_id)])]

    def expire_content(self, run_id: uuid.UUID | str) -> None:
        """Later fetches of this run show its content deleted, as retention leaves it."""
        self.runs.expire(self.runs.by_key[_key(run_id)])

    # -- handlers ------------------------------------------------------------------------------

    async def _get_run(self, request: web.Request) -> web.StreamResponse:
        denied = self._admit(request)
        if denied is not None:
            return denied
        if self.latency_ms:
            await self._sleep_latency()
        key = request.match_info["run_id"].lower()
        override = self._overrides.get(key)
        if override is not None:
            if override.times is not None:
                override.times -= 1
                if override.times <= 0:
                    del self._overrides[key]
            return self._reply(override.status, override.body, override.headers)
        queued = self._faults.get(key)
        fault = queued.pop(0) if queued else self._random_fault()
        run = self.runs.by_key.get(key)
        if fault is not None:
            body = self._payloads.get(key) or (self.runs.body(run) if run else b"{}")
            return await self._fault(request, fault, body)
        pinned = self._payloads.get(key)
        if pinned is not None:
            return self._reply(200, pinned)
        if run is None:
            return self._reply(404, b'{"message": "Run not found"}')
        return self._reply(200, self.runs.fetch(run))

    async def _list_runs(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, lambda q: _json(self.runs.query(**params.list_params(q))))

    async def _list_use_cases(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, lambda _: self.runs.use_cases_body())

    async def _list_usage(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, lambda q: _json(self.runs.usage(*params.usage_window(q))))

    async def _list_issues(self, request: web.Request) -> web.StreamResponse:
        def build(query: Any) -> bytes:
            use_case_id, run_id = (
                params.uuid_param(query, "use_case_id"),
                params.uuid_param(query, "run_id"),
            )
            return _json(self.runs.issues(use_case_id=use_case_id, run_id=run_id))

        return await self._serve(request, build)

    async def _serve(
        self, request: web.Request, build: Callable[[Any], bytes]
    ) -> web.StreamResponse:
        """A listing endpoint: admission, latency, its body from the query, then any fault."""
        denied = self._admit(request)
        if denied is not None:
            return denied
        if self.latency_ms:
            await self._sleep_latency()
        fault = self._random_fault()
        try:
            body = build(request.query)
        except ValueError as exc:
            status = exc.status if isinstance(exc, params.Unprocessable) else 400
            return self._reply(status, orjson.dumps({"message": str(exc)}))
        if fault is not None:
            return await self._fault(request, fault, body)
        return self._reply(200, body)

    def _admit(self, request: web.Request) -> web.Response | None:
        """Count the request, then check auth and the rate limit: None when it may proceed."""
        now = time.monotonic()
        self.stats.total_requests += 1
        self.stats.request_times.append(now)
        resource = request.match_info.route.resource
        self.stats.by_route[resource.canonical if resource else request.path] += 1
        if request.headers.get("Authorization") != self._auth:
            return self._reply(401, b'{"message": "Not authenticated"}')
        org = request.headers.get("x-organization-id")
        if org is not None and org.lower() != str(self.org_id):
            return self._reply(403, b'{"message": "Not a member of this organization"}')
        if self.rate_limit is None:
            return None
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= int(self.rate_limit):
            self.stats.rate_limited += 1
            wait = max(1, math.ceil(window[0] + 1.0 - now))
            return self._reply(429, b'{"message": "Too many requests"}', {"Retry-After": str(wait)})
        window.append(now)
        return None

    async def _sleep_latency(self) -> None:
        await asyncio.sleep(self.latency_ms * self._latency_rng.uniform(0.5, 1.5) / 1000)

    def _random_fault(self) -> str | None:
        if self.error_rate and self._fault_rng.random() < self.error_rate:
            return self._fault_rng.choice(FAULTS)
        return None

    async def _fault(self, request: web.Request, kind: str, body: bytes) -> web.StreamResponse:
        self.stats.faults[kind] += 1
        if kind in ("500", "502", "503"):
            return self._reply(int(kind), b'{"message": "Internal error"}')
        if kind == "timeout":
            # Stall past the client's read timeout; end early when the simulator closes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.stall_seconds)
            return self._reply(504, b'{"message": "Gateway timeout"}')
        # Both cut the transfer: half the body arrives, then the connection drops before the
        # framing says the body is complete, as when a proxy or the network fails mid-body.
        # (A body complete by its framing but not JSON is a payload, set with set_payload.)
        response = web.StreamResponse(status=200, headers=_JSON)
        if kind == "truncate":
            response.enable_chunked_encoding()  # the closing zero-length chunk never comes
        else:  # "reset": headers promise the whole body
            response.content_length = len(body)
        self.stats.by_status[200] += 1
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.abort()
        return response

    def _reply(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.stats.by_status[status] += 1
        return web.Response(status=status, body=body, headers={**_JSON, **(headers or {})})


def _key(run_id: uuid.UUID | str) -> str:
    return str(uuid.UUID(str(run_id)))


def _json(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(items, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    runs: int = 1000,
    latency_ms: float = 0.0,
    error_rate: float = 0.0,
    rate_limit: float | None = None,
    seed: int = 1,
    api_key: str = "sim-key",
    show_key: bool = True,
    history: timedelta = timedelta(days=7),
) -> None:
    """Serve until SIGINT/SIGTERM, after printing how to point hr-ingest at it.

    `history`: how far back the runs go; past a week, the 7-day-retention use case's runs
    show their content deleted.
    """
    sim = Simulator(
        runs=runs,
        seed=seed,
        latency_ms=latency_ms,
        error_rate=error_rate,
        rate_limit=rate_limit,
        api_key=api_key,
        host=host,
        port=port,
        history=history,
        prerender=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with sim:
            print(f"HappyRobot API simulator: {runs} runs, seed {seed}; Ctrl-C stops it")
            print(f"HAPPYROBOT_BASE_URL={sim.base_url}")
            if show_key:
                print(f"HAPPYROBOT_API_KEY={api_key}")
            else:
                print("API key: the configured HAPPYROBOT_API_KEY (not shown)")
            print(f"HAPPYROBOT_ORG_ID={sim.org_id}", flush=True)
            await stop.wait()
            s = sim.stats
            print(f"served {s.total_requests} requests: {dict(s.by_status)}", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
