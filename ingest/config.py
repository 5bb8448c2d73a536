"""Settings from flags, the environment and an optional `.env`, validated before any work starts.

Precedence: command-line flag > environment variable > `.env` file > default.
Secrets (the API key, the database password) are wrapped so that no repr, log line or
error message can show them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import platformdirs
from dotenv import dotenv_values
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ingest.db import tls
from ingest.timeparse import parse_duration

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
    tls_problem = tls.problem(parsed.query)
    if tls_problem:
        raise ConfigError("DATABASE_URL", tls_problem)
    return parsed.set(drivername="postgresql+asyncpg")


# -- parsing one raw value (from a flag, the environment or .env) ------------------------------
# Each takes the variable's name (for the error) and the stripped raw string.


def _secret_url(var: str, raw: str) -> Secret | None:
    if not raw:
        return None
    try:
        asyncpg_url(raw)
    except ConfigError as exc:  # named as the user gave it: the variable, or the flag
        raise ConfigError(var, exc.problem) from None
    return Secret(raw)


def _secret(var: str, raw: str) -> Secret | None:
    return Secret(raw) if raw else None


def _path(var: str, raw: str) -> Path:
    return Path(raw).expanduser()


def _schema(var: str, raw: str) -> str:
    if not _SCHEMA_NAME.match(raw):
        raise ConfigError(var, f"{raw!r} is not a plain lower-case PostgreSQL identifier")
    return raw


def _uuid_or_none(var: str, raw: str) -> str | None:
    if not raw:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ConfigError(var, f"{raw!r} is not a UUID") from None


def _http_url(var: str, raw: str) -> str:
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ConfigError(var, f"{raw!r} is not an http(s) URL")
    return raw.rstrip("/")


def _positive(kind: type[int] | type[float]) -> Callable[[str, str], int | float]:
    def parse(var: str, raw: str) -> int | float:
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(var, f"{raw!r} is not a number") from None
        if not value > 0 or value != value or value == float("inf"):
            raise ConfigError(var, f"must be greater than 0, got {raw}")
        return value

    return parse


def _one_of(*choices: str) -> Callable[[str, str], str]:
    def parse(var: str, raw: str) -> str:
        if raw.lower() not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ConfigError(var, f"must be one of {listed}, got {raw!r}")
        return raw.lower()

    return parse


def _duration(var: str, raw: str) -> timedelta:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(var, str(exc)) from None


def _port(var: str, raw: str) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigError(var, f"{raw!r} is not a port number (0..65535)")
    return int(raw)


def _text(var: str, raw: str) -> str:
    return raw


# -- the settings: each declared once -------------------------------------------------------


def setting(
    default: Any,
    var: str,
    help: str,
    parse: Callable[[str, str], Any],
    *,
    flag: str | None = None,
    commands: tuple[str, ...] = (),
) -> Any:
    """A Settings field, with everything else about it: its environment variable, its
    command-line flag (default: from the field's name), its help, how a raw value is parsed
    and checked, and the commands that take the flag (none: every command).

    The help gets "(default X)" from `default`; a default of None or computed (a callable)
    is not shown, so such a help says itself what happens when the setting is unset."""
    meta = {"var": var, "help": help, "parse": parse, "flag": flag, "commands": commands}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    database_url: Secret | None = setting(
        None, "DATABASE_URL", "PostgreSQL URL; unset: embedded PostgreSQL", _secret_url
    )
    data_dir: Path = setting(
        lambda: platformdirs.user_data_path("hr-ingest"),
        "INGEST_DATA_DIR",
        "where the embedded PostgreSQL keeps its data",
        _path,
    )
    db_schema: str = setting(
        "happyrobot",
        "INGEST_DB_SCHEMA",
        "PostgreSQL schema holding every table",
        _schema,
        flag="--schema",
    )
    api_key: Secret | None = setting(
        None,
        "HAPPYROBOT_API_KEY",
        "HappyRobot API key (prefer the environment: flags show in `ps`)",
        _secret,
    )
    org_id: str | None = setting(
        None, "HAPPYROBOT_ORG_ID", "organization UUID, sent as x-organization-id", _uuid_or_none
    )
    base_url: str = setting(DEFAULT_BASE_URL, "HAPPYROBOT_BASE_URL", "API root", _http_url)
    rate_limit: float = setting(
        10.0,
        "INGEST_RATE_LIMIT",
        "max requests/s to the API across all workers",
        _positive(float),
    )
    concurrency: int = setting(
        16, "INGEST_CONCURRENCY", "max requests in flight per worker process", _positive(int)
    )
    max_attempts: int = setting(
        8, "INGEST_MAX_ATTEMPTS", "attempts before a run is dead-lettered", _positive(int)
    )
    log_format: str | None = setting(  # None: console on a TTY, json otherwise
        None,
        "INGEST_LOG_FORMAT",
        "json or console (default: console on a TTY)",
        _one_of("json", "console"),
    )
    log_level: str = setting(
        "info",
        "INGEST_LOG_LEVEL",
        "debug, info, warning or error",
        _one_of("debug", "info", "warning", "error"),
    )
    embedded_port: int | None = setting(
        None,
        "INGEST_EMBEDDED_PORT",
        "also serve the embedded PostgreSQL on 127.0.0.1 at this port, for a BI tool on this"
        " machine (`hr-ingest db url`); unset: a Unix socket only",
        _port,
    )
    # The worker's own: its flags belong to `worker` alone. The first two defaults are
    # WorkerOptions' too (a Worker built without settings); a test keeps them equal.
    lease_seconds: float = setting(
        120.0,
        "INGEST_LEASE_SECONDS",
        "how long a claim lasts unrenewed before another worker may take it",
        _positive(float),
        commands=("worker",),
    )
    batch_size: int = setting(
        200,
        "INGEST_BATCH_SIZE",
        "runs written per transaction",
        _positive(int),
        commands=("worker",),
    )
    sync_every: timedelta | None = setting(
        None,
        "INGEST_SYNC_EVERY",
        "also run `sync` on this schedule (e.g. 1m), instead of from cron",
        _duration,
        commands=("worker",),
    )
    metrics_port: int | None = setting(
        None,
        "INGEST_METRICS_PORT",
        "serve /metrics, /healthz, /readyz and a status page (/) on this port",
        _port,
        commands=("worker",),
    )
    metrics_host: str = setting(
        "0.0.0.0",
        "INGEST_METRICS_HOST",
        "address for the metrics port; 0.0.0.0 suits a container, 127.0.0.1 is this machine only",
        _text,
        commands=("worker",),
    )

    webhook_secret: Secret | None = setting(
        None,
        "INGEST_WEBHOOK_SECRET",
        "the secret a webhook call presents (Bearer, X-Api-Key or Basic password); unset:"
        " `webhook` refuses to start (prefer the environment: flags show in `ps`)",
        _secret,
        commands=("webhook",),
    )

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


@dataclass(frozen=True, slots=True)
class Declared:
    """One setting as declared on Settings."""

    name: str  # the Settings field
    var: str  # the environment variable (and the key in .env)
    flag: str  # the command-line flag
    help: str
    parse: Callable[[str, str], Any]
    commands: tuple[str, ...]  # the commands that take the flag; () is every command


def _help(f: Field[Any]) -> str:
    default = f.default
    if default is None or default is MISSING:  # unset, or computed (default_factory)
        return str(f.metadata["help"])
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{f.metadata['help']} (default {shown})"


DECLARED: tuple[Declared, ...] = tuple(
    Declared(
        f.name,
        f.metadata["var"],
        f.metadata["flag"] or "--" + f.name.replace("_", "-"),
        _help(f),
        f.metadata["parse"],
        f.metadata["commands"],
    )
    for f in fields(Settings)
)
BY_NAME = {d.name: d for d in DECLARED}
BY_VAR = {d.var: d for d in DECLARED}


def load_settings(
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
) -> Settings:
    """Build Settings; `flags` maps Settings field names to raw strings (None = not given).
    Precedence: flag > environment > .env > default."""
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[str, str]] = {}  # field -> (where it came from, value)
    if env_file is not None and env_file.is_file():
        for key, value in dotenv_values(env_file).items():
            if key in BY_VAR and value is not None:
                raw[BY_VAR[key].name] = (key, value)
    for var, declared in BY_VAR.items():
        if var in environ:
            raw[declared.name] = (var, environ[var])
    for name, value in (flags or {}).items():
        if value is not None:
            raw[name] = (BY_NAME[name].flag, value)
    # A bad value's error names what the user wrote: the variable, or the flag.
    parsed = {
        name: BY_NAME[name].parse(where, value.strip()) for name, (where, value) in raw.items()
    }
    return Settings(**parsed)
