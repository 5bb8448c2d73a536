"""What can go wrong talking to the API, sorted by what the worker must do about it.

Each error knows its `FailureKind` when it is raised (the client is the one that saw the
timeout, the cut transfer or the status), so nothing downstream reads its wording again.
"""

from __future__ import annotations

from ingest.failures import Failure, FailureKind
from ingest.ids import InvalidRunId
from ingest.logs import scrub


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in scrub(text).splitlines())


class ApiError(Exception):
    """A failed API call. str() is one readable line (`GET /runs/<id>: HTTP 404: ...`);
    `detail` is what went wrong without the request and status; registered secrets are
    scrubbed from both."""

    def __init__(
        self,
        what: str,
        detail: str,
        *,
        kind: FailureKind,
        status: int | None = None,
        body: bytes | None = None,
        retry_after: float | None = None,
    ):
        self.detail = _one_line(detail)
        shown_status = f"HTTP {status}: " if status is not None and not 200 <= status < 300 else ""
        super().__init__(_one_line(f"{what}: {shown_status}{self.detail}"))
        self.kind = kind
        self.status = status
        self.body = body
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After)

    def failure(self) -> Failure:
        """This error as a run's failed attempt."""
        return Failure(
            kind=self.kind,
            detail=self.detail,
            permanent=isinstance(self, PermanentError),
            http_status=self.status,
            body=self.body,
            retry_after=self.retry_after,
        )


class RetryableError(ApiError):
    """Try again later: 429, 5xx, timeouts, connection resets, a body cut short in transfer.

    `retry_after` is the server's wish in seconds (from Retry-After), when it stated one.
    """


class PermanentError(ApiError):
    """404 and other 4xx: asking again will not help; the run goes to the dead letter."""


class InvalidBody(PermanentError):
    """A 2xx body that arrived whole (its Content-Length or chunked framing says so) but is not
    valid UTF-8, not JSON, or not the JSON value asked for: the same bytes would come again, so
    the run is dead-lettered with them at once. `detail` is jsontext's wording, the same that
    `reprocess` gives for a stored body (`invalid JSON: ... at byte 812`)."""

    def __init__(self, what: str, reason: str, *, status: int, body: bytes):
        super().__init__(what, reason, kind=FailureKind.INVALID_BODY, status=status, body=body)


class AuthError(ApiError):
    """401/403: the API key or organization is wrong; no other run can succeed either."""


__all__ = [
    "ApiError",
    "AuthError",
    "InvalidBody",
    "InvalidRunId",
    "PermanentError",
    "RetryableError",
]
