"""Who else reads the tables: a read-only role for BI tools, as docs/dashboards.md grants it."""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.db.driver import driver_connection

BI_ROLE = "hr_ingest_bi"


def bi_password(data_dir: Path) -> str:
    """The BI role's password, made once and kept beside the embedded server's data (0600)."""
    path = data_dir / "bi-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(18))
    return path.read_text().strip()


async def ensure_bi_role(engine: AsyncEngine, schema: str, password: str) -> None:
    """The read-only role: it reads every table and view of `schema`, later ones too (default
    privileges), and can change nothing."""
    async with engine.begin() as conn:
        db = await driver_connection(conn)
        exists = await db.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", BI_ROLE)
        verb = "ALTER" if exists else "CREATE"
        # A utility statement takes no parameters: the password is quoted as a literal.
        literal = "'" + password.replace("'", "''") + "'"
        await db.execute(f"{verb} ROLE {BI_ROLE} LOGIN PASSWORD {literal}")
        database = await db.fetchval("SELECT current_database()")
        for grant in (
            f'GRANT CONNECT ON DATABASE "{database}" TO {BI_ROLE}',
            f'GRANT USAGE ON SCHEMA "{schema}" TO {BI_ROLE}',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {BI_ROLE}',
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT SELECT ON TABLES TO {BI_ROLE}',
        ):
            await db.execute(grant)
