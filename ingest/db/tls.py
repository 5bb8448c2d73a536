"""TLS to PostgreSQL, set as libpq spells it in DATABASE_URL (`?sslmode=verify-full&sslrootcert=…`).

SQLAlchemy's asyncpg dialect hands each query key of the URL to `asyncpg.connect()` as a keyword
argument, and asyncpg takes libpq's ssl* keys only inside a DSN (as keywords they are a
TypeError). So they leave the URL and reach asyncpg as a DSN of their own, which asyncpg merges
with the host, port, user and database that SQLAlchemy passes: asyncpg then applies libpq's
rules itself (`require` checks the chain only when a CA is given, `verify-ca` the chain,
`verify-full` the host name too; `prefer`, libpq's default, falls back to plain text).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlencode

from sqlalchemy.engine import URL

MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")  # paths, read at each connect
KEYS = ("sslmode", *FILES, "sslpassword")


def problem(query: Mapping[str, str | tuple[str, ...]]) -> str | None:
    """What is wrong with the URL's TLS keys, said for the user, or None.

    Checked before any work starts: a typo in a mode or a path otherwise surfaces only at the
    first connection, as the driver's error."""
    for key in KEYS:
        value = query.get(key)
        if isinstance(value, tuple):
            return f"{key} is given {len(value)} times"
    mode = query.get("sslmode")
    if mode is not None and mode not in MODES:
        return f"sslmode {mode!r} is not one of {', '.join(MODES)}"
    for key in FILES:
        path = query.get(key)
        if isinstance(path, str) and not os.access(path, os.R_OK):
            return f"{key} file {path!r} does not exist or cannot be read"
    return None


def split(url: URL) -> tuple[URL, dict[str, object]]:
    """`url` without its TLS keys, and the connect arguments that carry them to asyncpg."""
    found = {key: str(url.query[key]) for key in KEYS if key in url.query}
    if not found:
        return url, {}
    # Only the TLS keys: every other parameter is a keyword SQLAlchemy passes, and wins.
    return url.difference_update_query(found), {"dsn": "postgresql://?" + urlencode(found)}
