"""What can go wrong with a run, as kinds rather than sentences.

Metrics, `status`, the status page and the dead-letter table group failures by `FailureKind`,
whose values are stable: rewording a message changes `Failure.reason` (the text kept for a
human in `dead_letters.reason`) and nothing that a dashboard or a query groups by.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    """Values are stored (`dead_letters.kind`) and exported as metric labels: never rename one."""

    NOT_FOUND = "not_found"  # HTTP 404: the API has no such run (any more)
    HTTP_4XX = "http_4xx"  # another 4xx but 401/403 (those stop the worker instead)
    RATE_LIMITED = "rate_limited"  # HTTP 429, still after the in-call retries
    HTTP_5XX = "http_5xx"
    UNEXPECTED_STATUS = "unexpected_status"  # neither 2xx, 4xx nor 5xx (an unfollowed 3xx)
    TIMEOUT = "timeout"  # no answer in time (or HTTP 408)
    CONNECTION = "connection"  # refused, reset, TLS: no HTTP answer at all
    CUT_TRANSFER = "cut_transfer"  # the body ended before its framing said it would
    INVALID_BODY = "invalid_body"  # a whole 2xx body that is not UTF-8 JSON of one object
    PAYLOAD_REJECTED = "payload_rejected"  # a JSON object normalize's policy refuses
    NORMALIZE_ERROR = "normalize_error"  # normalize crashed: a bug, the body is kept
    STORE_ERROR = "store_error"  # PostgreSQL refused the run's rows
    INVALID_RUN_ID = "invalid_run_id"  # the queued id is not a UUID
    UNEXPECTED = "unexpected"  # any other exception while fetching

    @property
    def phrase(self) -> str:
        """A few words for a person (`status`, the status page); stable like the value."""
        return _PHRASES[self]

    @classmethod
    def of_http_status(cls, status: int) -> FailureKind:
        """The kind of an API answer that is not a success."""
        if status in _BY_STATUS:
            return _BY_STATUS[status]
        if 400 <= status < 500:
            return cls.HTTP_4XX
        return cls.HTTP_5XX if 500 <= status < 600 else cls.UNEXPECTED_STATUS


def phrase_of(kind: str) -> str:
    """A stored kind in words; one this version does not know (a newer worker wrote it) as
    it is."""
    try:
        return FailureKind(kind).phrase
    except ValueError:
        return kind


_BY_STATUS = {
    404: FailureKind.NOT_FOUND,
    408: FailureKind.TIMEOUT,
    429: FailureKind.RATE_LIMITED,
}

_PHRASES = {
    FailureKind.NOT_FOUND: "HTTP 404",
    FailureKind.HTTP_4XX: "HTTP 4xx",
    FailureKind.RATE_LIMITED: "HTTP 429",
    FailureKind.HTTP_5XX: "HTTP 5xx",
    FailureKind.UNEXPECTED_STATUS: "unexpected HTTP status",
    FailureKind.TIMEOUT: "timed out",
    FailureKind.CONNECTION: "connection failed",
    FailureKind.CUT_TRANSFER: "transfer cut short",
    FailureKind.INVALID_BODY: "invalid body",
    FailureKind.PAYLOAD_REJECTED: "payload rejected",
    FailureKind.NORMALIZE_ERROR: "normalize error",
    FailureKind.STORE_ERROR: "store error",
    FailureKind.INVALID_RUN_ID: "invalid run id",
    FailureKind.UNEXPECTED: "unexpected",
}

# How a reason starts when the failure is not an API answer. An invalid body is worded as
# normalize's refusals are ("payload rejected: invalid JSON: ... at byte 812"): to the payload
# policy both are the same thing, a body that will never be stored.
_REASON_PREFIXES = {
    FailureKind.INVALID_BODY: "payload rejected",
    FailureKind.PAYLOAD_REJECTED: "payload rejected",
    FailureKind.NORMALIZE_ERROR: "normalize error",
    FailureKind.STORE_ERROR: "store error",
    FailureKind.INVALID_RUN_ID: "invalid run id",
    FailureKind.UNEXPECTED: "unexpected",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """One failed attempt at a run: what kind, what exactly (`detail`, free text for a person),
    and whether asking again could help."""

    kind: FailureKind
    detail: str
    permanent: bool  # straight to the dead letter
    http_status: int | None = None
    body: bytes | None = None  # the API's answer (the bad body, or its error body), as received
    retry_after: float | None = None  # seconds the API asked us to wait (Retry-After)

    @property
    def reason(self) -> str:
        """The one-line reason kept in `dead_letters.reason` and `ingest_queue.last_error`."""
        prefix = _REASON_PREFIXES.get(self.kind)
        if prefix is not None:
            return f"{prefix}: {self.detail}"
        if self.http_status is not None:
            return f"HTTP {self.http_status}: {self.detail}"
        return self.detail
