"""The raw archive's encoding: a run's body as stored in run_payloads, and back, byte for byte.

Bodies are zstd-compressed by the worker (level 3), not by PostgreSQL. Measured on 20,000
simulator runs (docs/benchmarks.md): 35.6 KB of JSON per run becomes 7.9 KB with zstd at
~90 us of worker CPU, 14.2 KB with PostgreSQL's lz4, and was stored as is before, because pglz
cost two thirds of a payload write. zstd in the worker also spares the server the compression
and the WAL of the full body. Level 3: higher levels gain 2-5 % for 3-5 times the CPU.

`encoding` says how a row's body is stored: `zstd`, or `identity` for bodies written before
compression (hr-ingest reprocess rewrites those compressed). The sha256 beside it is always
that of the raw body. normalize leaves bodies `identity`; the store packs a batch's in a
thread (`pack_payloads`): zstd releases the GIL while it compresses, so the ~0.1 ms a run
comes off the worker's event loop, the one core a single worker is bound by. Reading back and
pruning stored payloads is ingest.store's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import zstandard

if TYPE_CHECKING:
    from ingest.normalize.rows import PayloadRow

ZSTD = "zstd"
IDENTITY = "identity"
ENCODINGS = (ZSTD, IDENTITY)

LEVEL = 3
# Not thread-safe: used from the event loop's thread only (pack_payloads makes its own). No
# checksum: the row's sha256 of the raw body is checked instead (reprocess, `hr-ingest payload`).
_COMPRESSOR = zstandard.ZstdCompressor(level=LEVEL, write_checksum=False)
_DECOMPRESSOR = zstandard.ZstdDecompressor()


class ArchiveError(Exception):
    """A stored body that cannot be read back: an unknown encoding or a damaged frame."""


def pack(raw: bytes) -> bytes:
    """The body as stored, with encoding ZSTD."""
    return _COMPRESSOR.compress(raw)


def _pack_all(bodies: Sequence[bytes]) -> list[bytes]:
    compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=False)  # a few us
    return [compressor.compress(body) for body in bodies]


async def pack_payloads(payloads: Sequence[PayloadRow]) -> None:
    """Compress the `identity` bodies among `payloads` in place, in a thread."""
    raw = [p for p in payloads if p.encoding == IDENTITY]
    if not raw:
        return
    packed = await asyncio.to_thread(_pack_all, [p.body for p in raw])
    for payload, body in zip(raw, packed, strict=True):
        payload.body, payload.encoding = body, ZSTD


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
