"""The process a command runs in: its event loop and garbage-collector policy, and a worker's
or the webhook receiver's life in it (signals, the operations server, a periodic sync).

The CLI, the benchmarks and the tests that want production's behaviour all come through here,
so what is measured is what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported when a worker runs: `hr-ingest --help` starts faster without
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ingest.config import Secret, Settings
    from ingest.worker import WorkerOptions, WorkerStats

T = TypeVar("T")
EXIT_FAILURE = 1


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` as production does: uvloop when installed, the collector tuned for a worker."""
    tune_gc()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def tune_gc() -> None:
    """Most objects here die young and acyclic (parsed payloads, rows), freed by their reference
    counts; the cycle collector only finds the odd cycle, yet at the default thresholds it took
    about a tenth of a worker's CPU walking live payloads (measured in bench/)."""
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it exists: the worker spends most of its time in HTTP and socket I/O."""
    try:
        import uvloop
    except ImportError:  # Windows, or installed without it
        return None
    return uvloop.new_event_loop


async def run_worker(
    settings: Settings,
    engine: AsyncEngine,
    options: WorkerOptions,
    sync_every: timedelta | None = None,
    metrics: tuple[str, int] | None = None,
) -> WorkerStats:
    """The worker with signal handling: the first SIGTERM/SIGINT drains gracefully, the
    second exits at once (leases then expire on their own). With `sync_every`, `sync` runs
    on that schedule alongside, through the same client and rate limit, until the worker
    stops. With `metrics` (host, port), the operations server runs around the worker."""
    from ingest.api.client import open_client
    from ingest.discovery import sync_every as periodic_sync
    from ingest.ops.drain import DrainProgress
    from ingest.ops.server import OpsServer
    from ingest.worker import Worker

    async with open_client(settings, engine) as client, contextlib.AsyncExitStack() as stack:
        worker = Worker(settings, engine, client, options)
        if metrics is not None:
            host, port = metrics
            ops = OpsServer(engine, worker=worker, host=host, port=port, schema=settings.db_schema)
            await ops.start()
            stack.push_async_callback(ops.close)
        if sync_every is not None:
            syncing = asyncio.create_task(periodic_sync(engine, client, sync_every.total_seconds()))
            stack.push_async_callback(_cancelled, syncing)
        if options.drain:
            progress = DrainProgress(engine, settings.rate_limit, lambda: worker.paused is not None)
            stack.push_async_callback(_cancelled, asyncio.create_task(progress.run()))
        stack.enter_context(_stop_on_signals(worker.stop))
        return await worker.run()


async def run_webhook(
    engine: AsyncEngine, secret: Secret, host: str, port: int, connections: int
) -> dict[int, int]:
    """The webhook receiver until SIGTERM/SIGINT (calls in flight are answered first); returns
    how many calls got each status. A database that cannot be reached yet is not an error
    (calls get 503 until it answers); one without hr-ingest's tables is."""
    from ingest.webhook import WebhookServer, prepare

    await prepare(engine, connections)
    # Python's default collector thresholds, not the worker's (tune_gc): those collect rarely
    # and at length, which a call waiting on the collector would feel; here latency matters
    # more than the CPU the worker saves.
    gc.set_threshold(700, 10, 10)
    stopping = asyncio.Event()
    async with WebhookServer(engine, secret, host=host, port=port) as server:
        with _stop_on_signals(stopping.set):
            await stopping.wait()
    return server.counts


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            sys.stderr.write("hr-ingest: second signal, exiting now\n")
            os._exit(EXIT_FAILURE)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
