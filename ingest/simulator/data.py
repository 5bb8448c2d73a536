"""Deterministic synthetic runs, shaped like the HappyRobot API's, rendered to bytes once.

Everything derives from one seed: the use cases and their version pools, every run's id,
status and timeline, and (lazily, from a per-run seed) its sessions, events and issues. A
run's body is rendered on its first fetch and cached; it is re-rendered only when the run
progresses (scheduled -> running -> finished -> reviewed), which happens on each later
successful fetch, or when its content expires. Times are relative to `now` (the wall clock
unless pinned), so `discover --since` windows work; pin `now` too for byte-identical output
across processes.
"""

from __future__ import annotations

import bisect
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import orjson

from ingest.simulator import catalog, events
from ingest.simulator.sessions import (
    SessionPlan,
    expire_session,
    new_uuid,
    plan_sessions,
    session_event,
)

RUN_STATUSES = ("scheduled", "running", "completed", "canceled", "failed")
TERMINAL_STATUSES = ("completed", "canceled", "failed")
# Stages a run goes through, one per successful fetch: the body differs at each.
SCHEDULED, RUNNING, FINISHED, REVIEWED = 0, 1, 2, 3

_USE_CASES = 4
_VERSIONS_PER_USE_CASE = 10
_JSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_uuid = new_uuid


@dataclass
class UseCase:
    id: str
    org_id: str
    versions: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)  # the rest of its GET /use-cases item

    @property
    def retention(self) -> timedelta | None:
        """How long the platform keeps its runs' content; None: forever."""
        days = self.details.get("data_retention_days")
        return None if days is None else timedelta(days=days)

    def item(self) -> dict[str, Any]:
        """Its GET /use-cases item."""
        d = self.details
        return {
            "id": self.id,
            "org_id": self.org_id,
            **{k: d[k] for k in ("icon", "name", "slug", "order")},
            "source_use_case_version_id": self.versions[-1]["id"],
            **{k: d[k] for k in ("run_columns", "timestamp", "data_retention_days", "webhooks")},
            "versions": self.versions,
        }


@dataclass
class SimRun:
    """One run's fixed facts; its events and issues come from `seed` when rendered."""

    id: uuid.UUID
    key: str  # str(id): the path segment, so a lookup needs no UUID parsing
    use_case: UseCase
    version: dict[str, Any]
    seed: int
    timestamp: datetime
    duration_s: float
    final_status: str
    stage: int
    n_events: int
    data: dict[str, Any]
    fetches: int = 0
    body: bytes | None = None  # cache for `stage`; None: render on next fetch
    expired: bool = False  # content deleted early (see RunSet.expire)
    # What a test changed upstream by hand: "annotation" (str | None), "issues" (a list).
    changed: dict[str, Any] = field(default_factory=dict)
    _plans: tuple[tuple[datetime, float], list[SessionPlan]] | None = None

    def sessions(self) -> list[SessionPlan]:
        """Its calls and chats, as the finished run shows them.

        Cached, and planned again when a test moves the run's timeline.
        """
        key = (self.timestamp, self.duration_s)
        if self._plans is None or self._plans[0] != key:
            plans = plan_sessions(self.seed, self.n_events, self.timestamp, self.duration_s)
            self._plans = (key, plans)
        return self._plans[1]

    @property
    def status(self) -> str:
        return ("scheduled", "running")[self.stage] if self.stage < FINISHED else self.final_status

    @property
    def completed_at(self) -> datetime | None:
        if self.stage < FINISHED:
            return None
        return self.timestamp + timedelta(seconds=self.duration_s)

    @property
    def annotation(self) -> str | None:
        if "annotation" in self.changed:
            return cast(str | None, self.changed["annotation"])
        if self.stage < FINISHED or self.seed % 7 == 0:
            return None
        return ("correct", "correct", "correct", "incorrect", "critical")[self.seed % 5]


