"""The operations port: metrics that move with a drain, health and readiness, the status
document, the Grafana dashboard's queries, and `worker --metrics-port` as a real process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Settings
from ingest.db.engine import create_engine
from ingest.failures import Failure
from ingest.ops import status
from ingest.ops.metrics import Metrics, exposed_names
from ingest.ops.server import OpsServer
from ingest.simulator import Simulator
from ingest.worker import FatalApiError
from tests.helpers import API_KEY, api_settings, enqueue, free_port, scalar
from tests.ops_support import (
    get,
    prepare_faults,
    scrape,
    served_worker,
    status_json,
    value,
)

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "hr-ingest.json"
RUNS = 40

# Every series the issue asks for, by the name a query uses.
LISTED = [
    "hr_ingest_runs_completed_total",
    "hr_ingest_runs_failed_total",
    "hr_ingest_runs_dead_lettered_total",
    "hr_ingest_http_requests_total",
    "hr_ingest_ratelimit_wait_seconds_total",
    "hr_ingest_batch_write_seconds_bucket",
    "hr_ingest_rows_written_total",
    "hr_ingest_queue_runs",
    "hr_ingest_queue_oldest_due_age_seconds",
    "hr_ingest_schema_drift_runs",
]


pytestmark = pytest.mark.sim(runs=RUNS, seed=11)


async def test_metrics_move_when_a_drain_runs(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    await prepare_faults(sim, engine)
    async with engine.begin() as conn:
        # Due five minutes ago: the oldest-due gauge must show it.
        await conn.execute(
            text("UPDATE ingest_queue SET available_at = now() - interval '300 seconds'")
        )
    async with served_worker(api_settings(settings, sim), engine) as served:
        server, worker = served.server, served.worker
        await server.poller.refresh()
        before = await scrape(server)
        assert value(before, "hr_ingest_queue_runs", state="pending") == RUNS
        assert value(before, "hr_ingest_queue_oldest_due_age_seconds") >= 300
        assert value(before, "hr_ingest_runs_completed_total") == 0
        assert value(before, "hr_ingest_batch_write_seconds_count") == 0

        stats = await worker.run()
        server.poller.force_drift()
        await server.poller.refresh()
        after = await scrape(server)
        exposed = {name for name, _ in after} | set(exposed_names(server.metrics.registry))

    assert set(LISTED) <= exposed
    done = await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'done'")
    assert stats.done == done and stats.dead == 1 and stats.done + stats.polled == RUNS - 1
    assert value(after, "hr_ingest_runs_completed_total") == stats.done
    assert value(after, "hr_ingest_runs_polled_total") == stats.polled
    assert value(after, "hr_ingest_runs_dead_lettered_total") == 1
    assert value(after, "hr_ingest_runs_retried_total") == 1
    assert value(after, "hr_ingest_runs_failed_total", reason="not_found") == 1
    assert value(after, "hr_ingest_runs_failed_total", reason="http_5xx") == 1
    # Every run answered 200 once, except the 404; the flaky one also answered 500 three times.
    assert value(after, "hr_ingest_http_requests_total", status="200") == RUNS - 1
    assert value(after, "hr_ingest_http_requests_total", status="404") == 1
    assert value(after, "hr_ingest_http_requests_total", status="500") == 3
    assert value(after, "hr_ingest_ratelimit_wait_seconds_total") > 0
    assert value(after, "hr_ingest_rows_written_total") == stats.rows > 0
    assert value(after, "hr_ingest_batch_write_seconds_count") == stats.batches >= 1
    assert value(after, "hr_ingest_batch_write_seconds_sum") > 0
    assert value(after, "hr_ingest_queue_runs", state="done") == done
    assert value(after, "hr_ingest_queue_runs", state="dead") == 1
    assert value(after, "hr_ingest_queue_runs", state="pending") == stats.polled
    assert value(after, "hr_ingest_queue_oldest_due_age_seconds") == 0  # polls are not due
    drifted = await scalar(
        engine,
        "SELECT count(DISTINCT run_id) FROM run_payloads, jsonb_array_elements(drift) d"
        " WHERE d->>'kind' = 'unknown_field'",
    )
    assert drifted == value(after, "hr_ingest_schema_drift_runs", kind="unknown_field") >= 1
    assert value(after, "hr_ingest_status_refreshed_timestamp_seconds") > 0
    assert ("hr_ingest_info", frozenset({("version", "0.1.0"), ("worker", worker.id)})) in after


async def test_status_document_holds_what_the_database_holds(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    gone, _ = await prepare_faults(sim, engine)
    async with served_worker(api_settings(settings, sim), engine) as served:
        await served.worker.run()
        await served.server.poller.refresh()
        doc: Any = await status_json(served.server)
    snap = doc["snapshot"]
    done = await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'done'")
    assert snap["counts"]["done"] == done
    assert snap["done_last_hour"] == sum(snap["done_per_minute"]) == done
    assert len(snap["done_per_minute"]) == 60
    assert [d["run_id"] for d in snap["dead_letters"]] == [str(gone)]
    assert snap["dead_letters"][0]["reason"].startswith("HTTP 404: Run not found")
    assert snap["dead_letters"][0]["kind"] == "not_found"
    assert snap["dead_by_kind"] == [{"kind": "not_found", "phrase": "HTTP 404", "runs": 1}]
    assert doc["worker"]["done"] == done
    assert doc["worker"]["failures_by_kind"] == [
        {"kind": "http_5xx", "phrase": "HTTP 5xx", "attempts": 1},
        {"kind": "not_found", "phrase": "HTTP 404", "attempts": 1},
    ]
    assert API_KEY not in json.dumps(doc)
    assert settings.database_url is not None
    assert settings.database_url.reveal() not in json.dumps(doc)


async def test_healthz_and_readyz_when_the_database_answers(engine: AsyncEngine) -> None:
    async with OpsServer(engine, host="127.0.0.1", port=0) as server:
        assert (await get(f"{server.url}/healthz"))[0] == 200
        assert await get(f"{server.url}/readyz") == (200, "ready\n")


async def test_readyz_fails_when_the_database_is_unreachable(settings: Settings) -> None:
    closed = free_port()  # nothing listens here
    engine = create_engine(settings, url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/x")
    try:
        async with OpsServer(engine, host="127.0.0.1", port=0, refresh_s=0.1) as server:
            status, body = await get(f"{server.url}/readyz")
            assert status == 503
            assert body.startswith("not ready: database unreachable") and body.count("\n") == 1
            # Still alive: a restart would not bring the database back.
            assert (await get(f"{server.url}/healthz"))[0] == 200
            await asyncio.sleep(0.3)
            doc: Any = await status_json(server)
            assert doc["snapshot"] is None and doc["snapshot_error"]
            samples = await scrape(server)
            assert value(samples, "hr_ingest_status_refresh_failures_total") >= 1
    finally:
        await engine.dispose()


async def test_readyz_fails_when_the_database_does_not_answer_in_time(settings: Settings) -> None:
    # Accepts connections and never says a word: a hung server, not a refused connection.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    engine = create_engine(settings, url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    try:
        async with OpsServer(engine, host="127.0.0.1", port=0, ready_timeout_s=0.5) as server:
            status, body = await get(f"{server.url}/readyz")
        assert status == 503
        assert body == "not ready: database did not answer SELECT 1 within 0.5s\n"
    finally:
        silent.close()
        await engine.dispose()


async def test_readyz_fails_once_the_api_refuses_the_credentials(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    await enqueue(engine, sim.run_ids()[:5])
    async with served_worker(api_settings(settings, sim, api_key="wrong-key"), engine) as served:
        with pytest.raises(FatalApiError):
            await served.worker.run()
        status, body = await get(f"{served.server.url}/readyz")
    assert status == 503
    assert body.startswith("not ready: worker stopped: the API refused the credentials")
    assert "wrong-key" not in body


async def test_reworded_failures_keep_their_labels_and_status_groups(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels and groups come from the kind: neither the API's words nor ours change them."""
    monkeypatch.setattr(Failure, "reason", property(lambda f: f"reworded: {f.detail}!"))
    async with Simulator(runs=4, seed=11, api_key=API_KEY) as sim:
        ids = sim.run_ids()
        for run_id, message in zip(ids, ["Run not found", "deleted 3 days ago"], strict=False):
            sim.set_status_override(run_id, 404, f'{{"message": "{message}"}}'.encode())
        sim.set_status_override(ids[2], 502, b"<html>bad gateway</html>", times=3)
        await enqueue(engine, ids)
        async with served_worker(api_settings(settings, sim), engine) as served:
            await served.worker.run()
            await served.server.poller.refresh()
            samples, doc = await scrape(served.server), await status_json(served.server)
    report = await status.collect(engine)

    reasons = await scalar(engine, "SELECT array_agg(reason ORDER BY reason) FROM dead_letters")
    assert reasons == ["reworded: Run not found!", "reworded: deleted 3 days ago!"]
    failed = {
        dict(labels)["reason"]: n
        for (name, labels), n in samples.items()
        if name == "hr_ingest_runs_failed_total"
    }
    assert failed == {"not_found": 2, "http_5xx": 1}
    assert report.dead_reasons == [("HTTP 404", 2)]
    snap: Any = doc["snapshot"]
    assert snap["dead_by_kind"] == [{"kind": "not_found", "phrase": "HTTP 404", "runs": 2}]


