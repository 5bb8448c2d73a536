"""The one retry policy: capped exponential backoff with full jitter, honouring Retry-After.

Retries inside a claim are few and short; a longer wait (a large Retry-After, or retries
exhausted) is raised to the worker, which puts the run back in the queue with `available_at`
instead of holding its lease while it sleeps.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from ingest.api.errors import RetryableError
from ingest.logs import get_logger

T = TypeVar("T")
log = get_logger("ingest.api")


def backoff(attempt: int, *, base: float = 0.25, cap: float = 5.0) -> float:
    """Full jitter: uniform over [0, min(cap, base * 2**(attempt-1))] (attempt counts from 1)."""
    return random.uniform(0.0, min(cap, base * 2 ** max(attempt - 1, 0)))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from Retry-After (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2  # extra attempts after the first, inside one call
    base: float = 0.25
    max_backoff: float = 5.0  # longest sleep inside a call; anything longer goes to the queue

    def delay(self, attempt: int, error: RetryableError) -> float | None:
        """Seconds to sleep before the next attempt, or None to give up and raise `error`."""
        if attempt > self.retries:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_backoff else None
        return backoff(attempt, base=self.base, cap=self.max_backoff)


async def with_retries(
    attempt_once: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str
) -> tuple[T, int]:
    """Run `attempt_once` until it succeeds or `policy` gives up; returns (result, attempts)."""
    attempt = 1
    while True:
        try:
            return await attempt_once(), attempt
        except RetryableError as exc:
            wait = policy.delay(attempt, exc)
            if wait is None:
                raise
            log.info("api.retry", what=what, attempt=attempt, wait_s=round(wait, 3), error=str(exc))
            await asyncio.sleep(wait)
            attempt += 1