@dataclass
class RunSet:
    """The simulated organisation's runs, ordered by timestamp for GET /runs."""

    seed: int
    now: datetime
    webhook_secret: str | None = None  # None: one drawn from the seed
    org_id: str = field(init=False)
    use_cases: list[UseCase] = field(init=False)
    by_key: dict[str, SimRun] = field(init=False, default_factory=dict)
    _order: list[tuple[datetime, str]] = field(init=False, default_factory=list)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.org_id = _uuid(self._rng)
        # Catalog details draw from their own stream: the main one stays today's run stream.
        details = random.Random(f"catalog-{self.seed}")
        if self.webhook_secret is None:
            self.webhook_secret = f"whsec_{details.getrandbits(160):040x}"
        self.use_cases = [self._use_case(i, details) for i in range(_USE_CASES)]
        self._use_cases_body: bytes | None = None

    def _use_case(self, index: int, details: random.Random) -> UseCase:
        rng, uc_id = self._rng, _uuid(self._rng)
        author = _uuid(rng)
        versions: list[dict[str, Any]] = []
        start = self.now - timedelta(days=90)
        for n in range(1, _VERSIONS_PER_USE_CASE + 1):
            created = start + timedelta(days=8 * n, seconds=rng.randrange(86400))
            published = rng.random() < 0.8
            versions.append(
                {
                    "id": _uuid(rng),
                    "slug": f"v{n}-{rng.choice(events.WORDS)}",
                    "org_id": self.org_id,
                    "use_case_id": uc_id,
                    "version_number": n,
                    "name": f"Version {n}",
                    "is_published": published,
                    "is_live": n == _VERSIONS_PER_USE_CASE,
                    # Drafts tried out before going live; the live one is production.
                    "environment": "staging"
                    if n < _VERSIONS_PER_USE_CASE and details.random() < 0.25
                    else "production",
                    "source_version_id": versions[-1]["id"] if versions else None,
                    "timestamp": created,
                    "published_at": created + timedelta(hours=2) if published else None,
                    "is_deleted": False,
                    "description": events.sentence(rng, 12) if rng.random() < 0.7 else None,
                    "created_by": author,
                }
            )
        assert self.webhook_secret is not None
        info = catalog.details(index, details, self.now, self.webhook_secret)
        return UseCase(uc_id, self.org_id, versions, info)

    def add(self, n: int, *, start: datetime, end: datetime) -> list[SimRun]:
        """n new runs with timestamps spread over [start, end]."""
        rng, span = self._rng, max((end - start).total_seconds(), 0.0)
        added = []
        for _ in range(n):
            uc = rng.choice(self.use_cases)
            # Recent versions carry most traffic, so many runs share each version.
            version = uc.versions[-1 - min(int(rng.expovariate(0.6)), _VERSIONS_PER_USE_CASE - 1)]
            roll = rng.random()
            final = "completed" if roll < 0.85 else "failed" if roll < 0.93 else "canceled"
            stage_roll = rng.random()
            stage = SCHEDULED if stage_roll < 0.04 else RUNNING if stage_roll < 0.08 else FINISHED
            key = _uuid(rng)
            run = SimRun(
                id=uuid.UUID(key),
                key=key,
                use_case=uc,
                version=version,
                seed=rng.getrandbits(63),
                timestamp=start + timedelta(seconds=rng.random() * span),
                duration_s=rng.uniform(30, 900),
                final_status=final,
                stage=stage,
                n_events=rng.randint(20, 40),
                data={
                    "load_id": f"L{rng.randrange(10**6):06d}",
                    "carrier_mc": rng.randrange(100000, 999999),
                    "rate_usd": round(rng.uniform(400, 4000), 2),
                    "lane": f"{rng.choice(events.WORDS)}-{rng.choice(events.WORDS)}",
                },
            )
            self.by_key[run.key] = run
            bisect.insort(self._order, (run.timestamp, run.key))
            added.append(run)
        return added

    def __len__(self) -> int:
        return len(self.by_key)

    def ids(self) -> list[uuid.UUID]:
        return [self.by_key[key].id for _, key in self._order]

    def body(self, run: SimRun) -> bytes:
        """The body at the run's current stage, without moving it on."""
        if run.body is None:
            run.body = orjson.dumps(render_run(run, expired=self.is_expired(run)), option=_JSON)
        return run.body

    def is_expired(self, run: SimRun) -> bool:
        """Whether the platform has deleted the run's content: by hand, or by retention."""
        retention = run.use_case.retention
        return run.expired or (retention is not None and run.timestamp < self.now - retention)

    def expire(self, run: SimRun) -> None:
        """From now on the run's content is deleted, as retention does on the platform."""
        run.expired = True
        run.body = None

    def use_cases_body(self) -> bytes:
        """GET /use-cases, rendered once: the catalog does not change while serving."""
        if self._use_cases_body is None:
            items = [uc.item() for uc in self.use_cases]
            self._use_cases_body = orjson.dumps(items, option=_JSON)
        return self._use_cases_body

    def issues(self, *, use_case_id: str | None, run_id: str | None) -> list[dict[str, Any]]:
        """GET /issues: the issues of finished runs, oldest run first."""
        if run_id is not None:
            run = self.by_key.get(run_id)
            runs = [] if run is None else [run]
        else:
            runs = [self.by_key[key] for _, key in self._order]
        return [
            issue
            for run in runs
            if use_case_id in (None, run.use_case.id)
            for issue in run_issues(run)
        ]

    def usage(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """GET /usage: the sessions of finished runs (billed once a call is over), per day."""
        sessions = (
            (run.use_case.id, plan.start, plan.duration)
            for run in self.by_key.values()
            if run.stage >= FINISHED
            for plan in run.sessions()
        )
        use_case_ids = [uc.id for uc in self.use_cases]
        return catalog.usage_rows(self.org_id, sessions, use_case_ids, start, end)

    def change(self, run: SimRun, **changes: Any) -> None:
        """Change a run upstream, as its users would: `annotation=`, `data=`, `issues=` (the
        whole list), or `stage=` (its status moves on). Served by both endpoints from now on."""
        for name, value in changes.items():
            if name == "data":
                run.data = value
            elif name == "stage":
                run.stage = value
            elif name in ("annotation", "issues"):
                run.changed[name] = value
            else:
                raise ValueError(f"cannot change {name!r}")
        run.body = None

    def fetch(self, run: SimRun) -> bytes:
        """The body for this successful fetch; the run then moves on a stage for the next one."""
        run.fetches += 1
        body = self.body(run)
        if run.stage < REVIEWED:
            run.stage += 1
            run.body = None
        return body

    def query(
        self,
        *,
        limit: int,
        offset: int,
        use_case_id: str | None,
        status: str | None,
        start: datetime | None,
        end: datetime | None,
        completed_start: datetime | None,
        completed_end: datetime | None,
        descending: bool,
    ) -> list[dict[str, Any]]:
        """One page of GET /runs; time bounds are inclusive at both ends."""
        lo = 0 if start is None else bisect.bisect_left(self._order, (start, ""))
        hi = len(self._order)
        if end is not None:
            hi = bisect.bisect_right(self._order, (end, "\uffff"))
        indexes: Iterator[int] = iter(range(hi - 1, lo - 1, -1) if descending else range(lo, hi))
        page: list[dict[str, Any]] = []
        skipped = 0
        for i in indexes:
            run = self.by_key[self._order[i][1]]
            if use_case_id is not None and run.use_case.id != use_case_id:
                continue
            if status is not None and run.status != status:
                continue
            if completed_start is not None or completed_end is not None:
                done = run.completed_at
                if done is None:
                    continue
                if (completed_start is not None and done < completed_start) or (
                    completed_end is not None and done > completed_end
                ):
                    continue
            if skipped < offset:
                skipped += 1
                continue
            page.append(list_item(run))
            if len(page) >= limit:
                break
        return page


def _run_fields(run: SimRun) -> dict[str, Any]:
    """The fields both endpoints give for a run."""
    return {
        "id": run.id,
        "org_id": run.use_case.org_id,
        "use_case_id": run.use_case.id,
        "version_id": run.version["id"],
        "status": run.status,
        "annotation": run.annotation,
        "timestamp": run.timestamp,
        "completed_at": run.completed_at,
    }


def list_item(run: SimRun) -> dict[str, Any]:
    # Only GET /runs gives the run-table variables.
    return {**_run_fields(run), "data": run.data}


def render_run(run: SimRun, *, expired: bool = False) -> dict[str, Any]:
    """The GET /runs/{id} body at the run's current stage (deterministic from run.seed).

    `expired`: as the platform shows it once retention deleted its content.
    """
    rng = random.Random(run.seed)
    plans = run.sessions()
    cut = _running_cut(run, plans)
    # Draw every event even when only a prefix is visible: a run's first events never change.
    by_seq = {plan.seq: plan for plan in plans}
    drawn = [
        session_event(rng, by_seq[seq], cut)
        if seq in by_seq
        else events.action_event(rng, run, seq, plans)
        for seq in range(run.n_events)
    ]
    body: dict[str, Any] = {
        **_run_fields(run),
        "events": drawn[: _visible(run, drawn, cut)],
        "issues": run_issues(run),
        "version": run.version,
    }
    if expired:
        _expire(body["events"])
    # Every documented field is there (null where the description allows it), as the public
    # description promises; payloads with absences and nulls seen in practice are the tests'
    # (set_payload), so that what the simulator serves by default is what the API says.
    return body


def run_issues(run: SimRun) -> list[dict[str, Any]]:
    """The run's issues as the platform shows them now: none before it finishes, open until it
    is reviewed; or what a test set (RunSet.change)."""
    if "issues" in run.changed:
        return cast(list[dict[str, Any]], run.changed["issues"])
    return events.issues(run, reviewed=run.stage >= REVIEWED) if run.stage >= FINISHED else []


def _running_cut(run: SimRun, plans: list[SessionPlan]) -> datetime | None:
    """The moment a running run is seen at: halfway through its first call (None otherwise)."""
    if run.stage != RUNNING or not plans:
        return None
    return plans[0].start + timedelta(seconds=plans[0].duration / 2)


def _visible(run: SimRun, events: list[dict[str, Any]], cut: datetime | None) -> int:
    """How many of the drawn events the run shows at its stage."""
    if run.stage == SCHEDULED:
        return 0
    if run.stage > RUNNING:
        return len(events)
    if cut is None:
        return run.n_events // 2
    return bisect.bisect_right([e["timestamp"] for e in events], cut)


def _expire(events: list[dict[str, Any]]) -> None:
    """Retention's view: outputs, intermediate data and transcripts emptied, marked deleted."""
    for event in events:
        if event["type"] == "session":
            expire_session(event)
            continue
        event["output"] = {}
        intermediate = event.get("intermediate")
        if intermediate:
            intermediate["data"] = {}
            intermediate["data_deleted"] = True