def test_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for t in _targets(dashboard)]
    assert len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"\bhr_ingest_[a-z0-9_]+", e)}
    missing = used - exposed_names(Metrics().registry)
    assert not missing, f"the dashboard queries metrics that do not exist: {sorted(missing)}"
    # Each series the issue lists is on the dashboard.
    for name in LISTED:
        family = re.sub(r"_(total|bucket)$", "", name)
        assert any(family in e for e in exprs), f"{name} is not on the dashboard"
    assert all(p.get("datasource", {}).get("uid") == "${datasource}" for p in _panels(dashboard))


def _panels(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in node.get("panels", []):
        out.append(p)
        out.extend(_panels(p))
    return [p for p in out if p.get("type") != "row"]


def _targets(dashboard: Any) -> list[dict[str, Any]]:
    return [t for p in _panels(dashboard) for t in p.get("targets", [])]


# -- as a real process -----------------------------------------------------------------------


async def test_cli_worker_serves_metrics_and_the_page_while_it_runs(
    settings: Settings, engine: AsyncEngine, sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    port = free_port()
    env = dict(
        subprocess_env,
        HAPPYROBOT_BASE_URL=sim.base_url,
        HAPPYROBOT_API_KEY=API_KEY,
        INGEST_RATE_LIMIT="5000",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ingest", "worker", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _until(lambda: _ok(f"{base}/healthz"), 30)
        assert await get(f"{base}/readyz") == (200, "ready\n")
        await enqueue(engine, sim.run_ids()[:10])

        async def completed() -> bool:
            _, body = await get(f"{base}/metrics")
            found = re.search(r"^hr_ingest_runs_completed_total (\S+)$", body, re.M)
            polled = re.search(r"^hr_ingest_runs_polled_total (\S+)$", body, re.M)
            assert found and polled
            return float(found[1]) + float(polled[1]) == 10

        await _until(completed, 30)
        status, page = await get(f"{base}/")
        assert status == 200 and "<svg" in page and "status.json" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert API_KEY.encode() not in out + err


async def test_cli_rejects_a_bad_metrics_port(subprocess_env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ingest", "worker", "--metrics-port", "70000"),
        env=subprocess_env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"not a port number" in err and err.count(b"\n") == 1


async def _ok(url: str) -> bool:
    try:
        return (await get(url))[0] == 200
    except OSError:
        return False


async def _until(check: Any, within_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)
