"""Settings from flags, the environment and an optional `.env`, validated before any work starts.

Precedence: command-line flag > environment variable > `.env` file > default.
Secrets (the API key, the database password) are wrapped so that no repr, log line or
error message can show them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs
from dotenv import dotenv_values
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_BASE_URL = "https://platform.happyrobot.ai/api/v1"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and is safe to print."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Secret:
    """A string that never shows itself in repr/str; call `reveal()` where it is really needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Settings:
    database_url: Secret | None = None
    data_dir: Path = field(default_factory=lambda: platformdirs.user_data_path("hr-ingest"))
    db_schema: str = "happyrobot"
    api_key: Secret | None = None
    org_id: str | None = None
    base_url: str = DEFAULT_BASE_URL
    rate_limit: float = 10.0
    concurrency: int = 16
    max_attempts: int = 8
    log_format: str | None = None  # None: console on a TTY, json otherwise

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def database_url_redacted(self) -> str:
        if self.database_url is None:
            return f"embedded PostgreSQL in {self.data_dir}"
        return redact_url(self.database_url.reveal())

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "database_url" and value is not None:
                value = self.database_url_redacted
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"


# variable name -> Settings field
ENV_VARS: dict[str, str] = {
    "DATABASE_URL": "database_url",
    "INGEST_DATA_DIR": "data_dir",
    "INGEST_DB_SCHEMA": "db_schema",
    "HAPPYROBOT_API_KEY": "api_key",
    "HAPPYROBOT_ORG_ID": "org_id",
    "HAPPYROBOT_BASE_URL": "base_url",
    "INGEST_RATE_LIMIT": "rate_limit",
    "INGEST_CONCURRENCY": "concurrency",
    "INGEST_MAX_ATTEMPTS": "max_attempts",
    "INGEST_LOG_FORMAT": "log_format",
}
FIELD_TO_VAR = {v: k for k, v in ENV_VARS.items()}


def redact_url(url: str) -> str:
    """The URL with its password replaced, or a placeholder when it cannot even be parsed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable URL>"


def asyncpg_url(url: str) -> URL:
    """Normalise a user's PostgreSQL URL to the asyncpg driver, or raise ConfigError."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            "DATABASE_URL", "not a URL (expected postgresql://user:pass@host/db)"
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError("DATABASE_URL", f"scheme {parsed.drivername!r} is not PostgreSQL")
    if parsed.drivername.partition("+")[2] not in ("", "asyncpg", "psycopg", "psycopg2"):
        raise ConfigError("DATABASE_URL", f"driver {parsed.drivername!r} is not supported")
    if not parsed.database:
        raise ConfigError("DATABASE_URL", "names no database (…/dbname at the end)")
    if not parsed.host and "host" not in parsed.query:
        raise ConfigError("DATABASE_URL", "names no host")
    return parsed.set(drivername="postgresql+asyncpg")


def _positive(variable: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(variable, f"{raw!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(variable, f"must be greater than 0, got {raw}")
    return value


def _parse(name: str, raw: str) -> Any:
    var = FIELD_TO_VAR[name]
    raw = raw.strip()
    match name:
        case "database_url":
            if not raw:
                return None
            asyncpg_url(raw)
            return Secret(raw)
        case "api_key":
            return Secret(raw) if raw else None
        case "data_dir":
            return Path(raw).expanduser()
        case "db_schema":
            if not _SCHEMA_NAME.match(raw):
                raise ConfigError(var, f"{raw!r} is not a plain lower-case PostgreSQL identifier")
            return raw
        case "org_id":
            if not raw:
                return None
            try:
                return str(uuid.UUID(raw))
            except ValueError:
                raise ConfigError(var, f"{raw!r} is not a UUID") from None
        case "base_url":
            if not re.match(r"^https?://[^/\s]+", raw):
                raise ConfigError(var, f"{raw!r} is not an http(s) URL")
            return raw.rstrip("/")
        case "rate_limit":
            return _positive(var, raw, float)
        case "concurrency" | "max_attempts":
            return _positive(var, raw, int)
        case "log_format":
            if raw not in ("json", "console"):
                raise ConfigError(var, f"must be 'json' or 'console', got {raw!r}")
            return raw
    raise AssertionError(name)


def load_settings(
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
) -> Settings:
    """Build Settings; `flags` maps Settings field names to raw strings (None = not given)."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        for key, value in dotenv_values(env_file).items():
            if key in ENV_VARS and value is not None:
                raw[ENV_VARS[key]] = value
    for var, name in ENV_VARS.items():
        if var in environ:
            raw[name] = environ[var]
    for name, value in (flags or {}).items():
        if value is not None:
            raw[name] = value
    return Settings(**{name: _parse(name, value) for name, value in raw.items()})
