"""structlog, configured once: JSON lines off a TTY, a readable console on one.

Context (run_id, attempt, worker_id) is bound with `structlog.contextvars.bound_contextvars`,
so it follows a run through every await without being passed around.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import structlog

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never let `value` reach a log line, whichever field or exception carries it."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    # Credentials inside any URL, whatever their source.
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value


def _scrub_processor(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # Nested too: a JSON traceback is a list of dicts whose messages can quote a secret.
    for key, value in event.items():
        event[key] = _scrub_value(value)
    return event


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(log_format: str | None = None, level: int = logging.INFO) -> None:
    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        renderer: list[Any] = [
            # No frame locals: a driver's connect() frame holds the database password.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            _scrub_processor,
            structlog.processors.JSONRenderer(serializer=_json_dumps),
        ]
    else:
        renderer = [
            structlog.processors.format_exc_info,
            _scrub_processor,
            structlog.dev.ConsoleRenderer(),
        ]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
