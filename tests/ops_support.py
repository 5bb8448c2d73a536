"""Helpers shared by the metrics tests and the browser test: a worker in this process with its
operations server, against the simulator, and a scraper for what it serves."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.api.client import ApiClient
from ingest.api.ratelimit import RateLimiter
from ingest.config import Settings
from ingest.ops.server import OpsServer
from ingest.simulator import Simulator
from ingest.worker import Worker, WorkerOptions
from tests.helpers import FAST, enqueue

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Served:
    worker: Worker
    server: OpsServer


@contextlib.asynccontextmanager
async def served_worker(
    settings: Settings, engine: AsyncEngine, options: WorkerOptions = FAST
) -> AsyncIterator[Served]:
    """A worker (not started: call `worker.run()`) and its server on a free port."""
    limiter = RateLimiter(engine, settings.rate_limit)
    try:
        async with ApiClient(settings, limiter) as client:
            worker = Worker(settings, engine, client, options)
            server = OpsServer(
                engine, worker=worker, host="127.0.0.1", port=0, schema=settings.db_schema
            )
            async with server:
                yield Served(worker, server)
    finally:
        await limiter.close()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def scrape(server: OpsServer) -> Samples:
    status, body = await get(f"{server.url}/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series nobody has hit yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def status_json(server: OpsServer) -> dict[str, object]:
    status, body = await get(f"{server.url}/status.json")
    assert status == 200
    doc: dict[str, object] = orjson.loads(body)
    return doc


def add_unknown_field(sim: Simulator, run_id: uuid.UUID) -> None:
    """Serve this run with a field today's API description lacks: stored, noted as drift."""
    doc = orjson.loads(sim.runs.body(sim.runs.by_key[str(run_id)]))
    doc["surprise_field"] = 1
    sim.set_payload(run_id, orjson.dumps(doc))


async def prepare_faults(sim: Simulator, engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID]:
    """Enqueue every simulator run, with one that ends dead (404), one that fails once with
    a 500 before succeeding, and one whose payload drifts. Returns (dead, retried)."""
    ids = sim.run_ids()
    gone, flaky, drifting = ids[0], ids[1], ids[2]
    sim.set_status_override(gone, 404, b'{"message": "Run not found"}')
    # The client tries 3 times within one claim: all three fail, the next claim succeeds.
    sim.set_status_override(flaky, 500, b'{"message": "boom"}', times=3)
    add_unknown_field(sim, drifting)
    await enqueue(engine, ids)
    return gone, flaky
