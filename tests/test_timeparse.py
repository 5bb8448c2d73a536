"""Times and durations as typed on the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.timeparse import parse_duration, parse_time


def test_times_and_durations_parse() -> None:
    t0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert parse_time("30d", t0) == t0 - timedelta(days=30)
    assert parse_time("1h30m", t0) == t0 - timedelta(minutes=90)
    assert parse_time("2024-06-01", t0) == datetime(2024, 6, 1, tzinfo=UTC)
    assert parse_time("2024-06-01T10:00", t0) == datetime(2024, 6, 1, 10, tzinfo=UTC)
    assert parse_time("2024-06-01T10:00+02:00", t0) == datetime(2024, 6, 1, 8, tzinfo=UTC)
    assert parse_duration("30s") == timedelta(seconds=30)
    for bad in ("yesterday", "30x", "-1d", "0s", ""):
        with pytest.raises(ValueError):
            parse_time(bad, t0)
