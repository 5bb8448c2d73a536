"""Everything that talks HTTP to HappyRobot: client, error classes, retry policy, rate limiter."""

from ingest.api.client import ApiClient, FetchedRun, open_client
from ingest.api.errors import ApiError, AuthError, InvalidRunId, PermanentError, RetryableError
from ingest.api.ratelimit import RateLimiter
from ingest.api.retry import RetryPolicy, backoff, parse_retry_after

__all__ = [
    "ApiClient",
    "ApiError",
    "AuthError",
    "FetchedRun",
    "InvalidRunId",
    "PermanentError",
    "RateLimiter",
    "RetryPolicy",
    "RetryableError",
    "backoff",
    "open_client",
    "parse_retry_after",
]
