"""What a simulated run says: its action events, its issues, and the words they are made of.

Drawn from a run's own seed, so the same run always says the same thing.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ingest.simulator.sessions import SessionPlan, new_uuid

if TYPE_CHECKING:
    from ingest.simulator.data import SimRun

_uuid = new_uuid
# Issues come from a stream of their own, so GET /issues lists them without rendering events.
_ISSUE_SALT = 0x1550E5
_INTEGRATIONS = ("twilio", "openai", "deepgram", "salesforce", "mcleod", "webhook", "email")
_EVENT_NAMES = (
    "call_started",
    "transcript_chunk",
    "llm_response",
    "tool_call",
    "load_lookup",
    "rate_negotiation",
    "transfer",
    "call_ended",
)
WORDS = [
    "load",
    "carrier",
    "rate",
    "lane",
    "pickup",
    "delivery",
    "dispatcher",
    "broker",
    "trailer",
    "reefer",
    "dry",
    "van",
    "flatbed",
    "miles",
    "eta",
    "confirm",
    "booking",
    "detention",
    "lumper",
    "invoice",
    "driver",
]
# Text comes from a fixed pool: drawing words one by one made rendering cost ~1 ms per run,
# too slow for a simulator sharing two cores with a pipeline doing 800 runs/s.
_POOL_RNG = random.Random(0)
_TEXT_POOL = [
    [" ".join(_POOL_RNG.choice(WORDS) for _ in range(n)) for _ in range(16)] for n in range(61)
]


def sentence(rng: random.Random, words: int) -> str:
    return _TEXT_POOL[words][rng.getrandbits(4)]


def _session_id(rng: random.Random, plans: list[SessionPlan], at: datetime) -> str:
    """The session an action belongs to: the last call started by then, else the first one."""
    current = None
    for plan in plans:
        if plan.start <= at or current is None:
            current = plan
    if current is None:
        return _uuid(rng)
    return current.message_session_id or current.chat_session_id or _uuid(rng)


def action_event(
    rng: random.Random, run: SimRun, seq: int, plans: list[SessionPlan]
) -> dict[str, Any]:
    """An `action` event: an integration's output, usually with its intermediate."""
    at = run.timestamp + timedelta(seconds=run.duration_s * (seq + rng.random()) / run.n_events)
    event: dict[str, Any] = {
        "type": "action",
        "timestamp": at,
        "integration_name": rng.choice(_INTEGRATIONS),
        "event_name": rng.choice(_EVENT_NAMES),
        "intermediate": None,
        "output": {
            "text": sentence(rng, rng.randint(8, 40)),
            "confidence": round(rng.random(), 4),
            "tokens": rng.randint(10, 900),
        },
        "node_id": f"node-{rng.randrange(64)}",
    }
    roll = rng.random()
    if roll < 0.85:
        event["intermediate"] = {
            "id": _uuid(rng),
            "run_id": run.id,
            "node_id": _uuid(rng),
            "event_id": _uuid(rng),
            "session_id": _session_id(rng, plans, at),
            "name": rng.choice(_EVENT_NAMES),
            "data": {
                "prompt": sentence(rng, rng.randint(10, 60)),
                "latency_ms": round(rng.uniform(20, 2500), 1),
                "params": {"temperature": round(rng.random(), 2), "model": "gpt-4o"},
            },
            "error": "upstream timeout" if rng.random() < 0.03 else None,
            "timestamp": at,
            "data_deleted": False,
        }
    elif roll < 0.92:
        del event["intermediate"]  # the one field the description marks optional
    return event


def issues(run: SimRun, *, reviewed: bool) -> list[dict[str, Any]]:
    """The run's issues (from a stream of their own, so that GET /issues lists them without
    rendering events); open until the run is `reviewed`."""
    rng = random.Random(run.seed ^ _ISSUE_SALT)
    issues = []
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3, 4))):
        created = run.timestamp + timedelta(seconds=run.duration_s + rng.uniform(60, 7200))
        # Drawn whatever the stage, so later draws (the ids) stay the same once reviewed.
        outcome = rng.choice(("approved", "closed", "rejected"))
        issues.append(
            {
                "id": _uuid(rng),
                "use_case_id": run.use_case.id,
                "org_id": run.use_case.org_id,
                "run_id": run.id,
                "run_version_id": run.version["id"],
                "status": outcome if reviewed else "open",
                "priority": rng.choice(("low", "medium", "high")),
                "created_at": created,
                "type": rng.choice(
                    (
                        "transcriber",
                        "message",
                        "tool_call",
                        "end_of_sentence",
                        "run",
                        "interruption",
                    )
                ),
                "updated_at": created + timedelta(hours=1 if reviewed else 0),
                "assignee": _uuid(rng) if rng.random() < 0.6 else None,
                "created_by": _uuid(rng),
                "updated_by": _uuid(rng),
                "message_id": _uuid(rng) if rng.random() < 0.5 else None,
                "correction": sentence(rng, 10) if rng.random() < 0.4 else None,
                "correction_reason": sentence(rng, 6) if rng.random() < 0.3 else None,
                "northstar_id": None,
            }
        )
    return issues
