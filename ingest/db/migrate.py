"""Running Alembic from code (the CLI and the tests), on the async engine's connection."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.db import run_data
from ingest.db.tables import metadata

# Inside the package, so that a wheel install upgrades with no setting of its own.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's own version table is not part of the models."""
    return not (type_ == "table" and name == "alembic_version")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


async def _with_connection(engine: AsyncEngine, action: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _with_connection(engine, "upgrade", revision)
    if revision == "head":
        # Not a migration: its columns follow the use cases' run_columns (ingest.db.run_data).
        async with engine.begin() as conn:
            await run_data.refresh(conn)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    async with engine.begin() as conn:  # it depends on runs, which migrations may change
        await conn.execute(text(f"DROP VIEW IF EXISTS {run_data.VIEW}"))
    await _with_connection(engine, "downgrade", revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    def run(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(run)


async def drift(engine: AsyncEngine) -> list[object]:
    """What autogenerate would change: empty when the database matches the tables."""

    def run(connection: Connection) -> list[object]:
        ctx = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": include_object,
            },
        )
        return list(compare_metadata(ctx, metadata))

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        return await conn.run_sync(run)
