"""Prometheus metrics of one worker process, in a registry of its own.

The hot path keeps plain counters (WorkerStats, the client's response counts, the limiter's
wait time) and this module reads them at scrape time, so the worker pays nothing per run for
being observed. Queue gauges come from the cached database snapshot (`ops.snapshot`): they
describe the whole queue, so every worker reports the same values; dashboards take `max`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ingest import __version__
from ingest.db.tables import QUEUE_STATES
from ingest.ops.snapshot import Snapshot, SnapshotPoller

if TYPE_CHECKING:
    from ingest.worker import Worker

PREFIX = "hr_ingest"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A batch is one transaction of up to a few hundred runs: milliseconds to seconds.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From a call's end to its rows: seconds with a webhook, a minute or two with sync, days for a
# backfill.
FRESHNESS_BUCKETS = (
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    90.0,
    120.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
    604800.0,
)


class _Collector(Collector):
    """Reads the process's counters and the cached snapshot when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._process()
        yield from self._database()
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_lag_seconds",
            "How late the event loop last woke a short timer: a busy or blocked process.",
            value=self.metrics.loop_lag_s,
        )

    def _process(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            f"{PREFIX}_info",
            "Constant 1, labelled with the version and worker id.",
            labels=["version", "worker"],
        )
        w = self.metrics.worker
        info.add_metric([__version__, w.id if w is not None else ""], 1)
        yield info

        s = w.stats if w is not None else None

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield counter("runs_claimed", "Runs claimed from the queue.", s.claimed if s else 0)
        yield counter(
            "runs_completed", "Runs stored in a terminal state (queue: done).", s.done if s else 0
        )
        yield counter(
            "runs_polled",
            "Runs stored while not terminal upstream; fetched again later.",
            s.polled if s else 0,
        )
        yield counter(
            "runs_retried",
            "Failed attempts put back in the queue for a retry.",
            s.retried if s else 0,
        )
        yield counter("runs_dead_lettered", "Runs given up on (dead letter).", s.dead if s else 0)
        # Labelled by kind (ingest.failures): a small, fixed set of values, each a time series
        # kept forever. The label keeps its first name, `reason`, which dashboards query.
        failed = CounterMetricFamily(
            f"{PREFIX}_runs_failed",
            "Failed attempts by kind (retried or dead-lettered).",
            labels=["reason"],
        )
        for kind, n in sorted(s.failures_by_kind.items()) if s else ():
            failed.add_metric([kind.value], n)
        yield failed
        yield counter("rows_written", "Rows written to the run tables.", s.rows if s else 0)

        http = CounterMetricFamily(
            f"{PREFIX}_http_requests", "API responses by HTTP status.", labels=["status"]
        )
        limiter_wait = 0.0
        if w is not None:
            for status, n in sorted(w.client.responses.items()):
                http.add_metric([str(status)], n)
            limiter = w.client.limiter
            limiter_wait = limiter.wait_seconds_total if limiter is not None else 0.0
        yield http
        yield counter(
            "ratelimit_wait_seconds",
            "Seconds requests spent waiting for the shared rate limiter.",
            limiter_wait,
        )

    def _database(self) -> Iterable[Metric]:
        poller = self.metrics.poller
        snap = poller.latest if poller is not None else None
        queue = GaugeMetricFamily(
            f"{PREFIX}_queue_runs",
            "Runs in the queue by state (whole database).",
            labels=["state"],
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_due_age_seconds",
            "How long the oldest due pending run has waited (0 when none is due).",
        )
        drift = GaugeMetricFamily(
            f"{PREFIX}_schema_drift_runs",
            "Stored runs whose payload showed this kind of schema drift.",
            labels=["kind"],
        )
        if snap is not None:
            for state in QUEUE_STATES:
                queue.add_metric([state], snap.counts.get(state, 0))
            oldest.add_metric([], snap.oldest_due_age_s or 0.0)
            for kind, n in snap.drift:
                drift.add_metric([kind], n)
        yield queue
        yield oldest
        yield drift
        # The worker's own view first: it is what stops its claims, and it is read each second.
        w = self.metrics.worker
        seen = w.paused if w is not None else (snap.paused if snap is not None else None)
        yield GaugeMetricFamily(
            f"{PREFIX}_paused",
            "1 while claiming is paused (`hr-ingest pause`), else 0.",
            value=0 if seen is None else 1,
        )
        yield from _freshness(snap)
        refreshed = GaugeMetricFamily(
            f"{PREFIX}_status_refreshed_timestamp_seconds",
            "When the queue gauges were last read from the database (Unix time).",
        )
        failures = CounterMetricFamily(
            f"{PREFIX}_status_refresh_failures", "Failed reads of the queue gauges."
        )
        if poller is not None:
            if poller.refreshed_at is not None:
                refreshed.add_metric([], poller.refreshed_at)
            failures.add_metric([], poller.failures)
        yield refreshed
        yield failures


def _freshness(snap: Snapshot | None) -> Iterator[Metric]:
    """How current the tables are; an age with nothing to measure (never synced, no run
    unfinished) is left out rather than shown as 0, so that an alert on it cannot pass."""
    last_sync = GaugeMetricFamily(
        f"{PREFIX}_sync_watermark_age_seconds",
        "Seconds since the watermark of the last successful sync (how stale the tables are).",
    )
    failures = GaugeMetricFamily(
        f"{PREFIX}_sync_failures",
        "Syncs failed in a row since the last successful one (0: the last sync succeeded).",
    )
    unfinished = GaugeMetricFamily(
        f"{PREFIX}_oldest_non_terminal_run_age_seconds",
        "Age of the oldest stored run still scheduled or running upstream.",
    )
    if snap is not None:
        f = snap.freshness
        for gauge, age in ((last_sync, f.last_sync), (unfinished, f.oldest_non_terminal)):
            seconds = f.age_s(age)
            if seconds is not None:
                gauge.add_metric([], seconds)
        failures.add_metric([], f.sync_failures)
    yield last_sync
    yield failures
    yield unfinished


class Metrics:
    """The registry of one process: `render()` is the body of `GET /metrics`."""

    def __init__(self, worker: Worker | None = None, poller: SnapshotPoller | None = None) -> None:
        self.worker = worker
        self.poller = poller
        self.loop_lag_s = 0.0  # set by the server's heartbeat
        self.registry = CollectorRegistry()
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_write_seconds",
            "Time to write one batch (rows and queue updates, one transaction).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.run_freshness = Histogram(
            f"{PREFIX}_run_freshness_seconds",
            "From a run's completed_at to when it was first stored finished, by what enqueued"
            " it (webhook, sync, backfill, manual).",
            ["source"],
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )
        for source in ("webhook", "sync", "backfill", "manual"):
            self.run_freshness.labels(source)  # every label shown from the start, at 0
        self.registry.register(_Collector(self))

    def observe_batches(self) -> None:
        """Move the worker's batch timings and landings into the histograms (bounded buffers,
        drained here: the worker never imports prometheus)."""
        if self.worker is None:
            return
        pending = self.worker.stats.batch_seconds
        while pending:
            self.batch_seconds.observe(pending.popleft())
        landed = self.worker.stats.landed
        while landed:
            source, seconds = landed.popleft()
            self.run_freshness.labels(source).observe(seconds)

    def render(self) -> bytes:
        self.observe_batches()
        return generate_latest(self.registry)


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a query can use: `x_total` for counters, `x_bucket` etc. for
    histograms, even for families with no samples yet (a label nobody has hit)."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{x}" for x in ("_bucket", "_count", "_sum"))
    return names
