"""The `hr-ingest` command line: its arguments, its configuration flags and its exit codes.
What each command does is in `ingest.commands`; the process it runs in, in `ingest.runtime`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy.engine import make_url

from ingest import __version__, commands, config, runtime
from ingest.commands import EXIT_FAILURE, EXIT_USAGE, UsageError
from ingest.config import ConfigError, Settings
from ingest.failures import FailureKind
from ingest.logs import configure_logging, register_secret, scrub
from ingest.timeparse import parse_duration, parse_time

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
Command = Callable[[str, str, Handler], argparse.ArgumentParser]  # adds one subcommand


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line instead of argparse's usage dump.
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _settings_flags(command: str | None) -> _Parser:
    """The configuration flags of `command` alone (None: those every command takes)."""
    # SUPPRESS keeps a flag given before the command from being reset by the subparser.
    p = _Parser(add_help=False)
    g = p.add_argument_group("configuration (each also an environment variable)")
    for d in config.DECLARED:
        if (command in d.commands) if command else not d.commands:
            g.add_argument(
                d.flag, dest=f"cfg_{d.name}", default=argparse.SUPPRESS, metavar=d.var, help=d.help
            )
    return p


TIME_HELP = "ISO-8601 date or date-time (UTC unless it says), or a time ago like 30d or 12h"


# Argument types: a bad value becomes argparse's one-line error and exit 2.
def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text, datetime.now(UTC))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration_or_off(text: str) -> timedelta:
    return timedelta(0) if text.strip() == "0" else _duration_arg(text)


def _duration_option(
    p: argparse.ArgumentParser,
    flag: str,
    default: str,
    help_: str,
    parse: Callable[[str], timedelta] = _duration_arg,
) -> None:
    p.add_argument(flag, type=parse, default=default, metavar="DURATION", help=help_)


def _uuid_arg(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _failure_kind_arg(text: str) -> str:
    try:
        return FailureKind(text.strip()).value
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a failure kind (one of: {', '.join(k.value for k in FailureKind)})"
        ) from None


def _port_arg(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def _page_size_arg(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 5000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 5000")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    common = _settings_flags(None)
    parser = _Parser(
        prog="hr-ingest",
        description="Copy HappyRobot runs into relational PostgreSQL tables.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"hr-ingest {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
        own = _settings_flags(name)
        p = sub.add_parser(name, help=help_, description=help_, parents=[common, own])
        p.set_defaults(handler=handler)
        return p

    for add in (_add_queue_commands, _add_simulate, _add_discovery, _add_worker):
        add(command)
    return parser


def _add_queue_commands(command: Command) -> None:
    db = command(
        "db",
        "schema migrations and the embedded server; `db url`: what a BI tool connects with",
        commands.db,
    )
    db.add_argument("action", choices=["upgrade", "downgrade", "current", "stop", "url"])
    db.add_argument(
        "revision", nargs="?", help="target revision (upgrade: head; downgrade: required)"
    )
    db.add_argument(
        "--yes", action="store_true", help="confirm `db downgrade base` (drops every table)"
    )

    command(
        "check",
        "is this configuration ready? config, database at the head revision, API key, rate"
        " limit: one line each; exit 0 when all hold, 1 otherwise",
        commands.check,
    )
    pa = command(
        "pause",
        "every worker stops claiming within seconds (runs in flight finish) until `resume`;"
        " enqueueing goes on",
        commands.pause,
    )
    pa.add_argument("--reason", metavar="TEXT", help="why, shown in status and on the page")
    pa.add_argument(
        "--wait",
        action="store_true",
        help="return once no run is in flight (every worker has finished what it held)",
    )
    command("resume", "workers claim again after `pause`", commands.resume)

    st = command(
        "status",
        "a pause, queue counts, oldest due age, throughput, a drain's ETA, dead letters",
        commands.status,
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")

    enq = command("enqueue", "add run IDs to the queue (idempotent)", commands.enqueue)
    enq.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="'-' reads standard input")
    enq.add_argument("--file", metavar="PATH", help="one run ID per line; '-' reads stdin")
    enq.add_argument("--priority", type=int, default=0, help="higher is claimed first")

    rd = command("retry-dead", "move dead-lettered runs back to pending", commands.retry_dead)
    rd.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="default: every dead run")
    rd.add_argument(
        "--reason",
        type=_failure_kind_arg,
        metavar="KIND",
        help="only runs dead of this failure kind (as `status` groups them): "
        + ", ".join(k.value for k in FailureKind),
    )
    rd.add_argument(
        "--since", type=_time_arg, metavar="T", help="only runs dead-lettered since " + TIME_HELP
    )
    rd.add_argument("--dry-run", action="store_true", help="only count them, by kind")

    rp = command(
        "reprocess", "rebuild rows from stored raw payloads (no API calls)", commands.reprocess
    )
    rp.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="default: every stored run")

    pr = command(
        "prune",
        "delete stored raw payloads fetched before a time; every other table is kept",
        commands.prune,
    )
    pr.add_argument(
        "--older-than",
        type=_duration_or_off,
        required=True,
        metavar="DURATION",
        help="fetched longer ago than this, e.g. 90d (0: every payload)",
    )
    pr.add_argument("--dry-run", action="store_true", help="only say what would be deleted")

    sh = command(
        "show",
        "one run's story: queue state and attempts, last error, dead letter, stored run,"
        " payload and drift, rows per table",
        commands.show,
    )
    sh.add_argument("run_id", type=_uuid_arg, metavar="RUN_ID")
    sh.add_argument(
        "--body", action="store_true", help="print the dead letter's raw body, byte for byte"
    )

    pl = command(
        "payload", "print a run's stored raw body to stdout, byte for byte", commands.payload
    )
    pl.add_argument("run_id", type=_uuid_arg, metavar="RUN_ID")

    dm = command(
        "demo", "simulator + database + discovery + worker --drain, then a summary", commands.demo
    )
    dm.add_argument(
        "--runs", type=int, default=3000, help="synthetic runs to ingest (default 3000)"
    )


def _add_simulate(command: Command) -> None:
    # `--rate-limit R` is the shared configuration flag; for `simulate` it is the limit the
    # simulator enforces (429 above R requests/s), taken from the command line only.
    sim = command(
        "simulate",
        "serve a HappyRobot API simulator (GET /runs, /runs/{id}, /use-cases, /usage, /issues)",
        commands.simulate,
    )
    sim.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    sim.add_argument("--runs", type=int, default=1000, help="synthetic runs (default 1000)")
    sim.add_argument("--latency", type=float, default=0.0, metavar="MS", help="mean, jittered")
    sim.add_argument("--error-rate", type=float, default=0.0, metavar="F", help="0..1 faults")
    sim.add_argument("--seed", type=int, default=1, help="same seed, same runs (default 1)")
    _duration_option(
        sim,
        "--history",
        "7d",
        "how far back the runs go (default 7d); past 7d, the 7-day-retention use case's"
        " older runs show their content deleted",
    )


def _add_discovery(command: Command) -> None:
    dc = command(
        "discover", "list runs through GET /runs over a window and enqueue them", commands.discover
    )
    dc.add_argument("--since", required=True, type=_time_arg, metavar="T", help=TIME_HELP)
    dc.add_argument("--until", type=_time_arg, metavar="T", help="end, exclusive (default: now)")
    dc.add_argument("--use-case", type=_uuid_arg, metavar="ID", help="only this use case")
    dc.add_argument("--status", help="only runs with this status (e.g. completed)")
    _duration_option(dc, "--window", "7d", "largest sub-window listed at once (default 7d)")
    dc.add_argument("--page-size", type=_page_size_arg, default=1000, help="1..5000 (default 1000)")
    dc.add_argument(
        "--relist", action="store_true", help="list sub-windows an earlier discover finished too"
    )

    sy = command(
        "sync", "incremental discovery from the stored watermark (cron-safe)", commands.sync
    )
    _duration_option(
        sy,
        "--overlap",
        "15m",
        "how far before the watermark to list again, for late runs (default 15m)",
    )
    sy.add_argument(
        "--since", type=_time_arg, metavar="T", help="first sync only (no watermark): " + TIME_HELP
    )
    sy.add_argument(
        "--refresh-days",
        type=float,
        default=0.0,
        metavar="N",
        help="also refetch runs finished in the last N days, at most hourly (default 0)",
    )
    sy.add_argument("--page-size", type=_page_size_arg, default=1000, help="1..5000 (default 1000)")
    _duration_option(
        sy,
        "--recheck",
        "7d",
        "change capture: list this trailing window again, and every use case's issues,"
        " and fetch the runs that changed upstream (default 7d; 0 turns it off)",
        parse=_duration_or_off,
    )
    _duration_option(sy, "--recheck-every", "1h", "at most this often (default 1h)")


def _add_worker(command: Command) -> None:
    wk = command("worker", "process the queue until SIGTERM/SIGINT", commands.worker)
    wk.add_argument(
        "--drain",
        action="store_true",
        help="exit 0 once every run is done, dead, or only waiting to be polled again",
    )
    wh = command(
        "webhook",
        "receive HappyRobot webhook calls (POST /) and enqueue their runs at high priority,"
        " until SIGTERM/SIGINT",
        commands.webhook,
    )
    wh.add_argument(
        "--port", type=_port_arg, default=8080, help="0 picks a free port (default 8080)"
    )
    wh.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on; 0.0.0.0 suits a container, 127.0.0.1 is this machine only"
        " (default 0.0.0.0)",
    )


def _flags(args: argparse.Namespace) -> dict[str, str]:
    """The configuration flags given, by Settings field."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        flags = _flags(args)
        settings = config.load_settings(flags)
    except ConfigError as exc:
        if args.command == "check":  # its first line, and the rest cannot be checked
            print(commands.config_failed(exc))
            return EXIT_FAILURE
        sys.stderr.write(f"hr-ingest: error: {exc}\n")
        return EXIT_USAGE
    for secret in (settings.api_key, settings.database_url, settings.webhook_secret):
        if secret is not None:
            register_secret(secret.reveal())
    if settings.database_url is not None:
        # The password alone too: a driver's error or frame can show it without its URL.
        parsed = make_url(settings.database_url.reveal())
        register_secret(parsed.password)
        # A client key's passphrase (?sslpassword=), which is a password too.
        passphrase = parsed.query.get("sslpassword")
        register_secret(passphrase if isinstance(passphrase, str) else None)
    # What the user set, rather than left to its default (`demo` picks other defaults).
    args.explicit = frozenset(
        d.name for d in config.DECLARED if d.name in flags or d.var in os.environ
    )
    level = logging.getLevelName(settings.log_level.upper())
    # `demo` speaks to a person: its summary says what happened, so only warnings are logged.
    if args.command == "demo" and not args.explicit & {"log_level", "log_format"}:
        level = logging.WARNING
    configure_logging(settings.log_format, level)
    handler: Handler = args.handler
    try:
        return runtime.run(handler(args, settings))
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
