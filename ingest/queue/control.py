"""Pause and resume: while `ingest_control` says paused, no worker claims a run.

The claim statement itself asks `ingest_paused()` (ingest.queue.work), so no claim commits
after a pause has; workers also read it on their own to say so, and to hand back the claims
they hold but have not started. Enqueueing is not paused: runs wait in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.db.driver import driver_connection
from ingest.queue.notify import notify


@dataclass(frozen=True, slots=True)
class Pause:
    since: datetime
    by: str | None
    reason: str | None

    def __str__(self) -> str:
        """`since 2026-12-04T10:00:00+00:00 by ops@host (reason)`, as status and pause say."""
        by = f" by {self.by}" if self.by else ""
        why = f" ({self.reason})" if self.reason else ""
        return f"since {self.since.isoformat()}{by}{why}"


async def paused(conn: AsyncConnection) -> Pause | None:
    """The pause in force, if any (through the owner's function: any worker role may read it)."""
    db = await driver_connection(conn)
    row = await db.fetchrow("SELECT paused_at, paused_by, reason FROM ingest_paused()")
    if row is None:
        return None
    return Pause(*cast(tuple[datetime, str | None, str | None], tuple(row)))


async def pause(conn: AsyncConnection, by: str, reason: str | None) -> tuple[Pause, bool]:
    """Pause claiming; returns the pause in force and whether this call started it (False:
    it was paused already, and is left as it was)."""
    db = await driver_connection(conn)
    started = await db.fetchval(
        """
        INSERT INTO ingest_control AS c (id, paused_at, paused_by, reason, updated_at)
        VALUES (1, now(), $1, $2, now())
        ON CONFLICT (id) DO UPDATE
            SET paused_at = now(), paused_by = $1, reason = $2, updated_at = now()
            WHERE c.paused_at IS NULL
        RETURNING true
        """,
        by,
        reason,
    )
    # Idle workers look at once, rather than at their next poll.
    await notify(db)
    now = await paused(conn)
    assert now is not None  # set by this statement or before it, in this transaction's view
    return now, bool(started)


async def resume(conn: AsyncConnection) -> Pause | None:
    """Let workers claim again; returns the pause that ended (None: nothing was paused)."""
    db = await driver_connection(conn)
    row = await db.fetchrow(
        """
        UPDATE ingest_control c SET paused_at = NULL, updated_at = now()
        FROM (SELECT paused_at, paused_by, reason FROM ingest_control WHERE id = 1 FOR UPDATE) old
        WHERE c.id = 1 AND old.paused_at IS NOT NULL
        RETURNING old.paused_at, old.paused_by, old.reason
        """
    )
    if row is None:
        return None
    await notify(db)
    return Pause(*cast(tuple[datetime, str | None, str | None], tuple(row)))
