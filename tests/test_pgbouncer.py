"""PgBouncer in session pooling mode in front of the test server: everything that relies on a
session (search_path, asyncpg's prepared statements, LISTEN, the sync's advisory lock) works
through it, as the README says. Transaction pooling is not supported (README, "PgBouncer").

Debian's `pgbouncer` is required, not optional: `.ci/run` installs it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ingest import discovery
from ingest.config import Secret, Settings
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from tests.helpers import cli_env, enqueue, free_port, run_cli_async, sim_env, start_cli, wait_for

FETCHED = "SELECT count(*) FROM runs WHERE fetched_at IS NOT NULL"


def _pgbouncer_bin() -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH often leaves out.
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if not found:
        pytest.fail("pgbouncer is not installed: apt-get install pgbouncer (.ci/run does)")
    return found


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"pgbouncer exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"pgbouncer not listening after 10 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def session_pooler(database_url: str) -> Iterator[str]:
    """A DATABASE_URL for the session's test database through PgBouncer in session mode."""
    upstream = make_url(database_url)
    # An embedded test server is reached through its Unix socket (host and port in the query).
    host = upstream.host or str(upstream.query["host"])
    port = upstream.port or int(str(upstream.query.get("port", 5432)))
    user = upstream.username or "postgres"
    work = Path(tempfile.mkdtemp(prefix="hr-ingest-pgbouncer-"))
    # Clients are trusted; PgBouncer logs in to the server with the password listed here.
    (work / "users.txt").write_text(f'"{user}" "{upstream.password or ""}"\n')
    listen = free_port()
    (work / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={host} port={port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {work / 'users.txt'}\n"
        "pool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 40\n"
    )
    log = work / "pgbouncer.log"
    # PgBouncer will not run as root; -u drops to that user once the files are read.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_pgbouncer_bin(), *as_user, str(work / "pgbouncer.ini")], stdout=out, stderr=out
        )
    try:
        _wait_listening(listen, proc, log)
        through = upstream.set(drivername="postgresql", host="127.0.0.1", port=listen, query={})
        yield through.render_as_string(hide_password=False)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.sim(runs=30, seed=43)
async def test_upgrade_sync_and_a_worker_woken_by_notify_through_session_pooling(
    session_pooler: str, sim: Simulator, schema: str
) -> None:
    settings = Settings(database_url=Secret(session_pooler), db_schema=schema)
    env = sim_env(cli_env(settings), sim)
    # A schema of its own, made through PgBouncer: search_path reaches the server.
    for command in (("db", "upgrade"), ("sync", "--since", "8d")):
        code, _, err = await run_cli_async(env, *command)
        assert code == 0, err
    engine = create_engine(settings, pool_size=1)
    worker = await start_cli(env, "worker")
    try:
        await wait_for(engine, FETCHED, lambda n: n == 30, within_s=30)
        # Idle now, in its 5 s slow poll: only a NOTIFY, over its LISTEN, wakes it sooner.
        await asyncio.sleep(1.0)
        started = asyncio.get_running_loop().time()
        await enqueue(engine, sim.add_runs(1))
        await wait_for(engine, FETCHED, lambda n: n == 31, within_s=10)
        waited = asyncio.get_running_loop().time() - started
        assert waited < 2.5, f"{waited:.1f} s: found by the slow poll, not woken by NOTIFY"
        assert worker.returncode is None
    finally:
        await engine.dispose()
        worker.send_signal(signal.SIGTERM)
        _, worker_err = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, worker_err.decode()


async def test_the_sync_lock_holds_through_session_pooling(
    session_pooler: str, settings: Settings, sim: Simulator
) -> None:
    """The lock is a session-level advisory lock: it holds for as long as the connection that
    took it, through PgBouncer too."""
    pooled = settings.with_overrides(database_url=Secret(session_pooler))
    engine = create_engine(pooled, pool_size=1)
    try:
        async with discovery.sync_lock(engine) as held:
            assert held
            code, out, err = await run_cli_async(sim_env(cli_env(pooled), sim), "sync")
            assert code == 0, err
            assert "another sync is running" in out
    finally:
        await engine.dispose()
    code, out, err = await run_cli_async(sim_env(cli_env(pooled), sim), "sync", "--since", "8d")
    assert code == 0, err
    assert "another sync is running" not in out and "runs listed" in out
