"""The raw archive's encoding: a run's body as stored in run_payloads, and back, byte for byte.

Bodies are zstd-compressed by the worker (level 3), not by PostgreSQL. Measured on 20,000
simulator runs (docs/benchmarks.md): 35.6 KB of JSON per run becomes 7.9 KB with zstd at
~90 us of worker CPU, 14.2 KB with PostgreSQL's lz4, and was stored as is before, because pglz
cost two thirds of a payload write. zstd in the worker also spares the server the compression
and the WAL of the full body. Level 3: higher levels gain 2-5 % for 3-5 times the CPU.

`encoding` says how a row's body is stored: `zstd`, or `identity` for bodies written before
compression (hr-ingest reprocess rewrites those compressed). The sha256 beside it is always
that of the raw body.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import zstandard
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.db.driver import connection, driver_connection, transaction

ZSTD = "zstd"
IDENTITY = "identity"
ENCODINGS = (ZSTD, IDENTITY)

# Not thread-safe: one per process, used from the event loop's thread only. No checksum: the
# row's sha256 of the raw body is checked instead (reprocess, `hr-ingest payload`).
_COMPRESSOR = zstandard.ZstdCompressor(level=3, write_checksum=False)
_DECOMPRESSOR = zstandard.ZstdDecompressor()


class ArchiveError(Exception):
    """A stored body that cannot be read back: an unknown encoding or a damaged frame."""


def pack(raw: bytes) -> bytes:
    """The body as stored, with encoding ZSTD."""
    return _COMPRESSOR.compress(raw)


def unpack(stored: bytes, encoding: str) -> bytes:
    """The raw body a stored one holds."""
    if encoding == IDENTITY:
        return stored
    if encoding != ZSTD:
        raise ArchiveError(f"unknown payload encoding {encoding!r}")
    try:
        return _DECOMPRESSOR.decompress(stored)
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"damaged zstd payload: {exc}") from None


# -- reading back, and retention ---------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """A run's stored payload, decoded."""

    body: bytes
    sha256: str
    fetched_at: datetime

    @property
    def intact(self) -> bool:
        return hashlib.sha256(self.body).hexdigest() == self.sha256


async def read(engine: AsyncEngine, run_id: uuid.UUID) -> Stored | None:
    """The raw body stored for a run, as received (None: none stored, or pruned)."""
    async with connection(engine) as conn:
        db = await driver_connection(conn)
        row = await db.fetchrow(
            "SELECT body, encoding, sha256, fetched_at FROM run_payloads WHERE run_id = $1", run_id
        )
    if row is None:
        return None
    body, encoding, sha256, fetched_at = cast(tuple[bytes, str, str, datetime], tuple(row))
    return Stored(unpack(body, encoding), sha256, fetched_at)


@dataclass
class Pruned:
    payloads: int = 0
    stored_bytes: int = 0  # as stored (compressed), what the deletes free for reuse


_PRUNE = """
WITH doomed AS (
    SELECT run_id FROM run_payloads WHERE run_id > $1 AND fetched_at < $2 ORDER BY run_id LIMIT $3
)
DELETE FROM run_payloads AS p USING doomed AS d WHERE p.run_id = d.run_id
RETURNING p.run_id, pg_column_size(p.body) AS size
"""
_COUNT = (
    "SELECT count(*), coalesce(sum(pg_column_size(body)), 0) FROM run_payloads"
    " WHERE fetched_at < $1"
)


async def prune(
    engine: AsyncEngine, before: datetime, *, dry_run: bool = False, chunk: int = 5000
) -> Pruned:
    """Delete the stored payloads fetched before `before`; no other table is touched. One
    short transaction per chunk, walking the primary key once (no index on fetched_at needed,
    and a running worker is never held up for long)."""
    if dry_run:
        async with connection(engine) as conn:
            row = await (await driver_connection(conn)).fetchrow(_COUNT, before)
        assert row is not None
        payloads, stored_bytes = cast(tuple[int, int], tuple(row))
        return Pruned(payloads=payloads, stored_bytes=stored_bytes)
    pruned, after = Pruned(), uuid.UUID(int=0)
    while True:
        async with transaction(engine) as conn:
            rows = await (await driver_connection(conn)).fetch(_PRUNE, after, before, chunk)
        if not rows:
            return pruned
        deleted = [cast(tuple[uuid.UUID, int], tuple(r)) for r in rows]
        pruned.payloads += len(deleted)
        pruned.stored_bytes += sum(size for _, size in deleted)
        after = max(run_id for run_id, _ in deleted)
