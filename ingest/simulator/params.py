"""Query parameters of the simulated endpoints, validated as the API documents them: a bad
one is a 400 (ValueError), or a 422 (Unprocessable) where the API's validation layer answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from ingest.simulator.data import RUN_STATUSES


class Unprocessable(ValueError):
    """A parameter of the wrong type: 422, as the API's validation layer answers it."""

    status = 422


def uuid_param(query: Any, name: str) -> str | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise Unprocessable(f"{name} must be a UUID") from None


def _moment(query: Any, name: str) -> datetime | None:
    """An ISO 8601 date-time parameter (naive: UTC); ValueError when it is not one."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def usage_window(query: Any) -> tuple[datetime, datetime]:
    start, end = _moment(query, "start"), _moment(query, "end")
    if start is None or end is None:
        raise Unprocessable("start and end are required")
    if end < start:
        raise ValueError("end must not be before start")
    return start, end


def list_params(query: Any) -> dict[str, Any]:
    """GET /runs query parameters, validated as the API documents them (ValueError if not)."""

    def number(name: str, default: int, low: int, high: int) -> int:
        raw = query.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer") from None
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}")
        return value

    status = query.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}")
    sort = query.get("sort", "desc")
    if sort not in ("asc", "desc"):
        raise ValueError("sort must be asc or desc")
    use_case = query.get("use_case_id")
    return {
        "limit": number("limit", 1000, 1, 5000),
        "offset": number("offset", 0, 0, 2**31),
        "use_case_id": None if use_case is None else use_case.lower(),
        "status": status,
        "start": _moment(query, "start"),
        "end": _moment(query, "end"),
        "completed_start": _moment(query, "completed_start"),
        "completed_end": _moment(query, "completed_end"),
        "descending": sort == "desc",
    }
