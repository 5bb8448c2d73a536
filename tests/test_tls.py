"""TLS to PostgreSQL as libpq spells it in DATABASE_URL (`sslmode`, `sslrootcert`, `sslcert`,
`sslkey`), against a server of this module's own: a throwaway cluster with a certificate from a
CA made here, that refuses every connection without TLS."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.config import Secret, Settings
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from tests.helpers import cli_env, free_port, run_cli_async, sim_env, start_cli, wait_for

PASSWORD = "tls-test-password-7c1e"  # the server trusts anyone on TLS: it must never show anyway
CLIENT_USER = "cert_user"  # a role the server lets in by its client certificate alone


def _pg_bin(name: str) -> str:
    """A PostgreSQL server program: from pg_config's bindir (Debian keeps initdb off PATH)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout
        if (Path(bindir.strip()) / name).exists():
            return str(Path(bindir.strip()) / name)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: this test needs PostgreSQL's server programs installed")
    return found


def _as_postgres(*command: str) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def _run(*command: str, cwd: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)}: {done.stderr.strip()}")


def _openssl(*args: str, cwd: Path) -> None:
    _run("openssl", *args, cwd=cwd)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_cert(d: Path, ca: str, name: str, cn: str, extensions: str) -> None:
    """`name`.pem and `name`.key, signed by the CA `ca`."""
    (d / f"{name}.ext").write_text(
        f"basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n{extensions}\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=d,
    )  # fmt: skip
    (d / f"{name}.key").chmod(0o600)


