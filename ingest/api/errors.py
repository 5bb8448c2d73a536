"""What can go wrong talking to the API, sorted by what the worker must do about it."""

from __future__ import annotations

from ingest.ids import InvalidRunId
from ingest.logs import scrub


class ApiError(Exception):
    """A failed API call. str() is one readable line; registered secrets are scrubbed from it."""

    def __init__(self, message: str, *, status: int | None = None, body: bytes | None = None):
        lines = scrub(message).splitlines()
        super().__init__(" ".join(line.strip() for line in lines))
        self.status = status
        self.body = body


class RetryableError(ApiError):
    """Try again later: 429, 5xx, timeouts, connection resets, a body cut short in transfer.

    `retry_after` is the server's wish in seconds (from Retry-After), when it stated one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: bytes | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class PermanentError(ApiError):
    """404 and other 4xx: asking again will not help; the run goes to the dead letter."""


class InvalidBody(PermanentError):
    """A 2xx body that arrived whole (its Content-Length or chunked framing says so) but is not
    valid UTF-8, not JSON, or not the JSON value asked for: the same bytes would come again, so
    the run is dead-lettered with them at once. `reason` is jsontext's wording, the same that
    `reprocess` gives for a stored body (`invalid JSON: ... at byte 812`)."""

    def __init__(self, message: str, *, reason: str, status: int, body: bytes):
        super().__init__(message, status=status, body=body)
        self.reason = reason


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
