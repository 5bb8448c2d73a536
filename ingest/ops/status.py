"""What `status` shows: queue counts, oldest due age, throughput, dead letters, drift."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.ops.snapshot import read_drift, read_queue

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
        # The same readings the status page and /metrics show (ingest.ops.snapshot).
        counts, oldest = await read_queue(conn)
        polling = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM ingest_queue"
                    " WHERE state = 'pending' AND awaiting_terminal"
                )
            )
        ).scalar_one()
        windows = ", ".join(
            f"count(*) FILTER (WHERE finished_at > now() - interval '{m} minutes')"
            for m in THROUGHPUT_WINDOWS_MIN
        )
        done = (
            await conn.execute(
                text(
                    f"SELECT {windows} FROM ingest_queue WHERE state = 'done'"
                    f" AND finished_at > now() - interval '{max(THROUGHPUT_WINDOWS_MIN)} minutes'"
                )
            )
        ).one()
        dead = [
            (reason, n)
            for reason, n in await conn.execute(
                text(
                    "SELECT split_part(reason, ':', 1) AS r, count(*) FROM dead_letters"
                    " GROUP BY r ORDER BY count(*) DESC LIMIT 10"
                )
            )
        ]
        drift = await read_drift(conn)
    return StatusReport(
        counts=counts,
        polling=polling,
        oldest_due_age_s=oldest,
        throughput=dict(zip(THROUGHPUT_WINDOWS_MIN, done, strict=True)),
        dead_reasons=dead,
        drift=drift,
    )
