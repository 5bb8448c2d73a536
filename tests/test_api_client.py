"""ApiClient over real HTTP against the simulator: each error class, Retry-After, UUID checks,
and the API key never showing in any error or log output."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest
import pytest_asyncio
import structlog

from ingest.api import (
    ApiClient,
    ApiError,
    AuthError,
    InvalidRunId,
    PermanentError,
    RetryableError,
    parse_retry_after,
)
from ingest.api.errors import InvalidBody
from ingest.config import Secret, Settings
from ingest.logs import configure_logging, get_logger
from ingest.simulator import Simulator

KEY = "sk-test-7f3a9c2e41b8d6f0"
WRONG_KEY = "sk-wrong-9d8e7f6a5b4c"  # a module constant: logged tracebacks show test locals


# The key is this module's own: its tests search output for it.
pytestmark = pytest.mark.sim(runs=50, seed=3, api_key=KEY, stall_seconds=5)


def settings_for(sim: Simulator, **changes: object) -> Settings:
    base = Settings(
        api_key=Secret(KEY), org_id=str(sim.org_id), base_url=sim.base_url, concurrency=4
    )
    return base.with_overrides(**changes)


@pytest_asyncio.fixture
async def api(sim: Simulator) -> AsyncIterator[ApiClient]:
    async with ApiClient(settings_for(sim), read_timeout=0.3, max_backoff=3.0) as client:
        yield client


async def test_get_run_returns_the_body_as_sent(sim: Simulator, api: ApiClient) -> None:
    run_id = sim.run_ids()[0]
    expected = sim.runs.body(sim.runs.by_key[str(run_id)])
    fetched = await api.get_run(str(run_id).upper())
    assert fetched.run_id == run_id and fetched.status == 200 and fetched.attempts == 1
    assert fetched.body == expected
    assert abs((datetime.now(UTC) - fetched.fetched_at).total_seconds()) < 5


async def test_list_runs_pages_and_filters(sim: Simulator, api: ApiClient) -> None:
    first = await api.list_runs(limit=20)
    rest = await api.list_runs(limit=1000, offset=20)
    assert [i["id"] for i in first + rest] == [str(i) for i in sim.run_ids()]  # default asc
    newest = await api.list_runs(limit=1, sort="desc")
    assert newest[0]["id"] == str(sim.run_ids()[-1])
    t = datetime.fromisoformat(first[5]["timestamp"])
    window = await api.list_runs(start=t, end=t + timedelta(microseconds=1))
    assert [i["id"] for i in window] == [first[5]["id"]]
    use_case = first[0]["use_case_id"]
    completed = await api.list_runs(use_case_id=use_case, status="completed")
    assert completed and {(i["use_case_id"], i["status"]) for i in completed} == {
        (use_case, "completed")
    }
    done = await api.list_runs(completed_start=t.replace(tzinfo=None), completed_end=datetime.now())
    assert all(i["completed_at"] is not None for i in done)


async def test_429_retry_after_seconds_is_honoured(sim: Simulator, api: ApiClient) -> None:
    run_id = sim.run_ids()[0]
    sim.set_status_override(
        run_id, 429, b'{"message": "slow down"}', headers={"Retry-After": "1"}, times=1
    )
    started = time.monotonic()
    fetched = await api.get_run(run_id)
    assert fetched.attempts == 2 and time.monotonic() - started >= 0.95


async def test_429_retry_after_http_date_is_honoured(sim: Simulator, api: ApiClient) -> None:
    run_id = sim.run_ids()[0]
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    sim.set_status_override(run_id, 429, b"", headers={"Retry-After": when}, times=1)
    started = time.monotonic()
    fetched = await api.get_run(run_id)
    assert fetched.attempts == 2 and time.monotonic() - started >= 0.9


async def test_long_retry_after_goes_back_to_the_queue(sim: Simulator, api: ApiClient) -> None:
    run_id = sim.run_ids()[0]
    sim.set_status_override(run_id, 429, b"", headers={"Retry-After": "120"})
    before = sim.stats.total_requests
    started = time.monotonic()
    with pytest.raises(RetryableError) as caught:
        await api.get_run(run_id)
    assert caught.value.status == 429 and caught.value.retry_after == 120
    failure = caught.value.failure()
    assert (failure.kind, failure.retry_after, failure.permanent) == ("rate_limited", 120, False)
    assert time.monotonic() - started < 0.5 and sim.stats.total_requests == before + 1


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retried_then_succeeds(sim: Simulator, api: ApiClient, status: int) -> None:
    run_id = sim.run_ids()[1]
    sim.set_status_override(run_id, status, b'{"message": "oops"}', times=2)
    assert (await api.get_run(run_id)).attempts == 3


async def test_5xx_that_persists_is_retryable_after_a_few_tries(
    sim: Simulator, api: ApiClient
) -> None:
    run_id = sim.run_ids()[1]
    sim.set_status_override(run_id, 503, b'{"message": "down for maintenance"}')
    before = sim.stats.total_requests
    with pytest.raises(RetryableError) as caught:
        await api.get_run(run_id)
    assert (
        caught.value.status == 503 and caught.value.body == b'{"message": "down for maintenance"}'
    )
    assert str(caught.value) == f"GET /runs/{run_id}: HTTP 503: down for maintenance"
    failure = caught.value.failure()
    assert (failure.kind, failure.reason, failure.permanent) == (
        "http_5xx",
        "HTTP 503: down for maintenance",
        False,
    )
    assert sim.stats.total_requests == before + 3  # 1 + in_claim_retries


@pytest.mark.parametrize("fault", ["timeout", "reset", "500"])
async def test_transport_faults_are_retried(sim: Simulator, api: ApiClient, fault: str) -> None:
    run_id = sim.run_ids()[2]
    sim.inject_fault(run_id, fault)
    fetched = await api.get_run(run_id)
    assert fetched.attempts == 2 and orjson.loads(fetched.body)["id"] == str(run_id)


@pytest.mark.parametrize(
    ("fault", "kind", "detail"),
    [
        ("timeout", "timeout", "timed out waiting for the API"),
        ("reset", "cut_transfer", "ClientPayloadError: "),
    ],
)
async def test_transport_faults_that_persist_are_retryable_of_their_kind(
    sim: Simulator, api: ApiClient, fault: str, kind: str, detail: str
) -> None:
    run_id = sim.run_ids()[2]
    sim.inject_fault(run_id, fault, times=3)
    with pytest.raises(RetryableError) as caught:
        await api.get_run(run_id)
    failure = caught.value.failure()
    assert failure.kind == kind and failure.reason.startswith(detail) and not failure.permanent
    assert failure.http_status is None and str(caught.value).startswith(f"GET /runs/{run_id}: ")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"id": "abc", "events": [', "invalid JSON: unexpected end of data at byte 25"),
        (b'{"id": "abc"} x', "invalid JSON: unexpected content after document at byte 14"),
        (b"[1, 2]", "body is not a JSON object but list"),
        (b"", "invalid JSON: Input is a zero-length, empty document at byte 0"),
        (b'{"a": "\xff\xfe"}', "invalid UTF-8: 0xff at byte 7 (invalid start byte)"),
    ],
)
async def test_a_whole_body_that_is_not_a_json_object_is_invalid_after_one_request(
    sim: Simulator, api: ApiClient, body: bytes, reason: str
) -> None:
    """Content-Length says the body is whole: asking again would bring the same bytes."""
    run_id = sim.run_ids()[3]
    sim.set_payload(run_id, body)
    before = sim.stats.total_requests
    with pytest.raises(InvalidBody) as caught:
        await api.get_run(run_id)
    assert isinstance(caught.value, PermanentError)
    assert (caught.value.detail, caught.value.status, caught.value.body) == (reason, 200, body)
    assert str(caught.value) == f"GET /runs/{run_id}: {reason}"
    failure = caught.value.failure()
    assert (failure.kind, failure.reason) == ("invalid_body", f"payload rejected: {reason}")
    assert failure.permanent and failure.body == body
    assert sim.stats.total_requests == before + 1


@pytest.mark.parametrize("fault", ["truncate", "reset"])
async def test_a_transfer_cut_short_is_retried_within_the_call(
    sim: Simulator, api: ApiClient, fault: str
) -> None:
    """truncate: chunked, the last chunk never comes; reset: fewer bytes than Content-Length."""
    run_id = sim.run_ids()[2]
    sim.inject_fault(run_id, fault)
    before = sim.stats.total_requests
    fetched = await api.get_run(run_id)
    assert fetched.attempts == 2 and fetched.document is not None
    assert sim.stats.total_requests == before + 2


async def _raw_server(response: bytes, *, close: bool) -> tuple[asyncio.Server, str]:
    """An HTTP server that answers any request with `response` as written (then hangs up,
    with `close`), for framings the simulator does not produce."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        if close:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/api/v1"