@dataclass(frozen=True)
class TlsServer:
    port: int
    certs: Path  # ca.pem (signed the server's certificate), other-ca.pem (did not), client.*

    def url(self, query: str, user: str = "postgres") -> str:
        return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{self.port}/hr_ingest?{query}"

    def verified_url(self) -> str:
        return self.url(f"sslmode=verify-full&sslrootcert={self.certs / 'ca.pem'}")


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    root = Path(tempfile.mkdtemp(prefix="hr-ingest-tls-"))
    certs, data = root / "certs", root / "data"
    certs.mkdir()
    _make_ca(certs, "ca")
    _make_ca(certs, "other-ca")
    _make_cert(certs, "ca", "server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _make_cert(certs, "ca", "client", CLIENT_USER, "extendedKeyUsage=clientAuth")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        for path in [certs, *certs.iterdir()]:
            shutil.chown(path, "postgres")
    initdb = [_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    _run(*_as_postgres(*initdb))
    # TLS or nothing: the client-certificate role by its certificate, anyone else trusted.
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        f"hostssl all {CLIENT_USER} 127.0.0.1/32 cert\n"
        "hostssl all all 127.0.0.1/32 trust\n"
        "hostnossl all all 127.0.0.1/32 reject\n"
    )
    port = free_port()
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root}"
        f" -c ssl=on -c ssl_cert_file={certs / 'server.pem'} -c ssl_key_file={certs / 'server.key'}"
        f" -c ssl_ca_file={certs / 'ca.pem'} -c fsync=off"
    )
    pg_ctl = _pg_bin("pg_ctl")
    start = [pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"]
    _run(*_as_postgres(*start))
    try:
        psql = [_pg_bin("psql"), "-h", str(root), "-p", str(port), "-U", "postgres", "-q"]
        role, database = f"CREATE ROLE {CLIENT_USER} LOGIN", "CREATE DATABASE hr_ingest"
        _run(*_as_postgres(*psql, "-c", role, "-c", f"{database} OWNER {CLIENT_USER}"))
        yield TlsServer(port, certs)
    finally:
        stop = [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_postgres(*stop), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _env(url: str, schema: str) -> dict[str, str]:
    return cli_env(Settings(database_url=Secret(url), db_schema=schema))


def _one_clean_line(code: int, out: str, err: str) -> str:
    """The single line a failed command printed, checked for what must never be in it."""
    assert code == 1, out + err
    assert "Traceback" not in err and PASSWORD not in out + err
    # Log lines (JSON) may come before it, such as the worker's "worker started".
    lines = [line for line in err.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.sim(runs=30, seed=41)
async def test_verify_full_upgrade_sync_and_worker_every_connection_encrypted(
    tls_server: TlsServer, sim: Simulator, schema: str
) -> None:
    url = tls_server.verified_url()
    env = sim_env(_env(url, schema), sim)
    code, _, err = await run_cli_async(env, "db", "upgrade")
    assert code == 0, err
    # The worker first, idle: sync's NOTIFY wakes it, over its LISTEN connection (TLS too).
    worker = await start_cli(env, "worker")
    engine = create_engine(Settings(database_url=Secret(url), db_schema=schema), pool_size=1)
    try:
        await wait_for(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hr-ingest'"
            " AND query ILIKE 'LISTEN%'",
            lambda n: n >= 1,
            within_s=20,
        )
        code, _, err = await run_cli_async(env, "sync", "--since", "8d")
        assert code == 0, err
        fetched = "SELECT count(*) FROM runs WHERE fetched_at IS NOT NULL"
        await wait_for(engine, fetched, lambda n: n == 30, within_s=30)
        # Every connection of the worker (and the test's own, made by the same code) is TLS.
        ssl = await engine.connect()
        try:
            rows = (
                await ssl.exec_driver_sql(
                    "SELECT a.application_name, s.ssl, s.version FROM pg_stat_ssl s"
                    " JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'hr_ingest'"
                )
            ).all()
        finally:
            await ssl.close()
        assert [r for r in rows if r.application_name == "hr-ingest"], rows
        assert all(r.ssl and r.version.startswith("TLS") for r in rows), rows
    finally:
        await engine.dispose()
        worker.send_signal(signal.SIGTERM)
        _, worker_err = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, worker_err.decode()
    assert PASSWORD not in worker_err.decode()


async def test_sslmode_require_encrypts_without_a_ca(tls_server: TlsServer, schema: str) -> None:
    code, out, err = await run_cli_async(
        _env(tls_server.url("sslmode=require"), schema), "db", "upgrade"
    )
    assert code == 0, err
    assert f"schema {schema} at revision" in out
    assert PASSWORD not in out + err


async def test_a_client_certificate_logs_in_its_user(tls_server: TlsServer, schema: str) -> None:
    certs = tls_server.certs
    query = f"sslmode=verify-full&sslrootcert={certs / 'ca.pem'}"
    with_cert = f"{query}&sslcert={certs / 'client.pem'}&sslkey={certs / 'client.key'}"
    url = tls_server.url(with_cert, user=CLIENT_USER)
    code, _, err = await run_cli_async(_env(url, schema), "db", "upgrade")
    assert code == 0, err
    # The server asks that role for its certificate: without one, it is not let in.
    refused = tls_server.url(query, user=CLIENT_USER)
    line = _one_clean_line(*await run_cli_async(_env(refused, schema), "status"))
    assert "connection requires a valid client certificate" in line, line


@pytest.mark.parametrize("command", [("db", "upgrade"), ("worker", "--drain")])
async def test_a_server_certificate_from_another_ca_fails_in_one_line(
    tls_server: TlsServer, schema: str, command: tuple[str, ...]
) -> None:
    other = tls_server.certs / "other-ca.pem"
    env = _env(tls_server.url(f"sslmode=verify-full&sslrootcert={other}"), schema)
    # The worker needs an API to talk to before it connects; the database is refused first.
    env.update(HAPPYROBOT_API_KEY="unused", HAPPYROBOT_BASE_URL="http://127.0.0.1:9/api/v1")
    line = _one_clean_line(*await run_cli_async(env, *command))
    assert line.startswith(f"hr-ingest: {command[0]} failed:"), line
    assert "certificate verify failed" in line, line


async def test_sslmode_disable_is_refused_by_a_server_that_requires_tls(
    tls_server: TlsServer, schema: str
) -> None:
    env = _env(tls_server.url("sslmode=disable"), schema)
    line = _one_clean_line(*await run_cli_async(env, "db", "upgrade"))
    assert "no encryption" in line, line
