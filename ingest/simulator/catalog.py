"""The simulated organisation's catalog (GET /use-cases) and billing (GET /usage).

Catalog details come from a random stream of their own, so adding them left every run of a
seed as it was before they existed.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.simulator.sessions import new_uuid

# (name, icon, data_retention_days): the first names of a freight broker's voice-agent
# workspace; None keeps data forever.
_USE_CASES = (
    ("Carrier inbound sales", "truck", 30),
    ("Load tender follow-up", "clipboard-list", 7),
    ("Check calls: track and trace", "map-pin", None),
    ("Appointment scheduling", "calendar", 90),
    ("Driver recruiting", "user-plus", 14),
    ("Freight claims intake", "file-text", 30),
)
RUN_COLUMNS = ("load_id", "carrier_mc", "rate_usd", "lane")  # the keys of every run's `data`
_WEBHOOK_HOSTS = ("hooks.northwind-tms.com", "integrations.example-broker.com")


def details(index: int, rng: random.Random, now: datetime, secret: str) -> dict[str, Any]:
    """The catalog fields of the index-th use case, besides its id, org and versions."""
    name, icon, retention = _USE_CASES[index % len(_USE_CASES)]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    group = new_uuid(rng)
    return {
        "icon": icon,
        "name": name,
        "slug": slug,
        "order": index,
        "run_columns": [
            {"group_id": group, "variable_id": new_uuid(rng), "name": column}
            for column in RUN_COLUMNS
        ],
        "timestamp": now - timedelta(days=120 - 9 * index, seconds=rng.randrange(86400)),
        "data_retention_days": retention,
        "webhooks": _webhooks(rng, slug, secret),
    }


def _webhooks(rng: random.Random, slug: str, secret: str) -> list[dict[str, Any]]:
    """Zero to two targets; the first always presents the secret, as a TMS receiver would."""
    hooks = [
        {
            "url": f"https://{host}/happyrobot/{slug}",
            "headers": {"Authorization": f"Bearer {secret}"},
        }
        for host in _WEBHOOK_HOSTS[: rng.choice((0, 1, 1, 2))]
    ]
    if len(hooks) == 2:
        hooks[1]["headers"] = {"x-api-key": secret}
    return hooks


def usage_rows(
    org_id: str,
    sessions: Iterable[tuple[str, datetime, float]],
    use_case_ids: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    """Calls and minutes per use case per UTC day overlapping [start, end).

    `sessions` are (use case id, start, duration in seconds). A day counts whole: the row
    bills every call of that day, as an invoice line would. Days without calls have no row.
    """
    first = _day(start)
    totals: dict[tuple[datetime, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for use_case_id, at, duration in sessions:
        day = _day(at)
        if first <= day < end:
            total = totals[day, use_case_id]
            total[0] += 1
            total[1] += duration
    order = {uc: i for i, uc in enumerate(use_case_ids)}
    return [
        {
            "org_id": org_id,
            "use_case_id": use_case_id,
            "start": day,
            "end": day + timedelta(days=1),
            "calls": int(calls),
            "minutes": round(seconds / 60, 4),
        }
        for (day, use_case_id), (calls, seconds) in sorted(
            totals.items(), key=lambda item: (item[0][0], order[item[0][1]])
        )
    ]


def _day(moment: datetime) -> datetime:
    """The UTC midnight starting `moment`'s day (naive times are UTC)."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)
