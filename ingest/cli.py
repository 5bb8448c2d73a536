"""The `hr-ingest` command: parsing, exit codes and human output. Work lives in the modules."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from ingest.discovery import Tally
    from ingest.worker import WorkerOptions, WorkerStats

from ingest import __version__, queue
from ingest.api.client import open_client
from ingest.config import FIELD_TO_VAR, ConfigError, Settings, load_settings
from ingest.db.engine import create_engine
from ingest.ids import BadLine, parse_lines, parse_run_id
from ingest.logs import configure_logging, register_secret, scrub
from ingest.timeparse import parse_duration, parse_time

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
ENQUEUE_CHUNK = 100_000

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


def _uuid_arg(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _port_arg(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def _page_size_arg(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 5000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 5000")
    return int(text)


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
    sim = command(
        "simulate",
        "serve a HappyRobot API simulator (GET /runs, /runs/{id}, /use-cases, /usage, /issues)",
        _simulate,
    )
    sim.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    sim.add_argument("--runs", type=int, default=1000, help="synthetic runs (default 1000)")
    sim.add_argument("--latency", type=float, default=0.0, metavar="MS", help="mean, jittered")
    sim.add_argument("--error-rate", type=float, default=0.0, metavar="F", help="0..1 faults")
    sim.add_argument("--seed", type=int, default=1, help="same seed, same runs (default 1)")
    sim.add_argument(
        "--history",
        type=_duration_arg,
        default="7d",
        metavar="DURATION",
        help="how far back the runs go (default 7d); past 7d, the 7-day-retention use case's"
        " older runs show their content deleted",
    )

    enq = command("enqueue", "add run IDs to the queue (idempotent)", _enqueue)
    enq.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="'-' reads standard input")
    enq.add_argument("--file", metavar="PATH", help="one run ID per line; '-' reads stdin")
    enq.add_argument("--priority", type=int, default=0, help="higher is claimed first")

    dc = command(
        "discover", "list runs through GET /runs over a window and enqueue them", _discover
    )
    dc.add_argument("--since", required=True, type=_time_arg, metavar="T", help=TIME_HELP)
    dc.add_argument("--until", type=_time_arg, metavar="T", help="end, exclusive (default: now)")
    dc.add_argument("--use-case", type=_uuid_arg, metavar="ID", help="only this use case")
    dc.add_argument("--status", help="only runs with this status (e.g. completed)")
    dc.add_argument(
        "--window",
        type=_duration_arg,
        default="7d",
        metavar="DURATION",
        help="largest sub-window listed at once (default 7d)",
    )
    dc.add_argument("--page-size", type=_page_size_arg, default=1000, help="1..5000 (default 1000)")
    dc.add_argument(
        "--relist", action="store_true", help="list sub-windows an earlier discover finished too"
    )

    sy = command("sync", "incremental discovery from the stored watermark (cron-safe)", _sync)
    sy.add_argument(
        "--overlap",
        type=_duration_arg,
        default="15m",
        metavar="DURATION",
        help="how far before the watermark to list again, for late runs (default 15m)",
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

    wk = command("worker", "process the queue until SIGTERM/SIGINT", _worker)
    wk.add_argument(
        "--drain",
        action="store_true",
        help="exit 0 once every run is done, dead, or only waiting to be polled again",
    )
    wk.add_argument(
        "--lease-seconds",
        type=float,
        help="how long a claim lasts unrenewed before another worker may take it (default 120)",
    )
    wk.add_argument(
        "--batch-size",
        type=int,
        help="runs written per transaction (default 200)",
    )
    wk.add_argument(
        "--sync-every",
        type=_duration_arg,
        metavar="DURATION",
        help="also run `sync` on this schedule (e.g. 1m), instead of from cron",
    )
    wk.add_argument(
        "--metrics-port",
        type=_port_arg,
        metavar="P",
        help="serve /metrics, /healthz, /readyz and a status page (/) on this port",
    )
    wk.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        metavar="HOST",
        help="address for --metrics-port (default 0.0.0.0, for containers; 127.0.0.1: local)",
    )

    rd = command("retry-dead", "move dead-lettered runs back to pending", _retry_dead)
    rd.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="default: every dead run")

    rp = command("reprocess", "rebuild rows from stored raw payloads (no API calls)", _reprocess)
    rp.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="default: every stored run")

    dm = command("demo", "simulator + database + discovery + worker --drain, then a summary", _demo)
    dm.add_argument(
        "--runs", type=int, default=3000, help="synthetic runs to ingest (default 3000)"
    )
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
        history=args.history,
    )
    return EXIT_OK


async def _status(args: argparse.Namespace, settings: Settings) -> int:
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
    if report.polling:
        print(f"({report.polling} of the pending runs are only waiting to poll runs still")
        print(" scheduled/running upstream; `worker` polls them, `worker --drain` does not wait)")
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
    if settings.database_url is not None:
        # The password alone too: a driver's error or frame can show it without its URL.
        register_secret(make_url(settings.database_url.reveal()).password)
    # `demo` speaks to a person: its summary says what happened, so only warnings are logged.
    quiet = args.command == "demo" and FIELD_TO_VAR["log_format"] not in os.environ
    configure_logging(settings.log_format, logging.WARNING if quiet else logging.INFO)
    handler: Handler = args.handler
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(handler(args, settings))
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


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it exists: the worker spends most of its time in HTTP and socket I/O."""
    try:
        import uvloop
    except ImportError:  # Windows, or installed without it
        return None
    # Most objects here die young and acyclic (parsed payloads, rows), freed by their reference
    # counts; the cycle collector only finds the odd cycle, yet at the default thresholds it
    # took about a tenth of a worker's CPU walking live payloads (measured in bench/).
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)
    return uvloop.new_event_loop


