"""The raw archive (encoding in ingest.archive; reading back and prune in ingest.store):
compressed bodies read back byte for byte, old uncompressed ones still read (and compressed by
reprocess), and `prune` deleting only the payloads it says."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import archive
from ingest.normalize import normalize
from ingest.store import prune_payloads, read_payload, reprocess, store_batch
from tests.helpers import run_cli, scalar, start_cli
from tests.payloads import make_run_payload

NOW = datetime.now(UTC)


async def _store(engine: AsyncEngine, bodies: list[bytes], fetched_at: datetime) -> None:
    rows = [normalize(b, uuid.UUID(orjson.loads(b)["id"]), fetched_at) for b in bodies]
    async with engine.begin() as conn:
        await store_batch(conn, rows)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=5000) | st.text(max_size=3000).map(str.encode))
def test_any_bytes_round_trip(raw: bytes) -> None:
    assert archive.unpack(archive.pack(raw), archive.ZSTD) == raw
    assert archive.unpack(raw, archive.IDENTITY) == raw


def test_a_damaged_or_unknown_body_is_an_error_not_a_wrong_body() -> None:
    packed = archive.pack(b'{"id": "x"}' * 50)
    with pytest.raises(archive.ArchiveError, match="damaged zstd payload"):
        archive.unpack(packed[: len(packed) // 2], archive.ZSTD)
    with pytest.raises(archive.ArchiveError, match="unknown payload encoding 'lz4'"):
        archive.unpack(packed, "lz4")


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 10**6), odd=st.sampled_from(["", "\x00", "é\u2028", "\ud7ff"]))
async def test_stored_bodies_read_back_byte_for_byte(
    engine: AsyncEngine, seed: int, odd: str
) -> None:
    body = make_run_payload(random.Random(seed), events=8, issues=1)
    body["annotation"] = f"note{odd}"
    # Spacing and key order as a server might send them: kept, not re-serialized.
    raw = orjson.dumps(body, option=orjson.OPT_INDENT_2).replace(b"\n", b"\r\n")
    await _store(engine, [raw], NOW)
    read = await read_payload(engine, uuid.UUID(body["id"]))
    assert read is not None and read.body == raw and read.intact


async def test_uncompressed_bodies_stored_before_still_read_and_reprocess_compresses_them(
    engine: AsyncEngine,
) -> None:
    bodies = [orjson.dumps(make_run_payload(random.Random(n), events=5)) for n in range(3)]
    await _store(engine, bodies, NOW)
    async with engine.begin() as conn:  # as migration 0010 leaves a body stored before it
        for raw in bodies:
            await conn.execute(
                text("UPDATE run_payloads SET body = :b, encoding = 'identity' WHERE run_id = :r"),
                {"b": raw, "r": uuid.UUID(orjson.loads(raw)["id"])},
            )
    for raw in bodies:
        read = await read_payload(engine, uuid.UUID(orjson.loads(raw)["id"]))
        assert read is not None and read.body == raw

    result = await reprocess(engine)
    assert (result.runs, result.refused) == (3, [])
    assert await scalar(engine, "SELECT array_agg(DISTINCT encoding) FROM run_payloads") == ["zstd"]
    for raw in bodies:
        read = await read_payload(engine, uuid.UUID(orjson.loads(raw)["id"]))
        assert read is not None and read.body == raw


async def test_reprocess_refuses_a_damaged_body_and_keeps_its_rows(engine: AsyncEngine) -> None:
    body = make_run_payload(random.Random(5), events=5)
    await _store(engine, [orjson.dumps(body)], NOW)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE run_payloads SET body = substr(body, 1, 40)"))
    result = await reprocess(engine)
    [(run_id, reason)] = result.refused
    assert run_id == uuid.UUID(body["id"]) and reason.startswith("damaged zstd payload")
    assert await scalar(engine, "SELECT count(*) FROM run_events") == 6


_COUNTS = (
    "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_events),"
    " (SELECT count(*) FROM event_intermediates), (SELECT count(*) FROM run_sessions),"
    " (SELECT count(*) FROM session_messages), (SELECT count(*) FROM run_issues),"
    " (SELECT sum(issue_count) FROM runs), (SELECT count(*) FROM dead_letters)"
)


async def _counts(engine: AsyncEngine) -> tuple[int, ...]:
    async with engine.connect() as conn:
        return tuple((await conn.execute(text(_COUNTS))).one())


async def test_prune_deletes_only_payloads_fetched_before_the_cutoff(
    engine: AsyncEngine,
) -> None:
    rng = random.Random(8)
    old = [orjson.dumps(make_run_payload(rng, events=4, issues=1)) for _ in range(7)]
    new = [orjson.dumps(make_run_payload(rng, events=4, issues=1)) for _ in range(3)]
    await _store(engine, old, NOW - timedelta(days=100))
    await _store(engine, new, NOW - timedelta(days=10))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO dead_letters (run_id, kind, reason, body, attempts)"
                " VALUES (gen_random_uuid(), 'http_5xx', 'gave up', 'x', 8)"
            )
        )
    before = await _counts(engine)

    dry = await prune_payloads(engine, NOW - timedelta(days=90), dry_run=True)
    assert dry.payloads == 7 and dry.stored_bytes > 0
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == 10

    pruned = await prune_payloads(engine, NOW - timedelta(days=90), chunk=3)  # several chunks
    assert (pruned.payloads, pruned.stored_bytes) == (7, dry.stored_bytes)
    kept = await scalar(engine, "SELECT array_agg(run_id ORDER BY run_id) FROM run_payloads")
    assert kept == sorted(uuid.UUID(orjson.loads(b)["id"]) for b in new)
    assert await _counts(engine) == before  # runs, their rows and dead letters untouched

    # Reprocess rebuilds what it still can and names the rest.
    pruned_id = uuid.UUID(orjson.loads(old[0])["id"])
    result = await reprocess(engine, [pruned_id, kept[0]])
    assert (result.runs, result.missing) == (1, [pruned_id])


def test_prune_and_payload_commands_reject_bad_input(subprocess_env: dict[str, str]) -> None:
    env = subprocess_env
    seed = run_cli("prune", "--older-than", "90d", "--dry-run", env=env)
    assert seed.returncode == 0, seed.stderr
    assert seed.stdout.startswith("would delete 0 raw payloads fetched before ")

    bad = run_cli("prune", "--older-than", "soon", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'soon'" in bad.stderr
    missing = run_cli("prune", env=env)
    assert missing.returncode == 2 and "--older-than" in missing.stderr

    unknown = uuid.uuid4()
    none = run_cli("payload", str(unknown), env=env)
    assert none.returncode == 1 and none.stderr == f"no stored payload for run {unknown}\n"
    assert run_cli("payload", "nope", env=env).returncode == 2


async def test_payload_command_prints_the_body_as_received(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    raw = orjson.dumps(make_run_payload(random.Random(3), events=3), option=orjson.OPT_INDENT_2)
    await _store(engine, [raw], NOW)
    run_id = orjson.loads(raw)["id"]
    proc = await start_cli(subprocess_env, "payload", run_id)
    stdout, _ = await proc.communicate()
    assert (proc.returncode, stdout) == (0, raw)

    async with engine.begin() as conn:
        await conn.execute(text("UPDATE run_payloads SET sha256 = repeat('0', 64)"))
    tampered = run_cli("payload", run_id, env=subprocess_env)
    assert tampered.returncode == 1 and "does not match its sha256" in tampered.stderr

    pruned = run_cli("prune", "--older-than", "0", env=subprocess_env)
    assert pruned.returncode == 0 and pruned.stdout.startswith("deleted 1 raw payloads")
    assert await scalar(engine, "SELECT count(*) FROM runs") == 1
