"""Times and durations as people type them on the command line (`--since 30d`, `--every 1m`).

Pure and free of heavy imports: the CLI uses these as argparse types for every command.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")


def parse_duration(text: str) -> timedelta:
    """`30s`, `15m`, `12h`, `30d`, `2w`, or sums like `1h30m`; ValueError otherwise."""
    s = text.strip().lower()
    if not _DURATION.fullmatch(s):
        raise ValueError(f"{text!r} is not a duration (like 30s, 15m, 12h, 30d or 1h30m)")
    seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([wdhms])", s))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime) -> datetime:
    """An ISO-8601 date or date-time (UTC when it names no zone), or a duration meaning that
    long before `now` (`30d`, `12h`); ValueError otherwise."""
    with contextlib.suppress(ValueError):
        return now - parse_duration(text)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO-8601 date/date-time nor a relative time like 30d or 12h"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
