"""Discovery: find runs through `GET /runs` and feed the queue (`discover` and `sync`).

- `listing`: parsing a listing item and paging over time (no SQL)
- `state`: every statement about what discovery has seen (runs listed, finished windows,
  watermarks, the sync lock, runs enqueued again)
- `catalog`: use cases and usage, refreshed by both commands
- `commands`: `discover`, `sync`, `sync_every`
"""

from ingest.discovery.catalog import CatalogResult
from ingest.discovery.commands import (
    SETTLE,
    ProgressCallback,
    SyncOptions,
    SyncResult,
    Tally,
    discover,
    sync,
    sync_every,
)
from ingest.discovery.listing import (
    RESOLUTION,
    DiscoveryError,
    Filters,
    ListedRun,
    Paging,
    parse_item,
)
from ingest.discovery.state import NON_TERMINAL, store_listed, sync_lock

__all__ = [
    "NON_TERMINAL",
    "RESOLUTION",
    "SETTLE",
    "CatalogResult",
    "DiscoveryError",
    "Filters",
    "ListedRun",
    "Paging",
    "ProgressCallback",
    "SyncOptions",
    "SyncResult",
    "Tally",
    "discover",
    "parse_item",
    "store_listed",
    "sync",
    "sync_every",
    "sync_lock",
]
