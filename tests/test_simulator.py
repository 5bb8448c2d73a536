"""The simulator over real HTTP, checked with plain aiohttp (not our client) against the API doc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from ingest.simulator import Simulator

NOW = datetime(2025, 6, 1, tzinfo=UTC)
AUTH = {"Authorization": "Bearer test-key"}
OTHER_ORG = "00000000-0000-4000-8000-000000000001"


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(runs=500, seed=7, now=NOW) as s:
        yield s


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.get(url, **kw) as resp:
        body = await resp.read()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = body
        return resp.status, parsed, resp.headers


async def test_same_seed_same_runs_and_bytes(http: aiohttp.ClientSession) -> None:
    bodies = []
    for seed in (3, 3, 4):
        async with Simulator(runs=20, seed=seed, now=NOW) as s:
            ids = s.run_ids()
            async with http.get(f"{s.base_url}/runs/{ids[5]}") as resp:
                bodies.append((ids, await resp.read()))
    assert bodies[0] == bodies[1]
    assert bodies[0][0] != bodies[2][0]


async def test_auth_and_not_found_bodies(sim: Simulator, http: aiohttp.ClientSession) -> None:
    url = f"{sim.base_url}/runs/{sim.run_ids()[0]}"
    async with aiohttp.ClientSession() as anonymous:
        status, body, _ = await get(anonymous, url)
    assert status == 401 and isinstance(body["message"], str)
    status, body, _ = await get(http, url, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "message" in body
    status, body, _ = await get(http, url, headers={"x-organization-id": OTHER_ORG})
    assert status == 403 and "message" in body
    status, _, _ = await get(http, url, headers={"x-organization-id": str(sim.org_id)})
    assert status == 200
    status, body, _ = await get(http, f"{sim.base_url}/runs/00000000-0000-4000-8000-000000000000")
    assert status == 404 and "message" in body


async def test_runs_look_like_the_api(sim: Simulator, http: aiohttp.ClientSession) -> None:
    bodies = [(await get(http, f"{sim.base_url}/runs/{i}"))[1] for i in sim.run_ids()[:200]]
    finished = [b for b in bodies if b["status"] in ("completed", "failed", "canceled")]
    assert len(finished) > 150
    assert all(20 <= len(b["events"]) <= 40 for b in finished)
    assert all(0 <= len(b["issues"]) <= 4 for b in bodies)
    assert {len(b["issues"]) for b in finished} >= {0, 1, 2}
    assert {b["status"] for b in bodies} >= {"scheduled", "running", "completed", "failed"}
    events = [e for b in finished for e in b["events"]]
    with_intermediate = [e for e in events if e.get("intermediate")]
    assert 0.7 < len(with_intermediate) / len(events) < 0.95
    assert {"id", "run_id", "node_id", "event_id", "session_id", "name", "data"} <= set(
        with_intermediate[0]["intermediate"]
    )
    # Versions are shared: a pool of ~10 per use case, many runs each.
    versions = Counter(b["version"]["id"] for b in bodies if b.get("version"))
    use_cases = {b["use_case_id"] for b in bodies}
    assert len(versions) <= 10 * len(use_cases) and max(versions.values()) >= 10
    assert all(
        b["version"]["id"] == b["version_id"] and b["version"]["use_case_id"] == b["use_case_id"]
        for b in bodies
        if b.get("version")
    )


async def test_unfinished_runs_progress_on_later_fetches(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    listed = (await get(http, f"{sim.base_url}/runs", params={"status": "scheduled"}))[1]
    run_id = listed[0]["id"]
    seen = [(await get(http, f"{sim.base_url}/runs/{run_id}"))[1] for _ in range(4)]
    assert [s["status"] for s in seen[:2]] == ["scheduled", "running"]
    assert seen[2]["status"] in ("completed", "failed", "canceled")
    counts = [len(s["events"]) for s in seen]
    assert counts[0] == 0 < counts[1] < counts[2] == counts[3]
    # Earlier events never change, but for a call in progress, which only grows.
    for before, after in zip(seen[1]["events"], seen[2]["events"], strict=False):
        if before["type"] == "session":
            assert_grown(before, after)
        else:
            assert before == after
    # Reviewed: issues keep their ids, open ones get a verdict.
    assert [i["id"] for i in seen[3]["issues"]] == [i["id"] for i in seen[2]["issues"]]
    assert all(i["status"] != "open" for i in seen[3]["issues"])
    assert sim.fetch_count(run_id) == 4
    relisted = (await get(http, f"{sim.base_url}/runs", params={"limit": 5000}))[1]
    item = next(i for i in relisted if i["id"] == run_id)
    assert item["status"] == seen[3]["status"] and item["completed_at"] is not None


async def test_list_paging_filters_and_sort(sim: Simulator, http: aiohttp.ClientSession) -> None:
    url = f"{sim.base_url}/runs"
    status, default, _ = await get(http, url)
    assert status == 200 and len(default) == 500
    stamps = [i["timestamp"] for i in default]
    assert stamps == sorted(stamps, reverse=True)  # default sort: desc
    assert set(default[0]) == {
        "id",
        "org_id",
        "use_case_id",
        "version_id",
        "status",
        "annotation",
        "timestamp",
        "completed_at",
        "data",
    }
    paged: list[str] = []
    for offset in range(0, 600, 120):
        page = (await get(http, url, params={"limit": 120, "offset": offset, "sort": "asc"}))[1]
        paged += [i["id"] for i in page]
    assert paged == [str(i) for i in sim.run_ids()]
    assert (await get(http, url, params={"limit": 5001}))[0] == 400
    assert (await get(http, url, params={"start": "yesterday"}))[0] == 400

    use_case = default[0]["use_case_id"]
    only = (await get(http, url, params={"use_case_id": use_case, "status": "completed"}))[1]
    assert only and all(i["use_case_id"] == use_case and i["status"] == "completed" for i in only)
    lo, hi = sorted([stamps[100], stamps[50]])
    window = (await get(http, url, params={"start": lo, "end": hi}))[1]
    assert len(window) == 51  # both bounds inclusive
    cutoff = (NOW - timedelta(days=3)).isoformat()
    done = (await get(http, url, params={"completed_start": cutoff}))[1]
    assert done and all(i["completed_at"] >= cutoff.replace("+00:00", "") for i in done)


async def test_runs_added_while_serving(sim: Simulator, http: aiohttp.ClientSession) -> None:
    later = NOW + timedelta(hours=1)
    new = sim.add_runs(3, at=later)
    listed = (await get(http, f"{sim.base_url}/runs", params={"start": later.isoformat()}))[1]
    assert {i["id"] for i in listed} == {str(i) for i in new}
    assert (await get(http, f"{sim.base_url}/runs/{new[0]}"))[0] == 200
    assert len(sim.run_ids()) == 503


async def test_rate_limit_sends_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    async with Simulator(runs=10, rate_limit=20) as s:
        url = f"{s.base_url}/runs/{s.run_ids()[0]}"
        results = await asyncio.gather(*(get(http, url) for _ in range(50)))
    statuses = Counter(r[0] for r in results)
    assert statuses == {200: 20, 429: 30}
    assert s.stats.rate_limited == 30 and s.stats.by_status[429] == 30
    assert all(int(r[2]["Retry-After"]) >= 1 for r in results if r[0] == 429)


async def test_random_faults_are_mixed(http: aiohttp.ClientSession) -> None:
    async with Simulator(runs=10, error_rate=1.0, stall_seconds=0.05) as s:
        url = f"{s.base_url}/runs/{s.run_ids()[0]}"
        for _ in range(60):
            with contextlib.suppress(aiohttp.ClientError):  # the resets
                await get(http, url)
    assert set(s.stats.faults) == {"500", "502", "503", "timeout", "truncate", "reset"}
    # Both cut transfers start as a 200 (then break off); the others are errors.
    assert s.stats.by_status[200] == s.stats.faults["truncate"] + s.stats.faults["reset"]


async def test_latency_is_jittered_around_the_mean(http: aiohttp.ClientSession) -> None:
    async with Simulator(runs=5, latency_ms=40) as s:
        url = f"{s.base_url}/runs/{s.run_ids()[0]}"
        took = []
        for _ in range(10):
            t = time.monotonic()
            await get(http, url)
            took.append(time.monotonic() - t)
    assert min(took) >= 0.019 and max(took) < 0.2 and max(took) - min(took) > 0.005


def test_stats_windows() -> None:
    s = Simulator(runs=0)
    s.stats.request_times = [0.0, 0.1, 0.5, 0.99, 1.0, 1.05, 2.5]
    assert s.stats.per_second() == [4, 2, 1]
    assert s.stats.max_in_window(1.0) == 5  # (0.05, 1.05]
    assert s.stats.max_in_window(1.0, start=1.0) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_simulate_command_serves_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ingest", "simulate", "--port", "0", "--runs", "5", "--rate-limit", "50"),
        stdout=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("HAPPYROBOT_")},
    )
    assert proc.stdout is not None
    lines = {}
    while len(lines) < 3:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line, "simulate exited early"
        if "=" in line:
            name, _, value = line.partition("=")
            lines[name] = value
    headers = {"Authorization": f"Bearer {lines['HAPPYROBOT_API_KEY']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        status, page, _ = await get(http, f"{lines['HAPPYROBOT_BASE_URL']}/runs")
    assert status == 200 and len(page) == 5
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 10) == 0


# -- sessions, retention and the catalog endpoints ---------------------------------------------

EVENT_FIELDS = {
    "action": {"type", "timestamp", "integration_name", "event_name", "output", "node_id"},
    "session": {"type", "id", "timestamp", "duration", "sip_code", "sip_reason", "actions"}
    | {"messages"},
}
MESSAGE_FIELDS = {
    "id",
    "session_id",
    "chat_session_id",
    "role",
    "content",
    "tool_calls",
    "name",
    "is_filler",
    "is_interrupted",
    "is_natural_cut",
    "latency_breakdown",
    "timestamp",
    "data_deleted",
}
LATENCY_STAGES = {"network", "initial_wait", "transcriber", "eos", "eos_wait", "llm", "tts"}
SIP_REASONS = {
    "486": "Busy Here",
    "480": "Temporarily Unavailable",
    "404": "Not Found",
    "603": "Decline",
    "408": "Request Timeout",
}
USE_CASE_FIELDS = {
    "id",
    "org_id",
    "icon",
    "name",
    "slug",
    "order",
    "source_use_case_version_id",
    "run_columns",
    "timestamp",
    "data_retention_days",
    "webhooks",
    "versions",
}
TERMINAL = ("completed", "failed", "canceled")


def is_uuid(value: object) -> bool:
    try:
        return str(uuid.UUID(str(value))) == value
    except ValueError:
        return False


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def sessions_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in body["events"] if e["type"] == "session"]


def assert_grown(before: dict[str, Any], after: dict[str, Any]) -> None:
    """`after` is `before` later in the call: same session, the same first messages, more."""
    assert {k: before[k] for k in ("id", "timestamp")} == {k: after[k] for k in ("id", "timestamp")}
    assert after["messages"][: len(before["messages"])] == before["messages"]
    assert after["duration"] >= before["duration"]


def assert_message(message: dict[str, Any]) -> None:
    """Every documented field, each of its documented type."""
    assert set(message) == MESSAGE_FIELDS
    assert is_uuid(message["id"]) and message["role"] in ("assistant", "user", "tool", "event")
    assert all(message[k] is None or is_uuid(message[k]) for k in ("session_id", "chat_session_id"))
    assert isinstance(message["content"], str) and message["data_deleted"] is False
    assert all(isinstance(message[k], bool) for k in ("is_filler", "is_interrupted"))
    assert isinstance(message["is_natural_cut"], bool)
    assert message["name"] is None or isinstance(message["name"], str)
    for call in message["tool_calls"] or []:
        assert set(call) == {"function"} and isinstance(call["function"]["name"], str)
        assert isinstance(orjson.loads(call["function"]["arguments"]), dict)
    latency = message["latency_breakdown"]
    if message["role"] == "assistant":
        assert set(latency) == LATENCY_STAGES
        assert all(isinstance(v, int | float) and 0 <= v < 10_000 for v in latency.values())
    else:
        assert latency is None


def assert_transcript(messages: list[dict[str, Any]]) -> None:
    """Turns alternate like a conversation: each tool answers the assistant turn that called it."""
    stamps = [at(m["timestamp"]) for m in messages]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for i, message in enumerate(messages):
        assert_message(message)
        if message["role"] == "tool":
            called = [c["function"]["name"] for c in messages[i - 1]["tool_calls"]]
            assert messages[i - 1]["role"] == "assistant" and message["name"] in called
            assert isinstance(orjson.loads(message["content"]), dict)
        elif message["role"] == "user":
            assert message["tool_calls"] is None and message["content"]


async def finished_bodies(
    sim: Simulator, http: aiohttp.ClientSession, limit: int = 5000
) -> list[dict[str, Any]]:
    """Bodies of the runs finished so far (each fetched once, oldest first)."""
    listed = (await get(http, f"{sim.base_url}/runs", params={"limit": 5000, "sort": "asc"}))[1]
    ids = [i["id"] for i in listed if i["status"] in TERMINAL][:limit]
    return [(await get(http, f"{sim.base_url}/runs/{i}"))[1] for i in ids]


async def test_sessions_look_like_the_api(sim: Simulator, http: aiohttp.ClientSession) -> None:
    bodies = await finished_bodies(sim, http, 300)
    per_run = Counter(len(sessions_of(b)) for b in bodies)
    assert per_run[1] > 0.75 * len(bodies) and per_run[0] > 0 and per_run[2] > 0
    assert set(per_run) == {0, 1, 2}
    events = [e for b in bodies for e in b["events"]]
    assert {e["type"] for e in events} == {"action", "session"}
    for event in events:
        assert EVENT_FIELDS[event["type"]] <= set(event)
        if event.get("intermediate"):
            assert event["intermediate"]["data_deleted"] is False
    assert all(at(b["completed_at"]) >= at(b["timestamp"]) for b in bodies)
    sessions = [s for b in bodies for s in sessions_of(b)]
    assert all(set(s) == EVENT_FIELDS["session"] and isinstance(s["id"], str) for s in sessions)
    provider_ids = [s["id"] for s in sessions if not is_uuid(s["id"])]
    assert provider_ids and all(re.fullmatch("CA[0-9a-f]{32}", i) for i in provider_ids)
    connected = [s for s in sessions if s["sip_code"] is None]
    for session in connected:
        assert session["sip_reason"] is None and isinstance(session["duration"], float)
        assert 5 <= len(session["messages"]) <= 40
        assert_transcript(session["messages"])
        start, end = at(session["timestamp"]), at(session["messages"][-1]["timestamp"])
        assert start < at(session["messages"][0]["timestamp"])
        assert end <= start + timedelta(seconds=session["duration"] + 0.1)
    calls = [s for s in connected if s["messages"][0]["session_id"] is not None]
    assert 30 <= statistics.mean(s["duration"] for s in calls) <= 400
    assert 15 <= statistics.median(len(s["messages"]) for s in calls) <= 25
    messages = [m for s in connected for m in s["messages"]]
    roles = Counter(m["role"] for m in messages)
    assert roles["assistant"] > roles["user"] > roles["tool"] > roles["event"] > 0
    tools = {c["function"]["name"] for m in messages for c in m["tool_calls"] or []}
    assert tools >= {"find_load", "verify_carrier", "book_load", "transfer_call", "log_offer"}
    for flag in ("is_filler", "is_interrupted", "is_natural_cut"):
        assert 0 < sum(m[flag] for m in messages) < 0.5 * len(messages)
    untooled = [
        m["tool_calls"] for m in messages if m["role"] == "assistant" and not m["tool_calls"]
    ]
    assert None in untooled and [] in untooled
    assert any(m["chat_session_id"] for m in messages) and any(m["session_id"] for m in messages)


async def test_failed_calls_have_a_sip_code_and_no_transcript(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sessions = [s for b in await finished_bodies(sim, http, 300) for s in sessions_of(b)]
    failed = [s for s in sessions if s["sip_code"] is not None]
    assert 0.05 < len(failed) / len(sessions) < 0.2
    assert {s["sip_code"] for s in failed} == set(SIP_REASONS)
    for session in failed:
        assert session["sip_reason"] == SIP_REASONS[session["sip_code"]]
        assert session["messages"] == [] and 0 <= session["duration"] < 10


async def test_a_running_call_transcript_grows_and_keeps_its_start(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    listed = (await get(http, f"{sim.base_url}/runs", params={"status": "running"}))[1]
    grown = 0
    for item in listed:
        running = (await get(http, f"{sim.base_url}/runs/{item['id']}"))[1]
        finished = (await get(http, f"{sim.base_url}/runs/{item['id']}"))[1]
        assert running["status"] == "running" and running["completed_at"] is None
        assert finished["completed_at"] is not None
        live, done = sessions_of(running), sessions_of(finished)
        assert len(live) <= 1 and len(done) >= len(live)
        if live and live[0]["messages"]:
            assert_grown(live[0], done[0])
            assert len(live[0]["messages"]) < len(done[0]["messages"])
            assert live[0]["duration"] < done[0]["duration"]
            grown += 1
    assert grown >= 3


async def test_expire_content_empties_it_and_marks_it_deleted(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    bodies = await finished_bodies(sim, http, 40)
    body = next(b for b in bodies if any(s["messages"] for s in sessions_of(b)))
    sim.expire_content(body["id"])
    expired = (await get(http, f"{sim.base_url}/runs/{body['id']}"))[1]
    assert len(expired["events"]) == len(body["events"])
    for before, after in zip(body["events"], expired["events"], strict=True):
        assert before["type"] == after["type"] and before["timestamp"] == after["timestamp"]
        if after["type"] == "action":
            assert after["output"] == {}
            if after.get("intermediate"):
                assert after["intermediate"]["data"] == {}
                assert after["intermediate"]["data_deleted"] is True
                assert after["intermediate"]["id"] == before["intermediate"]["id"]
            continue
        assert [(m["id"], m["role"], m["timestamp"]) for m in after["messages"]] == [
            (m["id"], m["role"], m["timestamp"]) for m in before["messages"]
        ]
        for message in after["messages"]:
            assert message["content"] == "" and message["data_deleted"] is True
            assert not message["tool_calls"]
    # Everything else of the run stays.
    assert {k: v for k, v in expired.items() if k != "events"} == {
        k: v for k, v in body.items() if k != "events"
    }


async def test_old_runs_show_their_use_case_retention(http: aiohttp.ClientSession) -> None:
    async with Simulator(runs=400, seed=5, now=NOW, history=timedelta(days=40)) as s:
        use_cases = (await get(http, f"{s.base_url}/use-cases"))[1]
        retention = {u["id"]: u["data_retention_days"] for u in use_cases}
        assert None in retention.values() and 7 in retention.values()
        bodies = await finished_bodies(s, http)
    deleted = Counter[tuple[bool, bool]]()
    for body in bodies:
        days = retention[body["use_case_id"]]
        age = NOW - datetime.fromisoformat(body["timestamp"])
        old = days is not None and age > timedelta(days=days)
        messages = [m for e in sessions_of(body) for m in e["messages"]]
        intermediates = [e["intermediate"] for e in body["events"] if e.get("intermediate")]
        flags = {m["data_deleted"] for m in messages} | {i["data_deleted"] for i in intermediates}
        assert flags == {old}
        deleted[old, any(m["content"] for m in messages)] += 1
    assert deleted[True, False] > 20 and deleted[False, True] > 20
    assert deleted[True, True] == 0


async def test_catalog_endpoints_need_auth(sim: Simulator, http: aiohttp.ClientSession) -> None:
    paths = ["use-cases", "usage?start=2025-05-01T00:00:00Z&end=2025-06-01T00:00:00Z", "issues"]
    async with aiohttp.ClientSession() as anonymous:
        for path in paths:
            status, body, _ = await get(anonymous, f"{sim.base_url}/{path}")
            assert status == 401 and isinstance(body["message"], str)
            status, _, _ = await get(http, f"{sim.base_url}/{path}", headers=AUTH)
            assert status == 200
            status, _, _ = await get(
                http, f"{sim.base_url}/{path}", headers={"x-organization-id": OTHER_ORG}
            )
            assert status == 403


async def test_use_cases_list_the_catalog(http: aiohttp.ClientSession) -> None:
    secret = "planted-webhook-secret-5f1e"
    async with Simulator(runs=200, seed=7, now=NOW, webhook_secret=secret) as s:
        status, use_cases, _ = await get(http, f"{s.base_url}/use-cases")
        listed = (await get(http, f"{s.base_url}/runs"))[1]
        run = (await get(http, f"{s.base_url}/runs/{listed[0]['id']}"))[1]
    assert status == 200 and isinstance(use_cases, list) and len(use_cases) == 4
    assert all(set(u) == USE_CASE_FIELDS for u in use_cases)
    assert [u["order"] for u in use_cases] == [0, 1, 2, 3]
    assert len({u["name"] for u in use_cases}) == 4 and "Carrier inbound sales" in {
        u["name"] for u in use_cases
    }
    assert {u["id"] for u in use_cases} == {i["use_case_id"] for i in listed}
    assert all(u["org_id"] == str(s.org_id) for u in use_cases)
    for u in use_cases:
        assert u["slug"] == re.sub("[^a-z0-9]+", "-", u["name"].lower()).strip("-")
        assert [c["name"] for c in u["run_columns"]] == list(listed[0]["data"])
        assert all(is_uuid(c["group_id"]) and is_uuid(c["variable_id"]) for c in u["run_columns"])
        assert u["source_use_case_version_id"] in {v["id"] for v in u["versions"]}
        assert all(v["use_case_id"] == u["id"] for v in u["versions"])
    # A run's version is one of its use case's versions, field for field.
    mine = next(u for u in use_cases if u["id"] == run["use_case_id"])
    assert run["version"] in mine["versions"]
    hooks = [h for u in use_cases for h in u["webhooks"]]
    assert hooks and all(h["url"].startswith("https://") for h in hooks)
    assert {"Authorization": f"Bearer {secret}"} in [h["headers"] for h in hooks]
    assert all(secret in orjson.dumps(h["headers"]).decode() for h in hooks)


async def test_versions_are_staging_or_production(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    use_cases = (await get(http, f"{sim.base_url}/use-cases"))[1]
    versions = [v for u in use_cases for v in u["versions"]]
    environments = Counter(v["environment"] for v in versions)
    assert set(environments) == {"staging", "production"}
    assert environments["production"] > environments["staging"]
    assert all(v["environment"] == "production" for v in versions if v["is_live"])
    bodies = await finished_bodies(sim, http, 200)
    assert {b["version"]["environment"] for b in bodies if b.get("version")} == {
        "staging",
        "production",
    }


async def test_usage_sums_the_finished_runs_sessions(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.base_url}/usage"
    window = {"start": (NOW - timedelta(days=30)).isoformat(), "end": NOW.isoformat()}
    status, usage, _ = await get(http, url, params=window)
    assert status == 200 and usage
    expected: dict[tuple[str, str], list[float]] = {}
    for body in await finished_bodies(sim, http):
        for session in sessions_of(body):
            day = session["timestamp"][:10] + "T00:00:00Z"
            total = expected.setdefault((body["use_case_id"], day), [0, 0.0])
            total[0] += 1
            total[1] += session["duration"] / 60
    assert {(u["use_case_id"], u["start"]) for u in usage} == set(expected)
    for row in usage:
        assert row["org_id"] == str(sim.org_id)
        assert datetime.fromisoformat(row["end"]) - datetime.fromisoformat(row["start"]) == (
            timedelta(days=1)
        )
        calls, minutes = expected[row["use_case_id"], row["start"]]
        assert row["calls"] == calls and row["minutes"] == pytest.approx(minutes, abs=1e-3)
    # A window of part of one day bills that whole day; an empty stretch bills nothing.
    day = usage[-1]["start"]
    partial = {"start": day.replace("T00:00", "T10:00"), "end": day.replace("T00:00", "T11:00")}
    one_day = (await get(http, url, params=partial))[1]
    assert one_day == [u for u in usage if u["start"] == day]
    assert (await get(http, url, params={"start": "2020-01-01", "end": "2020-02-01"}))[1] == []
    # Fetching the same runs again bills nothing more.
    assert (await get(http, url, params=window))[1] == usage
    for params in ({"start": "soon", "end": window["end"]}, {"start": window["start"]}):
        status, body, _ = await get(http, url, params=params)
        assert status in (400, 422) and isinstance(body["message"], str)


async def test_issues_lists_finished_runs_issues_with_filters(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.base_url}/issues"
    status, issues, _ = await get(http, url)
    assert status == 200 and issues
    bodies = await finished_bodies(sim, http)
    # The bodies were rendered at the stage /issues saw (a fetch moves a run on afterwards).
    assert sorted(issues, key=lambda i: i["id"]) == sorted(
        (i for b in bodies for i in b["issues"]), key=lambda i: i["id"]
    )
    use_case = issues[0]["use_case_id"]
    only = (await get(http, url, params={"use_case_id": use_case}))[1]
    assert only and len(only) < len(issues) and all(i["use_case_id"] == use_case for i in only)
    run_id = issues[-1]["run_id"]
    of_run = (await get(http, url, params={"run_id": run_id.upper()}))[1]
    assert of_run and all(i["run_id"] == run_id for i in of_run)
    # Reviewed since: same issues, with verdicts.
    assert {i["id"] for i in of_run} == {i["id"] for i in issues if i["run_id"] == run_id}
    assert all(i["status"] != "open" for i in of_run)
    elsewhere = next(
        i["use_case_id"] for i in issues if i["use_case_id"] != of_run[0]["use_case_id"]
    )
    both = {"use_case_id": elsewhere, "run_id": run_id}
    assert (await get(http, url, params=both))[1] == []
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await get(http, url, params={"run_id": unknown}))[1] == []
    for name in ("use_case_id", "run_id"):
        status, body, _ = await get(http, url, params={name: "not-a-uuid"})
        assert status == 422 and isinstance(body["message"], str)


async def test_catalog_endpoints_fault_and_rate_limit_like_the_rest(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(runs=10, error_rate=1.0, stall_seconds=0.05) as s:
        for _ in range(30):
            with contextlib.suppress(aiohttp.ClientError):
                await get(http, f"{s.base_url}/use-cases")
        assert sum(s.stats.faults.values()) == 30
    async with Simulator(runs=10, rate_limit=5) as s:
        results = await asyncio.gather(*(get(http, f"{s.base_url}/issues") for _ in range(8)))
    assert Counter(r[0] for r in results) == {200: 5, 429: 3}


async def test_same_seed_same_catalog_usage_and_sessions(http: aiohttp.ClientSession) -> None:
    paths = ["use-cases", "issues", "usage?start=2025-05-20T00:00:00Z&end=2025-06-01T00:00:00Z"]
    seen = []
    for _ in range(2):
        async with Simulator(runs=60, seed=3, now=NOW, history=timedelta(days=30)) as s:
            bodies = []
            for run_id in s.run_ids():
                async with http.get(f"{s.base_url}/runs/{run_id}") as resp:
                    bodies.append(await resp.read())
            for path in paths:
                async with http.get(f"{s.base_url}/{path}") as resp:
                    bodies.append(await resp.read())
            seen.append(bodies)
    assert seen[0] == seen[1]
    assert any(b'"type":"session"' in b for b in seen[0])
