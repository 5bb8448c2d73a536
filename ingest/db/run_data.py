"""`bi_run_data`: one typed column per run-table variable the use cases declare.

`runs.data` is a JSON object whose keys are the names in `use_cases.run_columns` (load id,
rate, booked, ...); BI tools filter and sum typed columns far more easily than JSON paths. The
view is made again whenever those names (or what their values look like) change: by
`db upgrade`, and by the catalog refresh when its role may create views (a least-privilege
worker role cannot: it logs how to catch up). A column's type is read from the latest runs'
values: all numbers -> numeric, all booleans -> boolean, anything else -> text; a value that
does not fit its column reads as NULL, never as an error.
"""

from __future__ import annotations

from typing import cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.db.driver import Db, driver_connection

VIEW = "bi_run_data"
SAMPLE = 2000  # latest runs whose values decide a column's type
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes

# column: (its type as information_schema names it, expression, comment)
_FIXED = {
    "run_id": ("uuid", "r.id", "The run (runs.id)."),
    "use_case_id": ("uuid", "r.use_case_id", "Use case id."),
    "use_case_name": ("text", "uc.name", "Name of the use case."),
    "status": ("text", "r.status", "Run status."),
    "timestamp": ("timestamp with time zone", 'r."timestamp"', "When the run started (UTC)."),
}

_NAMES = """
SELECT DISTINCT c->>'name' FROM use_cases, jsonb_array_elements(
    CASE WHEN jsonb_typeof(run_columns) = 'array' THEN run_columns ELSE '[]'::jsonb END) c
WHERE jsonb_typeof(c->'name') = 'string' AND c->>'name' <> ''
"""
_TYPES = f"""
SELECT k.name, array_agg(DISTINCT jsonb_typeof(s.data->k.name))
    FILTER (WHERE s.data ? k.name AND jsonb_typeof(s.data->k.name) <> 'null')
FROM unnest($1::text[]) AS k(name)
CROSS JOIN (SELECT data FROM runs WHERE jsonb_typeof(data) = 'object'
            ORDER BY "timestamp" DESC NULLS LAST LIMIT {SAMPLE}) AS s
GROUP BY k.name
"""
_CURRENT = """
SELECT column_name, data_type FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position
"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _column_type(seen: list[str] | None) -> str:
    kinds = set(seen or [])
    if kinds == {"number"}:
        return "numeric"
    if kinds == {"boolean"}:
        return "boolean"
    return "text"


def _expression(key: str, sql_type: str) -> str:
    value = f"r.data->{_literal(key)}"
    if sql_type == "text":
        return f"r.data->>{_literal(key)}"
    kind = "number" if sql_type == "numeric" else "boolean"
    return f"CASE WHEN jsonb_typeof({value}) = '{kind}' THEN ({value})::text::{sql_type} END"


async def _desired(db: Db) -> list[tuple[str, str, str, str]]:
    """(column, SQL type, expression, comment) for every column the view should have."""
    names = sorted(cast(str, r[0]) for r in await db.fetch(_NAMES))
    types = {cast(str, r[0]): cast(list[str] | None, r[1]) for r in await db.fetch(_TYPES, names)}
    columns = [(c, t, e, text) for c, (t, e, text) in _FIXED.items()]
    taken = set(_FIXED)
    for name in names:
        column = name.encode()[:_MAX_IDENTIFIER].decode(errors="ignore")
        if column in taken:  # a name the fixed columns (or a longer name's cut) already use
            continue
        taken.add(column)
        sql_type = _column_type(types.get(name))
        comment = f"The run-table variable {name!r} of runs.data ({sql_type})."
        columns.append((column, sql_type, _expression(name, sql_type), comment))
    return columns


async def refresh(conn: AsyncConnection) -> bool:
    """Make bi_run_data again if its columns or their types changed, in the caller's
    transaction; True when it did."""
    db = await driver_connection(conn)
    desired = await _desired(db)
    current = [(cast(str, r[0]), cast(str, r[1])) for r in await db.fetch(_CURRENT, VIEW)]
    if current == [(column, sql_type) for column, sql_type, _, _ in desired]:
        return False
    select = ",\n    ".join(f"{e} AS {_ident(c)}" for c, _, e, _ in desired)
    await db.execute(f"DROP VIEW IF EXISTS {VIEW}")
    await db.execute(
        f"CREATE VIEW {VIEW} AS SELECT\n    {select}\n"
        "FROM runs AS r LEFT JOIN use_cases AS uc ON uc.id = r.use_case_id"
    )
    await db.execute(
        f"COMMENT ON VIEW {VIEW} IS 'One row per run: its run-table variables (runs.data) as"
        " typed columns, one per name in use_cases.run_columns.'"
    )
    for column, _, _, comment in desired:
        await db.execute(f"COMMENT ON COLUMN {VIEW}.{_ident(column)} IS {_literal(comment)}")
    return True


async def refresh_if_allowed(engine: AsyncEngine) -> bool | None:
    """`refresh` in a transaction of its own; None when this role may not create views."""
    try:
        async with engine.begin() as conn:
            return await refresh(conn)
    except asyncpg.exceptions.InsufficientPrivilegeError:
        return None
