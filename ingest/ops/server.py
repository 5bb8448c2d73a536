"""The worker's operations port: `/metrics`, `/healthz`, `/readyz`, and a status page.

Started by `worker --metrics-port P` around the worker, on its event loop. Nothing here
reads the database per request except `/readyz`'s `SELECT 1`: metrics and the page read the
snapshot that `SnapshotPoller` refreshes on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import __version__, queue
from ingest.failures import phrase_of
from ingest.logs import scrub
from ingest.ops.metrics import CONTENT_TYPE, Metrics
from ingest.ops.page import STATUS_PAGE
from ingest.ops.snapshot import Snapshot, SnapshotPoller

if TYPE_CHECKING:
    from ingest.worker import Worker

log = structlog.get_logger("ingest.ops.server")

# All interfaces: in a container the probes and Prometheus come from outside its loopback.
# Nothing served is secret or writable; `--metrics-host 127.0.0.1` keeps it on the machine.
DEFAULT_HOST = "0.0.0.0"
HEARTBEAT_S = 0.5


async def serve(
    app: web.Application, host: str, port: int, shutdown_timeout: float, backlog: int = 128
) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: a free port), without an access log; returns the runner
    (its `cleanup()` stops serving) and the port. A port that cannot be bound raises OSError,
    with nothing left open."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=backlog).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


class OpsServer:
    """`async with OpsServer(engine, worker=w, port=0) as s:` serves on `s.port`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        worker: Worker | None = None,
        host: str = DEFAULT_HOST,
        port: int = 9100,
        schema: str = "",
        refresh_s: float = 5.0,
        drift_refresh_s: float = 60.0,
        ready_timeout_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.worker = worker
        self.host = host
        self.schema = schema
        self.ready_timeout_s = ready_timeout_s
        self.poller = SnapshotPoller(engine, refresh_s, drift_refresh_s)
        self.metrics = Metrics(worker, self.poller)
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self.port = port

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/status.json", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # No access log: probes every few seconds would drown the worker's own lines.
        self._runner, self.port = await serve(app, self.host, self._requested_port, 1.0)
        self.poller.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="ops-heartbeat")
        log.info("metrics and status page listening", url=self.url, host=self.host)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self.poller.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _beat(self) -> None:
        # How late a short sleep wakes up: a loop blocked by CPU work or a sync call shows here.
        while True:
            t = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)
            self.metrics.loop_lag_s = max(0.0, time.monotonic() - t - HEARTBEAT_S)

    # -- readiness -----------------------------------------------------------------------------

    async def not_ready_reason(self) -> str | None:
        """None when this worker can do work; else one line saying why not."""
        if self.worker is not None and self.worker.fatal:
            return f"worker stopped: {self.worker.fatal}"
        try:
            async with asyncio.timeout(self.ready_timeout_s), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except TimeoutError:
            return f"database did not answer SELECT 1 within {self.ready_timeout_s:g}s"
        except Exception as exc:
            detail = scrub(str(exc).splitlines()[0] if str(exc) else "")[:200]
            return f"database unreachable: {type(exc).__name__}: {detail}".rstrip(": ")
        return None

    # -- handlers ------------------------------------------------------------------------------

    async def _healthz(self, _: web.Request) -> web.Response:
        # Answering at all proves the loop turns; the lag says how well.
        return web.Response(text=f"ok (event loop lag {self.metrics.loop_lag_s:.3f}s)\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        reason = await self.not_ready_reason()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _status(self, _: web.Request) -> web.Response:
        body = orjson.dumps(self.status_document(), option=orjson.OPT_NON_STR_KEYS)
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _page(self, _: web.Request) -> web.Response:
        return web.Response(
            text=STATUS_PAGE,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                # Everything is inline and same-origin: the page works offline and loads nothing.
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
                    " connect-src 'self'; img-src data:"
                ),
            },
        )

    def status_document(self) -> dict[str, Any]:
        """What `/status.json` serves and the page draws: no URLs, keys or payloads."""
        snap = self.poller.latest
        doc: dict[str, Any] = {
            "version": __version__,
            "schema": self.schema,
            "served_at": time.time(),
            "uptime_s": time.monotonic() - self._started,
            "snapshot": None,
            "snapshot_error": self.poller.error,
            "worker": self._worker_document(),
        }
        if snap is not None:
            doc["snapshot"] = {
                "taken_at": snap.taken_at.isoformat(),
                "counts": snap.counts,
                "oldest_due_age_s": snap.oldest_due_age_s,
                "done_per_minute": snap.done_per_minute,
                "dead_per_minute": snap.dead_per_minute,
                "done_last_hour": sum(snap.done_per_minute),
                "dead_last_hour": sum(snap.dead_per_minute),
                "dead_letters": [
                    {
                        "run_id": d.run_id,
                        "kind": d.kind,
                        "reason": d.reason,
                        "http_status": d.http_status,
                        "attempts": d.attempts,
                        "at": d.at.isoformat(),
                    }
                    for d in snap.dead_letters
                ],
                "dead_by_kind": _by_kind(snap.dead_by_kind, "runs"),
                "drift": [{"kind": k, "runs": n} for k, n in snap.drift],
                "freshness": _freshness_document(snap),
                "paused": _pause_document(snap.paused),
            }
        return doc

    def _worker_document(self) -> dict[str, Any] | None:
        w = self.worker
        if w is None:
            return None
        s = w.stats
        limiter = w.client.limiter
        failures = sorted(s.failures_by_kind.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "id": w.id,
            "fatal": w.fatal,
            "paused": w.paused is not None,
            "elapsed_s": s.elapsed,
            "claimed": s.claimed,
            "done": s.done,
            "polled": s.polled,
            "retried": s.retried,
            "dead": s.dead,
            "rows": s.rows,
            "batches": s.batches,
            "failures_by_kind": _by_kind(failures, "attempts"),
            "http": {str(k): v for k, v in sorted(w.client.responses.items())},
            "limiter_wait_s": limiter.wait_seconds_total if limiter is not None else 0.0,
        }


def _freshness_document(snap: Snapshot) -> dict[str, Any]:
    f = snap.freshness
    return {
        "last_sync": None if f.last_sync is None else f.last_sync.isoformat(),
        "last_sync_age_s": f.age_s(f.last_sync),
        "sync_failures": f.sync_failures,
        "sync_failed_at": None if f.sync_failed_at is None else f.sync_failed_at.isoformat(),
        # A failure's line can quote an API answer: scrubbed like a log line.
        "sync_error": scrub(f.sync_error) if f.sync_error else None,
        "oldest_non_terminal_age_s": f.age_s(f.oldest_non_terminal),
    }


def _pause_document(pause: queue.Pause | None) -> dict[str, Any] | None:
    if pause is None:
        return None
    # Who and why were typed by an operator: scrubbed like a log line all the same.
    return {
        "since": pause.since.isoformat(),
        "by": scrub(pause.by) if pause.by else None,
        "reason": scrub(pause.reason) if pause.reason else None,
    }


def _by_kind(counts: Iterable[tuple[str, int]], counted: str) -> list[dict[str, Any]]:
    """Counts by failure kind, each with its phrase for the page to show."""
    return [{"kind": str(k), "phrase": phrase_of(k), counted: n} for k, n in counts]
