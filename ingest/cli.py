"""The `hr-ingest` command: parsing, exit codes and human output. Work lives in the modules."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from ingest import __version__
from ingest.config import FIELD_TO_VAR, ConfigError, Settings, load_settings
from ingest.logs import configure_logging, register_secret, scrub

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line instead of argparse's usage dump.
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _settings_flags() -> _Parser:
    # SUPPRESS keeps a flag given before the command from being reset by the subparser.
    p = _Parser(add_help=False)
    g = p.add_argument_group("configuration (each also an environment variable)")
    for name, help_ in [
        ("database_url", "PostgreSQL URL; unset: embedded PostgreSQL"),
        ("data_dir", "where the embedded PostgreSQL keeps its data"),
        ("db_schema", "PostgreSQL schema holding every table (default happyrobot)"),
        ("api_key", "HappyRobot API key (prefer the environment: flags show in `ps`)"),
        ("org_id", "organization UUID, sent as x-organization-id"),
        ("base_url", "API root"),
        ("rate_limit", "max requests/s to the API across all workers (default 10)"),
        ("concurrency", "max requests in flight per worker process (default 16)"),
        ("max_attempts", "attempts before a run is dead-lettered (default 8)"),
        ("log_format", "json or console (default: console on a TTY)"),
    ]:
        flag = "--" + ("schema" if name == "db_schema" else name.replace("_", "-"))
        g.add_argument(
            flag,
            dest=f"cfg_{name}",
            default=argparse.SUPPRESS,
            metavar=FIELD_TO_VAR[name],
            help=help_,
        )
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _settings_flags()
    parser = _Parser(
        prog="hr-ingest",
        description="Copy HappyRobot runs into relational PostgreSQL tables.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"hr-ingest {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common])
        p.set_defaults(handler=handler)
        return p

    db = command("db", "schema migrations and the embedded server", _db)
    db.add_argument("action", choices=["upgrade", "downgrade", "current", "stop"])
    db.add_argument("revision", nargs="?", help="target revision (upgrade: head, downgrade: base)")

    st = command("status", "queue counts, oldest due age, throughput, dead letters", _status)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    # `--rate-limit R` is the shared configuration flag; for `simulate` it is the limit the
    # simulator enforces (429 above R requests/s), taken from the command line only.
    sim = command("simulate", "serve a HappyRobot API simulator (both endpoints)", _simulate)
    sim.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    sim.add_argument("--runs", type=int, default=1000, help="synthetic runs (default 1000)")
    sim.add_argument("--latency", type=float, default=0.0, metavar="MS", help="mean, jittered")
    sim.add_argument("--error-rate", type=float, default=0.0, metavar="F", help="0..1 faults")
    sim.add_argument("--seed", type=int, default=1, help="same seed, same runs (default 1)")
    return parser


async def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.simulator import serve

    if args.runs < 0 or args.latency < 0 or not 0 <= args.error_rate <= 1:
        raise UsageError("--runs and --latency must be >= 0, --error-rate within 0..1")
    limit = settings.rate_limit if "cfg_rate_limit" in vars(args) else None
    if limit is not None and limit < 1:
        raise UsageError("--rate-limit must be at least 1")
    # A configured key is accepted (so a worker needs no change) but never printed.
    key = settings.api_key.reveal() if settings.api_key is not None else "sim-key"
    await serve(
        port=args.port,
        runs=args.runs,
        latency_ms=args.latency,
        error_rate=args.error_rate,
        rate_limit=limit,
        seed=args.seed,
        api_key=key,
        show_key=settings.api_key is None,
    )
    return EXIT_OK


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.db.engine import create_engine
    from ingest.ops.status import collect

    engine = create_engine(settings, pool_size=1)
    try:
        report = await collect(engine)
    finally:
        await engine.dispose()
    if args.json:
        print(report.to_json())
        return EXIT_OK
    print(f"database: {settings.database_url_redacted}, schema {settings.db_schema}")
    print_table([(s, n) for s, n in report.counts.items()], ["state", "runs"])
    age = report.oldest_due_age_s
    print(f"oldest due: {'-' if age is None else f'{age:.0f}s ago'}")
    for minutes, runs in report.throughput.items():
        print(f"done in the last {minutes} min: {runs} ({runs / (minutes * 60):.1f} runs/s)")
    if report.dead_reasons:
        print("dead letters by reason:")
        print_table([(n, r) for r, n in report.dead_reasons], ["runs", "reason"])
    if report.drift:
        print("schema drift seen in stored payloads:")
        print_table([(n, k) for k, n in report.drift], ["runs", "drift"])
    return EXIT_OK


async def _db(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.db import embedded, migrate
    from ingest.db.engine import create_engine

    if args.action == "stop":
        stopped = embedded.stop(settings.data_dir)
        print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
        return EXIT_OK
    engine = create_engine(settings, pool_size=1)
    try:
        if args.action == "upgrade":
            await migrate.upgrade(engine, args.revision or "head")
        elif args.action == "downgrade":
            await migrate.downgrade(engine, args.revision or "base")
        rev = await migrate.current_revision(engine)
        where = settings.database_url_redacted
        print(f"schema {settings.db_schema} at revision {rev or 'base'} ({where})")
    finally:
        await engine.dispose()
    return EXIT_OK


def _load(args: argparse.Namespace) -> Settings:
    flags = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    return load_settings(flags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _load(args)
    except ConfigError as exc:
        sys.stderr.write(f"hr-ingest: error: {exc}\n")
        return EXIT_USAGE
    for secret in (settings.api_key, settings.database_url):
        if secret is not None:
            register_secret(secret.reveal())
    configure_logging(settings.log_format)
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args, settings))
    except UsageError as exc:
        sys.stderr.write(f"hr-ingest: error: {scrub(str(exc))}\n")
        return EXIT_USAGE
    except ConfigError as exc:
        sys.stderr.write(f"hr-ingest: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one readable line, no secrets
        sys.stderr.write(f"hr-ingest: {command_name(args)} failed: {_describe(exc)}\n")
        return EXIT_FAILURE


def command_name(args: argparse.Namespace) -> str:
    return str(getattr(args, "command", "command"))


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return scrub(text.splitlines()[0] if text else "")


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())
