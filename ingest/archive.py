"""The raw archive's encoding: a run's body as stored in run_payloads, and back, byte for byte.

Bodies are zstd-compressed by the worker (level 3), not by PostgreSQL. Measured on 20,000
simulator runs (docs/benchmarks.md): 35.6 KB of JSON per run becomes 7.9 KB with zstd at
~90 us of worker CPU, 14.2 KB with PostgreSQL's lz4, and was stored as is before, because pglz
cost two thirds of a payload write. zstd in the worker also spares the server the compression
and the WAL of the full body. Level 3: higher levels gain 2-5 % for 3-5 times the CPU.

`encoding` says how a row's body is stored: `zstd`, or `identity` for bodies written before
compression (hr-ingest reprocess rewrites those compressed). The sha256 beside it is always
that of the raw body. Pure, as normalize (which packs) is: reading back and pruning stored
payloads is ingest.store's.
"""

from __future__ import annotations

import zstandard

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
