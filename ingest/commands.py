"""What each command does, in terms of the modules, and what it prints: one async function per
command, given its parsed arguments and the settings; it returns the exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ingest.discovery import Tally

from ingest import queue
from ingest.api.client import open_client
from ingest.config import ConfigError, Settings
from ingest.db.engine import create_engine
from ingest.ids import BadLine, parse_lines, parse_run_id
from ingest.logs import scrub

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
ENQUEUE_CHUNK = 100_000


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit 2."""


async def simulate(args: argparse.Namespace, settings: Settings) -> int:
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


async def status(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.ops.status import collect

    engine = create_engine(settings, pool_size=1)
    try:
        report = await collect(engine, settings.rate_limit)
    finally:
        await engine.dispose()
    if args.json:
        print(report.to_json())
        return EXIT_OK
    print(f"database: {settings.database_url_redacted}, schema {settings.db_schema}")
    if report.pause:
        print(f"PAUSED {report.pause}: workers claim nothing until `hr-ingest resume`")
    print_table([(s, n) for s, n in report.counts.items()], ["state", "runs"])
    if report.polling:
        print(f"({report.polling} of the pending runs are only waiting to poll runs still")
        print(" scheduled/running upstream; `worker` polls them, `worker --drain` does not wait)")
    age = report.oldest_due_age_s
    print(f"oldest due: {'-' if age is None else f'{age:.0f}s ago'}")
    synced = report.last_sync_age_s
    print(f"last sync: {'never' if synced is None else f'{synced:.0f}s ago ({report.last_sync})'}")
    if report.sync_failures:
        print(f"syncs failed since: {report.sync_failures} (last: {report.sync_error})")
    unfinished = report.oldest_non_terminal_age_s
    if unfinished is not None:
        print(f"oldest run still scheduled/running upstream: started {unfinished:.0f}s ago")
    for minutes, runs in report.throughput.items():
        print(f"done in the last {minutes} min: {runs} ({runs / (minutes * 60):.1f} runs/s)")
    print(f"drain: {report.drain}")
    if report.landed:
        print("call ended -> in the tables, runs first stored finished in the last hour:")
        print_table(
            [(src, n, f"{p50:.1f}s", f"{p95:.1f}s") for src, n, p50, p95 in report.landed],
            ["came by", "runs", "p50", "p95"],
        )
    if report.dead_reasons:
        print("dead letters by kind:")
        print_table([(n, kind) for kind, n in report.dead_reasons], ["runs", "kind"])
    if report.drift:
        print("schema drift seen in stored payloads:")
        print_table([(n, k) for k, n in report.drift], ["runs", "drift"])
    return EXIT_OK


async def check(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.ops.check import FAIL, run_checks

    lines = await run_checks(settings)
    for line in lines:
        print(line)
    return EXIT_FAILURE if any(line.verdict == FAIL for line in lines) else EXIT_OK


def config_failed(exc: ConfigError) -> str:
    """`check`'s line for a configuration that does not load."""
    from ingest.ops.check import FAIL, Line

    return str(Line("config", FAIL, scrub(str(exc))))


async def pause(args: argparse.Namespace, settings: Settings) -> int:
    import getpass
    import socket

    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            now, started = await queue.pause(
                conn, f"{getpass.getuser()}@{socket.gethostname()}", args.reason
            )
        if started:
            print(
                f"paused at {now.since.isoformat()}: workers claim nothing within a second or"
                " two; runs in flight finish. `hr-ingest resume` to go on."
            )
        else:
            print(f"already paused {now}: nothing changed")
        if args.wait:
            await _wait_in_flight(engine)
    finally:
        await engine.dispose()
    return EXIT_OK


async def _wait_in_flight(engine: AsyncEngine) -> None:
    from ingest.db.driver import connection

    said = -1
    while True:
        async with connection(engine) as conn:
            left = await queue.in_flight(conn)
        if left == 0:
            print("nothing in flight")
            return
        if left != said:
            print(f"{left} runs in flight...", flush=True)
            said = left
        await asyncio.sleep(0.5)


async def resume(args: argparse.Namespace, settings: Settings) -> int:
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            was = await queue.resume(conn)
    finally:
        await engine.dispose()
    if was is None:
        print("not paused: nothing changed")
    else:
        from ingest.ops.drain import duration

        lasted = duration((datetime.now(UTC) - was.since).total_seconds())
        print(f"resumed: workers claim again (paused {lasted}, since {was.since.isoformat()})")
    return EXIT_OK


async def db(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.db import embedded, migrate

    if args.action == "stop":
        stopped = embedded.stop(settings.data_dir)
        print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
        return EXIT_OK
    if args.action == "url":
        return await _bi_url(settings)
    if args.action == "downgrade" and not args.revision:
        raise UsageError("db downgrade needs a target revision (e.g. 0013; `db current` shows)")
    if args.action == "downgrade" and args.revision == "base" and not args.yes:
        raise UsageError("db downgrade base drops every table and all their rows: add --yes")
    engine = create_engine(settings, pool_size=1)
    try:
        if args.action == "upgrade":
            await migrate.upgrade(engine, args.revision or "head")
        elif args.action == "downgrade":
            await migrate.downgrade(engine, args.revision)
        rev = await migrate.current_revision(engine)
        where = settings.database_url_redacted
        print(f"schema {settings.db_schema} at revision {rev or 'base'} ({where})")
    finally:
        await engine.dispose()
    return EXIT_OK


async def _bi_url(settings: Settings) -> int:
    """What to paste into a BI tool on this machine: the embedded server's TCP address and a
    read-only role made for it."""
    from ingest.db import access, embedded

    if settings.database_url is not None:
        print(f"DATABASE_URL is set: point the BI tool at {settings.database_url_redacted}")
        print("(schema " + settings.db_schema + "; docs/dashboards.md has a read-only role for it)")
        return EXIT_OK
    if settings.embedded_port is None:
        raise UsageError(
            "the embedded PostgreSQL listens on a Unix socket only: set INGEST_EMBEDDED_PORT"
            " (e.g. 5433), then run `hr-ingest db url` again"
        )
    password = access.bi_password(settings.data_dir)
    engine = create_engine(settings, pool_size=1)
    try:
        await access.ensure_bi_role(engine, settings.db_schema, password)
    finally:
        await engine.dispose()
    port, user, schema = settings.embedded_port, access.BI_ROLE, settings.db_schema
    print(
        f"postgresql://{user}:{password}@127.0.0.1:{port}/{embedded.DATABASE}"
        f"?options=-csearch_path%3D{schema}"
    )
    print(
        f"host 127.0.0.1  port {port}  database {embedded.DATABASE}  user {user}"
        f"  password {password}  schema {schema} (read-only)"
    )
    return EXIT_OK


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


async def enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.ops.progress import Progress

    # `enqueue -` reads standard input, like `--file -`.
    run_ids = [r for r in args.run_ids if r != "-"]
    file: str | None = args.file
    if len(run_ids) < len(args.run_ids):
        if file not in (None, "-"):
            raise UsageError("read IDs from --file or from '-' (standard input), not both")
        file = "-"
    if not run_ids and not file:
        raise UsageError("give run IDs as arguments or with --file PATH (or --file - for stdin)")
    if file and file != "-" and not Path(file).is_file():
        raise UsageError(f"--file {file}: no such file")
    engine = create_engine(settings, pool_size=1)
    bad: list[BadLine] = []
    totals = queue.EnqueueResult(0, 0, 0)
    chunk: list[uuid.UUID] = []

    async def flush() -> None:
        nonlocal totals
        async with engine.begin() as conn:
            totals += await queue.enqueue(conn, chunk, source="manual", priority=args.priority)
        progress.advance(len(chunk))
        chunk.clear()

    try:
        with Progress("enqueue", unit="IDs") as progress, _id_sources(run_ids, file) as sources:
            for lines in sources:
                for run_id, problem in parse_lines(lines, 1):
                    if problem is not None:
                        bad.append(problem)
                        continue
                    assert run_id is not None
                    chunk.append(run_id)
                    if len(chunk) >= ENQUEUE_CHUNK:
                        await flush()
            if chunk:
                await flush()
    finally:
        await engine.dispose()
    _report_bad_ids(bad, "line" if file else "argument")
    print(
        f"enqueued: {totals.added} new, {totals.refreshed} scheduled for refresh,"
        f" {totals.unchanged} already queued; {len(bad)} invalid"
    )
    return EXIT_OK if not bad else EXIT_FAILURE


@contextlib.contextmanager
def _id_sources(run_ids: list[str], file: str | None) -> Iterator[list[Iterable[str]]]:
    """The IDs given as arguments, then the file's lines (each numbered from 1)."""
    sources: list[Iterable[str]] = [run_ids] if run_ids else []
    if file is None:
        yield sources
    elif file == "-":
        yield [*sources, sys.stdin]
    else:
        with open(file, encoding="utf-8") as handle:
            yield [*sources, handle]


def _report_bad_ids(bad: Sequence[BadLine], where: str) -> None:
    for b in bad[:50]:
        sys.stderr.write(f"{where} {b.line}: {b.reason}\n")
    if len(bad) > 50:
        sys.stderr.write(f"... and {len(bad) - 50} more invalid IDs\n")


async def retry_dead(args: argparse.Namespace, settings: Settings) -> int:
    ids = _run_ids(args.run_ids) or None
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            by_kind = await queue.retry_dead(
                conn, ids, kind=args.reason, since=args.since, dry_run=args.dry_run
            )
    finally:
        await engine.dispose()
    n = sum(by_kind.values())
    if not n:
        print("no dead run matches: nothing to retry")
        return EXIT_OK
    print(f"{n} dead runs {'would be moved' if args.dry_run else 'moved'} back to pending")
    print_table(sorted(by_kind.items(), key=lambda kind_runs: -kind_runs[1]), ["kind", "runs"])
    return EXIT_OK


async def reprocess(args: argparse.Namespace, settings: Settings) -> int:
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


async def prune(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import store

    before = datetime.now(UTC) - args.older_than
    engine = create_engine(settings, pool_size=1)
    try:
        pruned = await store.prune_payloads(engine, before, dry_run=args.dry_run)
    finally:
        await engine.dispose()
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {pruned.payloads:,} raw payloads fetched before {_at(before)}"
        f" ({pruned.stored_bytes / 1e6:,.1f} MB as stored); runs and every other table are"
        " kept (reprocess skips these runs until they are fetched again)"
    )
    return EXIT_OK


async def show(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.ops import show as story_of

    engine = create_engine(settings, pool_size=1)
    try:
        story = await story_of.read(engine, args.run_id)
    finally:
        await engine.dispose()
    if not story.found:
        print(f"run {args.run_id} is in neither the queue nor the tables", file=sys.stderr)
        return EXIT_FAILURE
    if args.body:
        body = None if story.dead is None else story.dead["body"]
        if body is None:
            print(f"run {args.run_id} has no dead letter with a body", file=sys.stderr)
            return EXIT_FAILURE
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return EXIT_OK
    for line in story_of.render(story):
        print(scrub(line))
    return EXIT_OK


async def payload(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import store

    engine = create_engine(settings, pool_size=1)
    try:
        stored = await store.read_payload(engine, args.run_id)
    finally:
        await engine.dispose()
    if stored is None:
        print(f"no stored payload for run {args.run_id}", file=sys.stderr)
        return EXIT_FAILURE
    if not stored.intact:
        print(f"run {args.run_id}: stored body does not match its sha256", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.buffer.write(stored.body)
    sys.stdout.buffer.flush()
    return EXIT_OK


# -- discovery -------------------------------------------------------------------------------


def _at(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _progress_callback(progress: Any) -> Callable[[Tally], None]:
    def on_progress(t: Tally) -> None:
        progress.advance(t.runs - progress.done, windows=t.windows, reached=_at(t.reached))

    return on_progress


async def discover(args: argparse.Namespace, settings: Settings) -> int:
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


async def sync(args: argparse.Namespace, settings: Settings) -> int:
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
        recheck=args.recheck,
        recheck_every=args.recheck_every,
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
    if result.rechecked:
        r = result.relisted
        print(
            f"changes upstream: {r.runs} runs of the trailing window listed again,"
            f" {r.added + r.refreshed} changed; {result.changed_issues} with changed issues"
        )
    elif result.recheck_failed:
        print(f"change capture failed, tried again next sync: {scrub(result.recheck_failed)}")
    _print_catalog(t)
    return EXIT_OK


# -- the worker ------------------------------------------------------------------------------


def require_api_key(settings: Settings) -> None:
    if settings.api_key is None:
        raise ConfigError("HAPPYROBOT_API_KEY", "required to call the API (set it or --api-key)")


async def worker(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.runtime import run_worker
    from ingest.worker import FatalApiError, WorkerOptions

    require_api_key(settings)
    options = WorkerOptions(
        drain=args.drain, lease_s=settings.lease_seconds, batch_size=settings.batch_size
    )
    port = settings.metrics_port
    engine = create_engine(settings, pool_size=4)
    try:
        metrics = None if port is None else (settings.metrics_host, port)
        stats = await run_worker(
            settings, engine, options, sync_every=settings.sync_every, metrics=metrics
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


async def webhook(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.runtime import run_webhook

    if settings.webhook_secret is None:
        raise ConfigError(
            "INGEST_WEBHOOK_SECRET", "required to start the webhook (set it in the environment)"
        )
    # Eight kept open, from the start: with fewer, a burst opens and closes a connection for
    # every call (~1 ms of this process's CPU each, and tens of ms of waiting).
    engine = create_engine(settings, pool_size=8, pool_timeout=5.0, connect_timeout=5.0)
    try:
        answered = await run_webhook(
            engine, settings.webhook_secret, args.host, args.port, connections=8
        )
    finally:
        await engine.dispose()
    print(
        "webhook: "
        + (", ".join(f"{n} x {code}" for code, n in sorted(answered.items())) or "no calls")
    )
    return EXIT_OK


# -- demo ------------------------------------------------------------------------------------


async def demo(args: argparse.Namespace, settings: Settings) -> int:
    """The whole job, offline: see ingest.demo."""
    from ingest.demo import RATE_LIMIT, demo

    if args.runs <= 0:
        raise UsageError("--runs must be a positive number")
    explicit = "rate_limit" in args.explicit
    await demo(settings, args.runs, settings.rate_limit if explicit else RATE_LIMIT)
    return EXIT_OK