@pytest.mark.parametrize(
    ("response", "outcome", "words", "kind"),
    [
        # Chunked, the last chunk sent: whole, and not JSON.
        (
            b'Transfer-Encoding: chunked\r\n\r\n2\r\n{"\r\n0\r\n\r\n',
            InvalidBody,
            "invalid JSON: unexpected end of data at byte 2",
            "invalid_body",
        ),
        # Chunked, cut before the last chunk: aiohttp reports the cut.
        (
            b'Transfer-Encoding: chunked\r\n\r\n2\r\n{"\r\n',
            RetryableError,
            "ClientPayloadError",
            "cut_transfer",
        ),
        # Neither Content-Length nor chunked: the body ends where the connection does, so a
        # cut cannot be told from the end, and it is asked again.
        (
            b'Connection: close\r\n\r\n{"a',
            RetryableError,
            "(body of 3 bytes, perhaps cut short)",
            "cut_transfer",
        ),
    ],
    ids=["chunked", "chunked, cut", "unframed"],
)
async def test_only_a_body_whose_framing_proves_it_whole_is_invalid(
    response: bytes, outcome: type[ApiError], words: str, kind: str
) -> None:
    server, base_url = await _raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + response, close=True
    )
    settings = Settings(api_key=Secret(KEY), base_url=base_url, concurrency=1)
    try:
        async with ApiClient(settings, in_claim_retries=0, read_timeout=2.0) as client:
            with pytest.raises(ApiError) as caught:
                await client.get_run(uuid.uuid4())
    finally:
        server.close()
        await server.wait_closed()
    assert type(caught.value) is outcome and words in str(caught.value), str(caught.value)
    assert caught.value.failure().kind == kind


