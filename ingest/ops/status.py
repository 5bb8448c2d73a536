"""What `status` shows: queue counts, oldest due age, throughput, dead letters, drift."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.failures import phrase_of
from ingest.ops.snapshot import read_dead_by_kind, read_drift, read_queue

THROUGHPUT_WINDOWS_MIN = (1, 5, 60)


@dataclass
class StatusReport:
    counts: dict[str, int]
    polling: int  # pending only to poll runs still scheduled/running upstream
    oldest_due_age_s: float | None
    throughput: dict[int, int]  # minutes -> runs finished done in that window
    # Dead runs by failure kind, each named by its phrase ("HTTP 404", "payload rejected").
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
        dead = [(phrase_of(kind), n) for kind, n in await read_dead_by_kind(conn)]
        drift = await read_drift(conn)
    return StatusReport(
        counts=counts,
        polling=polling,
        oldest_due_age_s=oldest,
        throughput=dict(zip(THROUGHPUT_WINDOWS_MIN, done, strict=True)),
        dead_reasons=dead,
        drift=drift,
    )
