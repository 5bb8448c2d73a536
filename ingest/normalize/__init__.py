"""One `GET /runs/{id}` body (bytes) -> typed rows, one row type per table.

Pure: no I/O, no database, no logging, so it can run anywhere (worker, reprocess, benchmarks)
and be tested exhaustively. What happens to every kind of odd payload is written down in
docs/payload-policy.md; in short, a payload is either stored (possibly with drift notes) or
refused with `PayloadRejected`, whose message is the dead letter's reason.

Speed matters (a backfill normalizes millions of runs): the body is parsed once with orjson,
each table has one hand-written builder (no per-field reflection), UUIDs of repeated values are
cached, and the rare repairs (NUL characters, type coercions) cost nothing when absent.

Modules, in the order a body goes through them: `shape` (today's enumerations and fields),
`fields` (one conversion per column type), `run` (the run, its events, intermediates, issues
and version), `calls` (session events: calls, transcripts, tool calls), `rows` (what comes out).
"""

from ingest.normalize import rows
from ingest.normalize.rows import *  # noqa: F403 (every row type: rows.__all__)
from ingest.normalize.run import normalize, version_row
from ingest.normalize.shape import TERMINAL_STATUSES

__all__ = ["TERMINAL_STATUSES", "normalize", "version_row"]
__all__ += rows.__all__