def command_name(args: argparse.Namespace) -> str:
    return str(getattr(args, "command", "command"))


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return scrub(text.splitlines()[0] if text else "")


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())


# -- queue commands --------------------------------------------------------------------------


def _run_ids(values: Sequence[str]) -> list[uuid.UUID]:
    out = []
    for v in values:
        try:
            out.append(parse_run_id(v))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return out


async def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.ops.progress import Progress

    if "-" in args.run_ids:  # `enqueue -` reads standard input, like `--file -`
        if args.file not in (None, "-"):
            raise UsageError("read IDs from --file or from '-' (standard input), not both")
        args.run_ids = [r for r in args.run_ids if r != "-"]
        args.file = "-"
    if not args.run_ids and not args.file:
        raise UsageError("give run IDs as arguments or with --file PATH (or --file - for stdin)")
    if args.file and args.file != "-" and not Path(args.file).is_file():
        raise UsageError(f"--file {args.file}: no such file")
    engine = create_engine(settings, pool_size=1)
    bad: list[BadLine] = []
    totals = [0, 0, 0]
    chunk: list[uuid.UUID] = []

    async def flush() -> None:
        async with engine.begin() as conn:
            r = await queue.enqueue(conn, chunk, source="manual", priority=args.priority)
        for i, n in enumerate((r.added, r.refreshed, r.unchanged)):
            totals[i] += n
        progress.advance(len(chunk))
        chunk.clear()

    try:
        with Progress("enqueue", unit="IDs") as progress:
            sources: list[tuple[Iterable[str], int]] = []
            if args.run_ids:
                sources.append((args.run_ids, 1))
            handle = None
            if args.file:
                handle = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
                sources.append((handle, 1))
            try:
                for lines, first in sources:
                    for run_id, problem in parse_lines(lines, first):
                        if problem is not None:
                            bad.append(problem)
                        else:
                            assert run_id is not None
                            chunk.append(run_id)
                            if len(chunk) >= ENQUEUE_CHUNK:
                                await flush()
                if chunk:
                    await flush()
            finally:
                if handle not in (None, sys.stdin):
                    handle.close()
    finally:
        await engine.dispose()
    where = "argument" if not args.file else "line"
    for b in bad[:50]:
        sys.stderr.write(f"{where} {b.line}: {b.reason}\n")
    if len(bad) > 50:
        sys.stderr.write(f"... and {len(bad) - 50} more invalid IDs\n")
    added, refreshed, unchanged = totals
    print(
        f"enqueued: {added} new, {refreshed} scheduled for refresh, {unchanged} already queued;"
        f" {len(bad)} invalid"
    )
    return EXIT_OK if not bad else EXIT_FAILURE


async def _retry_dead(args: argparse.Namespace, settings: Settings) -> int:
    ids = _run_ids(args.run_ids) or None
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            n = await queue.retry_dead(conn, ids)
    finally:
        await engine.dispose()
    print(f"{n} dead runs moved back to pending")
    return EXIT_OK


