"""Failure kinds: stable values (stored and exported), reasons worded as they always were."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.db import migrate
from ingest.failures import Failure, FailureKind, phrase_of


def test_kind_values_never_change() -> None:
    # Stored in dead_letters.kind and exported as metric labels: renaming one orphans both.
    assert sorted(k.value for k in FailureKind) == [
        "connection",
        "cut_transfer",
        "http_4xx",
        "http_5xx",
        "invalid_body",
        "invalid_run_id",
        "normalize_error",
        "not_found",
        "payload_rejected",
        "rate_limited",
        "store_error",
        "timeout",
        "unexpected",
        "unexpected_status",
    ]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, FailureKind.HTTP_4XX),
        (404, FailureKind.NOT_FOUND),
        (408, FailureKind.TIMEOUT),
        (410, FailureKind.HTTP_4XX),
        (429, FailureKind.RATE_LIMITED),
        (500, FailureKind.HTTP_5XX),
        (599, FailureKind.HTTP_5XX),
        (304, FailureKind.UNEXPECTED_STATUS),
    ],
)
def test_an_http_answer_has_the_kind_of_its_status(status: int, kind: FailureKind) -> None:
    assert FailureKind.of_http_status(status) is kind


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            Failure(
                kind=FailureKind.NOT_FOUND, detail="Run not found", permanent=True, http_status=404
            ),
            "HTTP 404: Run not found",
        ),
        (
            Failure(
                kind=FailureKind.INVALID_BODY,
                detail="invalid JSON: unexpected end of data at byte 812",
                permanent=True,
                http_status=200,
            ),
            "payload rejected: invalid JSON: unexpected end of data at byte 812",
        ),
        (
            Failure(kind=FailureKind.PAYLOAD_REJECTED, detail="body has no id", permanent=True),
            "payload rejected: body has no id",
        ),
        (
            Failure(
                kind=FailureKind.STORE_ERROR,
                detail="DataError: invalid input syntax",
                permanent=True,
            ),
            "store error: DataError: invalid input syntax",
        ),
        (
            Failure(
                kind=FailureKind.TIMEOUT, detail="timed out waiting for the API", permanent=False
            ),
            "timed out waiting for the API",
        ),
        (
            Failure(kind=FailureKind.UNEXPECTED, detail="KeyError: 'x'", permanent=False),
            "unexpected: KeyError: 'x'",
        ),
    ],
)
def test_reasons_read_as_they_always_did(failure: Failure, reason: str) -> None:
    assert failure.reason == reason


def test_failures_are_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        Failure(FailureKind.TIMEOUT, "late", False)  # type: ignore[misc]


def test_every_kind_has_a_phrase_and_unknown_kinds_show_as_stored() -> None:
    assert all(k.phrase for k in FailureKind)
    assert len({k.phrase for k in FailureKind}) == len(FailureKind)
    assert phrase_of("not_found") == "HTTP 404"
    assert phrase_of("a_kind_from_a_newer_worker") == "a_kind_from_a_newer_worker"


# Reasons as the worker worded them before dead_letters had a kind, and the kind 0005 gives them.
OLD_REASONS = {
    "HTTP 404: Run not found": "not_found",
    "HTTP 410: gone": "http_4xx",
    "HTTP 429: slow down (after 3 attempts)": "rate_limited",
    "HTTP 503: busy (after 3 attempts)": "http_5xx",
    "HTTP 200: invalid JSON: x at byte 9 (body of 9 bytes, perhaps cut short)": "cut_transfer",
    "payload rejected: invalid JSON: unexpected end of data at byte 812": "invalid_body",
    "payload rejected: id mismatch: body id 1 is not the requested run 2": "payload_rejected",
    "store error: DataError: invalid input": "store_error",
    "normalize error: KeyError: 'x'": "normalize_error",
    "invalid run id: not a run ID (expected a UUID): 'x'": "invalid_run_id",
    "unexpected: RuntimeError: boom (after 3 attempts)": "unexpected",
    "timed out waiting for the API (after 3 attempts)": "timeout",
    "ClientPayloadError: Response payload is not completed (after 3 attempts)": "cut_transfer",
    "ClientConnectorError: Cannot connect to host (after 3 attempts)": "connection",
}


async def test_the_migration_gives_older_dead_letters_a_kind_from_their_reason(
    engine: AsyncEngine,
) -> None:
    await migrate.downgrade(engine, "0004")
    try:
        async with engine.begin() as conn:
            for reason in OLD_REASONS:
                await conn.execute(
                    text(
                        "INSERT INTO dead_letters (run_id, reason, attempts)"
                        " VALUES (gen_random_uuid(), :reason, 1)"
                    ),
                    {"reason": reason},
                )
    finally:
        await migrate.upgrade(engine)
    async with engine.connect() as conn:
        kinds = dict(
            tuple(r) for r in await conn.execute(text("SELECT reason, kind FROM dead_letters"))
        )
    assert kinds == OLD_REASONS
