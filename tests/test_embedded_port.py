"""The embedded server on a local TCP port, for a BI tool on the same machine: `db url` gives a
read-only role that reads the views; TCP asks for a password, the socket stays as it was."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ingest.db import embedded
from tests.helpers import free_port, run_cli


@pytest.fixture
def embedded_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A process environment with no DATABASE_URL: the embedded server in a data dir of this
    test's own, removed (server stopped) at the end."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "HAPPYROBOT_"))}
    env.pop("DATABASE_URL", None)
    env.update(INGEST_DATA_DIR=str(data_dir), INGEST_LOG_FORMAT="json")
    yield env
    embedded.remove(data_dir)


@pytest.mark.slow
async def test_db_url_gives_a_read_only_role_over_tcp(embedded_env: dict[str, str]) -> None:
    port = free_port()
    env = {**embedded_env, "INGEST_EMBEDDED_PORT": str(port)}
    upgraded = await asyncio.to_thread(run_cli, "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    first = await asyncio.to_thread(run_cli, "db", "url", env=env)
    again = await asyncio.to_thread(run_cli, "db", "url", env=env)
    assert first.returncode == 0, first.stderr
    url = first.stdout.splitlines()[0]
    assert url == again.stdout.splitlines()[0]  # one password, kept
    assert url.startswith("postgresql://hr_ingest_bi:") and f"@127.0.0.1:{port}/" in url

    conn = await asyncpg.connect(url.split("?")[0], server_settings={"search_path": "happyrobot"})
    try:
        assert await conn.fetchval("SELECT count(*) FROM bi_runs") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO runs (id) VALUES (gen_random_uuid())")
    finally:
        await conn.close()
    # TCP asks for a password: the superuser cannot come in without one.
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    # The CLI itself still goes through the socket, trusted.
    status = await asyncio.to_thread(run_cli, "status", env=env)
    assert status.returncode == 0, status.stderr


def test_db_url_without_a_port_says_how_to_get_one(embedded_env: dict[str, str]) -> None:
    result = run_cli("db", "url", env=embedded_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hr-ingest: error: the embedded PostgreSQL listens on a Unix socket only: set"
        " INGEST_EMBEDDED_PORT (e.g. 5433), then run `hr-ingest db url` again"
    ]
