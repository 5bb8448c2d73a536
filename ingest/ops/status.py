"""What `status` shows: queue counts, oldest due age, throughput, dead letters, drift."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.db.tables import QUEUE_STATES

THROUGHPUT_WINDOWS_MIN = (1, 5, 60)


@dataclass
class StatusReport:
    counts: dict[str, int]
    polling: int  # pending only to poll runs still scheduled/running upstream
    oldest_due_age_s: float | None
    throughput: dict[int, int]  # minutes -> runs finished done in that window
    dead_reasons: list[tuple[str, int]] = field(default_factory=list)
    drift: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), option=orjson.OPT_NON_STR_KEYS).decode()


async def collect(engine: AsyncEngine) -> StatusReport:
    async with engine.connect() as conn:
        counts = dict.fromkeys(QUEUE_STATES, 0)
        for state, n in await conn.execute(
            text("SELECT state, count(*) FROM ingest_queue GROUP BY state")
        ):
            counts[state] = n
        polling = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM ingest_queue"
                    " WHERE state = 'pending' AND awaiting_terminal"
                )
            )
        ).scalar_one()
        oldest = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM now() - min(available_at)) FROM ingest_queue"
                    " WHERE state = 'pending' AND available_at <= now()"
                )
            )
        ).scalar()
        throughput = {}
        for minutes in THROUGHPUT_WINDOWS_MIN:
            throughput[minutes] = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM ingest_queue WHERE state = 'done'"
                        " AND finished_at > now() - make_interval(mins => :m)"
                    ),
                    {"m": minutes},
                )
            ).scalar_one()
        dead = [
            (reason, n)
            for reason, n in await conn.execute(
                text(
                    "SELECT split_part(reason, ':', 1) AS r, count(*) FROM dead_letters"
                    " GROUP BY r ORDER BY count(*) DESC LIMIT 10"
                )
            )
        ]
        drift = [
            (kind, n)
            for kind, n in await conn.execute(
                text(
                    "SELECT d->>'kind' AS k, count(DISTINCT run_id) FROM run_payloads,"
                    " jsonb_array_elements(drift) d GROUP BY k ORDER BY count(*) DESC LIMIT 20"
                )
            )
        ]
    return StatusReport(
        counts=counts,
        polling=polling,
        oldest_due_age_s=float(oldest) if oldest is not None else None,
        throughput=throughput,
        dead_reasons=dead,
        drift=drift,
    )