async def test_server_gone_is_retryable(sim: Simulator) -> None:
    settings = settings_for(sim)
    await sim.close()
    async with ApiClient(settings, in_claim_retries=0) as client:
        with pytest.raises(RetryableError, match="Client") as caught:
            await client.get_run(uuid.uuid4())
    assert caught.value.failure().kind == "connection"


async def test_404_is_permanent_with_status_and_body(sim: Simulator, api: ApiClient) -> None:
    before = sim.stats.total_requests
    with pytest.raises(PermanentError) as caught:
        await api.get_run(uuid.UUID("00000000-0000-4000-8000-000000000000"))
    assert caught.value.status == 404 and orjson.loads(caught.value.body or b"")["message"]
    failure = caught.value.failure()
    assert failure.kind == "not_found" and failure.reason.startswith("HTTP 404: ")
    assert failure.permanent and failure.http_status == 404
    assert sim.stats.total_requests == before + 1


async def test_other_4xx_is_permanent(sim: Simulator, api: ApiClient) -> None:
    run_id = sim.run_ids()[4]
    sim.set_status_override(run_id, 422, b'{"message": "unprocessable"}')
    with pytest.raises(PermanentError, match="HTTP 422: unprocessable") as caught:
        await api.get_run(run_id)
    failure = caught.value.failure()
    assert (failure.kind, failure.reason) == ("http_4xx", "HTTP 422: unprocessable")