async def _reprocess(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.store import reprocess

    ids = _run_ids(args.run_ids) or None
    engine = create_engine(settings, pool_size=1)
    try:
        result = await reprocess(engine, ids)
    finally:
        await engine.dispose()
    print(
        f"reprocessed {result.runs} runs ({result.rows} rows); {result.skipped_stale} skipped"
        " (a newer fetch won);"
        f" {len(result.refused)} refused by today's rules; {len(result.missing)} have no payload"
    )
    for run_id, reason in result.refused[:20]:
        print(f"  refused {run_id}: {reason}")
    for run_id in result.missing[:20]:
        print(f"  no stored payload: {run_id}")
    return EXIT_OK if not (result.refused or result.missing) else EXIT_FAILURE


# -- discovery -------------------------------------------------------------------------------


def _at(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _progress_callback(progress: Any) -> Callable[[Tally], None]:
    def on_progress(t: Tally) -> None:
        progress.advance(t.runs - progress.done, windows=t.windows, reached=_at(t.reached))

    return on_progress


async def _discover(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import discovery
    from ingest.api.errors import ApiError
    from ingest.ops.progress import Progress

    require_api_key(settings)
    until = args.until or datetime.now(UTC)
    if args.since >= until:
        raise UsageError(f"--since ({_at(args.since)}) must be before --until ({_at(until)})")
    filters = discovery.Filters(use_case_id=args.use_case, status=args.status)
    paging = discovery.Paging(page_size=args.page_size, span=args.window)
    tally = discovery.Tally()
    engine = create_engine(settings, pool_size=2)
    try:
        with Progress("discover", unit="runs") as progress:
            async with open_client(settings, engine) as client:
                await discovery.discover(
                    engine,
                    client,
                    since=args.since,
                    until=until,
                    filters=filters,
                    paging=paging,
                    relist=args.relist,
                    on_progress=_progress_callback(progress),
                    tally=tally,
                    catalog=True,
                )
    except (ApiError, discovery.DiscoveryError) as exc:
        sys.stderr.write(
            f"hr-ingest: discover stopped at {_at(tally.reached or args.since)}: {scrub(str(exc))}"
            " (finished sub-windows are recorded: run the same command again to resume)\n"
        )
        return EXIT_FAILURE
    finally:
        await engine.dispose()
    print(
        f"discover {_at(args.since)} .. {_at(until)}: {tally.runs} runs in {tally.windows}"
        f" sub-windows ({tally.windows_skipped} finished earlier, skipped);"
        f" enqueued {tally.added} new, {tally.refreshed} for refresh,"
        f" {tally.unchanged} already queued; {tally.invalid} invalid IDs; {tally.elapsed:.1f}s"
    )
    _print_catalog(tally)
    return EXIT_OK


def _print_catalog(tally: Tally) -> None:
    if tally.catalog is not None:
        print(tally.catalog.summary())


async def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import discovery
    from ingest.api.errors import ApiError
    from ingest.ops.progress import Progress

    require_api_key(settings)
    if args.refresh_days < 0:
        raise UsageError("--refresh-days must be 0 or more")
    options = discovery.SyncOptions(
        overlap=args.overlap,
        since=args.since,
        refresh_days=args.refresh_days,
        paging=discovery.Paging(page_size=args.page_size),
        catalog=True,
    )
    engine = create_engine(settings, pool_size=3)
    try:
        with Progress("sync", unit="runs") as progress:
            async with open_client(settings, engine) as client:
                result = await discovery.sync(engine, client, options, _progress_callback(progress))
    except (ApiError, discovery.DiscoveryError) as exc:
        sys.stderr.write(
            f"hr-ingest: sync failed: {scrub(str(exc))} (the watermark is unchanged)\n"
        )
        return EXIT_FAILURE
    finally:
        await engine.dispose()
    if not result.ran:
        print("sync: another sync is running on this database; nothing to do")
        return EXIT_OK
    t = result.tally
    print(
        f"sync {_at(result.since)} .. {_at(result.until)}: {t.runs} runs listed;"
        f" enqueued {t.added} new, {t.refreshed} changed; re-enqueued {result.non_terminal}"
        f" not terminal yet, {result.refreshed} recently finished; {t.invalid} invalid IDs;"
        f" {t.elapsed:.1f}s"
    )
    _print_catalog(t)
    return EXIT_OK


# -- the worker ------------------------------------------------------------------------------


def require_api_key(settings: Settings) -> None:
    if settings.api_key is None:
        raise ConfigError("HAPPYROBOT_API_KEY", "required to call the API (set it or --api-key)")


async def run_worker(
    settings: Settings,
    engine: AsyncEngine,
    options: WorkerOptions,
    sync_every: timedelta | None = None,
    metrics: tuple[str, int] | None = None,
) -> WorkerStats:
    """The worker with signal handling: the first SIGTERM/SIGINT drains gracefully, the
    second exits at once (leases then expire on their own). With `sync_every`, `sync` runs
    on that schedule alongside, through the same client and rate limit, until the worker
    stops. With `metrics` (host, port), the operations server runs around the worker."""
    from ingest.discovery import sync_every as periodic_sync
    from ingest.ops.server import OpsServer
    from ingest.worker import Worker

    loop = asyncio.get_running_loop()
    syncing: asyncio.Task[None] | None = None
    async with open_client(settings, engine) as client:
        worker = Worker(settings, engine, client, options)
        ops: OpsServer | None = None
        if metrics is not None:
            host, port = metrics
            ops = OpsServer(engine, worker=worker, host=host, port=port, schema=settings.db_schema)
            await ops.start()
        if sync_every is not None:
            syncing = asyncio.create_task(periodic_sync(engine, client, sync_every.total_seconds()))
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                sys.stderr.write("hr-ingest: second signal, exiting now\n")
                os._exit(EXIT_FAILURE)
            worker.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await worker.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if syncing is not None:
                syncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncing
            if ops is not None:
                await ops.close()


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.worker import FatalApiError, WorkerOptions

    require_api_key(settings)
    given = {"lease_s": args.lease_seconds, "batch_size": args.batch_size}
    if any(v is not None and v <= 0 for v in given.values()):
        raise UsageError("--lease-seconds and --batch-size must be positive")
    options = WorkerOptions(drain=args.drain, **{k: v for k, v in given.items() if v is not None})
    engine = create_engine(settings, pool_size=4)
    try:
        metrics = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
        stats = await run_worker(
            settings, engine, options, sync_every=args.sync_every, metrics=metrics
        )
    except FatalApiError as exc:
        sys.stderr.write(f"hr-ingest: worker stopped: {exc}\n")
        return EXIT_FAILURE
    finally:
        await engine.dispose()
    print(
        f"worker: {stats.done} done, {stats.polled} to poll again, {stats.retried} retried,"
        f" {stats.dead} dead, {stats.rows} rows in {stats.elapsed:.1f}s"
    )
    return EXIT_OK


# -- demo ------------------------------------------------------------------------------------

DEMO_API_KEY = "demo-key"
DEMO_RATE_LIMIT = 2000.0
# Wider than the simulator's history (its runs span the 7 days before it starts).
DEMO_HISTORY = timedelta(days=30)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    """The whole job, offline: simulator, database (embedded unless DATABASE_URL), discovery,
    worker --drain, then a summary a person can read."""
    from ingest.config import Secret
    from ingest.db import migrate
    from ingest.ops.summary import print_summary
    from ingest.simulator import Simulator
    from ingest.worker import WorkerOptions

    if args.runs <= 0:
        raise UsageError("--runs must be a positive number")
    rate = settings.rate_limit if _explicit("rate_limit", args) else DEMO_RATE_LIMIT
    print(f"database: {settings.database_url_redacted} (schema {settings.db_schema})")
    engine = create_engine(settings, pool_size=4)
    try:
        await migrate.upgrade(engine)
        async with Simulator(runs=args.runs, seed=42, api_key=DEMO_API_KEY) as sim:
            demo = settings.with_overrides(
                base_url=sim.base_url,
                api_key=Secret(DEMO_API_KEY),
                org_id=str(sim.org_id),  # a real org id from the environment would get 403s
                rate_limit=rate,
            )
            print(f"API simulator: {sim.base_url} with {args.runs} runs; rate limit {rate:g}/s")
            found = await _demo_discover(demo, engine, sim)
            print(f"discovered {found} runs; draining the queue ...")
            stats = await run_worker(demo, engine, WorkerOptions(drain=True))
        await print_summary(engine, stats)
    finally:
        await engine.dispose()
    _print_next_steps(settings)
    return EXIT_OK


def _print_next_steps(settings: Settings) -> None:
    from ingest.db.engine import resolve_url

    # A libpq URL (psql, Metabase, DBeaver) without the password: the user has it already.
    url = make_url(resolve_url(settings)).set(drivername="postgresql", password=None)
    where = url.render_as_string(hide_password=True)
    print("\nnext:")
    print(f"  psql '{where}' -c 'SELECT * FROM {settings.db_schema}.bi_runs LIMIT 5'")
    print("  hr-ingest status        # the queue, throughput and dead letters")
    print("  hr-ingest simulate      # an API to point a long-running `hr-ingest worker` at")
    if settings.database_url is None:
        print("  hr-ingest db stop       # stop the embedded PostgreSQL")


def _explicit(name: str, args: argparse.Namespace) -> bool:
    return f"cfg_{name}" in vars(args) or FIELD_TO_VAR[name] in os.environ


async def _demo_discover(settings: Settings, engine: AsyncEngine, sim: Any) -> int:
    """Find the simulator's runs the way a user finds real ones: through GET /runs."""
    from ingest import discovery

    until = datetime.now(UTC)
    async with open_client(settings, engine) as client:
        tally = await discovery.discover(
            engine,
            client,
            since=until - DEMO_HISTORY,
            until=until,
            # A data dir reused by an earlier demo holds its finished windows, but this
            # simulator's runs are new: list everything again.
            relist=True,
            catalog=True,  # use case names and usage, as a user's first discover gets them
        )
    return tally.runs