async def test_wrong_key_is_an_auth_error(sim: Simulator) -> None:
    async with ApiClient(settings_for(sim, api_key=Secret(WRONG_KEY))) as client:
        with pytest.raises(AuthError) as caught:
            await client.get_run(sim.run_ids()[0])
    assert caught.value.status == 401 and "API key or organization" in str(caught.value)


async def test_wrong_organization_is_an_auth_error(sim: Simulator) -> None:
    other = "00000000-0000-4000-8000-000000000001"
    async with ApiClient(settings_for(sim, org_id=other)) as client:
        with pytest.raises(AuthError) as caught:
            await client.list_runs()
    assert caught.value.status == 403


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "%2e%2e/x",
        "",
        " ",
        "not-a-uuid",
        "123",
        "../../runs",
        "00000000-0000-4000-8000-00000000000g",
        "00000000-0000-4000-8000-000000000000/../x",
        "00000000-0000-4000-8000-000000000000?x=1",
        "00000000-0000-4000-8000-000000000000\n",
        "urn:uuid:00000000-0000-4000-8000-000000000000",
        None,
        42,
    ],
)
async def test_invalid_run_ids_are_refused_before_any_request(
    sim: Simulator, api: ApiClient, bad: object
) -> None:
    before = sim.stats.total_requests
    with pytest.raises(InvalidRunId):
        await api.get_run(bad)  # type: ignore[arg-type]
    assert sim.stats.total_requests == before


@pytest.mark.slow
async def test_the_api_key_never_shows_in_errors_or_logs(
    sim: Simulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every failure mode, logged the way a worker would (with tracebacks, both formats)."""
    caplog.set_level(logging.DEBUG)
    ids = sim.run_ids()
    sim.inject_fault(ids[0], "reset", times=99)
    sim.inject_fault(ids[1], "timeout", times=99)
    sim.inject_fault(ids[2], "truncate", times=99)
    sim.set_status_override(ids[3], 503, b'{"message": "no"}')
    sim.set_status_override(ids[4], 404, b'{"message": "gone"}')
    texts = io.StringIO()
    for log_format in ("json", "console"):
        configure_logging(log_format, level=logging.DEBUG)
        log = get_logger("test")
        for settings in (settings_for(sim), settings_for(sim, org_id=None)):
            async with ApiClient(settings, read_timeout=0.2, max_backoff=0.1) as client:
                for run_id in ids[:5]:
                    try:
                        await client.get_run(run_id)
                    except ApiError as exc:
                        log.exception("fetch failed", run_id=str(run_id), error=str(exc))
                        texts.write(f"{exc}\n{exc!r}\n{exc.body!r}\n")
                        texts.write("".join(traceback.format_exception(exc)))
                    else:
                        raise AssertionError(f"{run_id} did not fail")
        # The wrong key itself is also a secret: an auth failure must not print it either.
        async with ApiClient(settings_for(sim, api_key=Secret(WRONG_KEY))) as client:
            try:
                await client.get_run(ids[5])
            except AuthError as exc:
                log.exception("auth failed", error=str(exc))
                texts.write(f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc)))
    structlog.reset_defaults()
    captured = capsys.readouterr()
    everything = "\n".join([captured.out, captured.err, caplog.text, texts.getvalue()])
    assert "fetch failed" in everything and "Traceback" in everything
    for secret in (KEY, WRONG_KEY):
        at = everything.find(secret)
        assert at < 0, everything[max(0, at - 300) : at + 50]
