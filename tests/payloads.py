"""Run payloads shaped like `GET /runs/{id}` (see happyrobot-api.md), for tests and benchmarks.

- `make_run_payload(rng, ...)`: a realistic, well-formed body, deterministic for a seeded rng.
- `run_payloads()`: a hypothesis strategy over the whole shape (action and session events,
  messages, tool calls, latency breakdowns), odd cases included (nulls, missing fields, new
  enumeration values, unknown fields and event types, long strings, NUL characters, timestamps
  with offsets or no zone, numbers/booleans as strings, duplicate issue ids, issues claiming
  another run). Every body it draws is one that normalize must store, not refuse.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

RUN_STATUSES = ["scheduled", "running", "completed", "canceled", "failed"]
ANNOTATIONS = ["correct", "incorrect", "critical"]
ISSUE_STATUSES = ["open", "approved", "rejected", "closed"]
ISSUE_PRIORITIES = ["low", "medium", "high"]
ISSUE_TYPES = ["transcriber", "message", "tool_call", "end_of_sentence", "run", "interruption"]
ROLES = ["assistant", "user", "tool", "event"]
ENVIRONMENTS = ["staging", "production"]
LATENCY_STAGES = ["network", "initial_wait", "transcriber", "eos", "eos_wait", "llm", "tts"]
_TOOLS = ["find_load", "verify_carrier", "book_load", "log_offer", "transfer_call"]

_INTEGRATIONS = ["twilio", "openai", "deepgram", "elevenlabs", "mcleod", "webhook", "sms"]
_EVENT_NAMES = ["call_started", "transcript", "tool_call", "llm_response", "transfer", "hangup"]
_WORDS = [
    "load",
    "pickup",
    "delivery",
    "rate",
    "carrier",
    "broker",
    "dispatch",
    "truck",
    "trailer",
    "reefer",
    "dry",
    "van",
    "lane",
    "miles",
    "appointment",
    "confirmed",
    "driver",
    "eta",
    "detention",
    "lumper",
    "invoice",
    "quote",
    "booked",
]


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def make_version(
    rng: random.Random, org_id: str | None = None, use_case_id: str | None = None
) -> dict[str, Any]:
    """A published version body, as found under a run's `version`."""
    created = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000))
    number = rng.randrange(1, 200)
    return {
        "id": _uid(rng),
        "slug": f"carrier-sales-v{number}",
        "org_id": org_id or _uid(rng),
        "use_case_id": use_case_id or _uid(rng),
        "version_number": number,
        "name": f"Carrier sales v{number}",
        "is_published": True,
        "is_live": rng.random() < 0.3,
        "source_version_id": _uid(rng) if rng.random() < 0.7 else None,
        "timestamp": _iso(created),
        "published_at": _iso(created + timedelta(hours=1)),
        "is_deleted": False,
        "description": _sentence(rng, 12),
        "created_by": _uid(rng),
        "environment": "production" if rng.random() < 0.8 else "staging",
    }


def _event(rng: random.Random, run_id: str, at: datetime, nodes: list[str], session: str) -> Any:
    node = rng.choice(nodes)
    event: dict[str, Any] = {
        "type": "action",
        "timestamp": _iso(at),
        "integration_name": rng.choice(_INTEGRATIONS),
        "event_name": rng.choice(_EVENT_NAMES),
        "output": {
            "text": _sentence(rng, rng.randrange(5, 40)),
            "confidence": round(rng.random(), 4),
            "tokens": rng.randrange(10, 800),
            "tool": {"name": rng.choice(_EVENT_NAMES), "ok": rng.random() < 0.95},
        },
        "node_id": node,
    }
    event["intermediate"] = {
        "id": _uid(rng),
        "run_id": run_id,
        "node_id": node,
        "event_id": _uid(rng),
        "session_id": session,
        "name": event["event_name"],
        "data": {"input": _sentence(rng, rng.randrange(3, 20)), "step": rng.randrange(100)},
        "error": "timeout calling tool" if rng.random() < 0.03 else None,
        "timestamp": _iso(at + timedelta(milliseconds=rng.randrange(1, 900))),
        "data_deleted": False,
    }
    return event


def _message(rng: random.Random, at: datetime, role: str, session: str) -> dict[str, Any]:
    calls = None
    if role == "assistant" and rng.random() < 0.25:
        reference = rng.randrange(100_000, 999_999)
        calls = [
            {
                "function": {
                    "name": rng.choice(_TOOLS),
                    "arguments": f'{{"reference_number": "{reference}"}}',
                }
            }
        ]
    latency = None
    if role == "assistant":
        latency = {stage: round(rng.uniform(5, 600), 1) for stage in LATENCY_STAGES}
    return {
        "id": _uid(rng),
        "session_id": session,
        "chat_session_id": None,
        "role": role,
        "content": _sentence(rng, rng.randrange(4, 30)),
        "tool_calls": calls,
        "name": calls[0]["function"]["name"] if role == "tool" and calls else None,
        "is_filler": rng.random() < 0.05,
        "is_interrupted": rng.random() < 0.08,
        "is_natural_cut": rng.random() < 0.05,
        "latency_breakdown": latency,
        "timestamp": _iso(at),
        "data_deleted": False,
    }


def make_session(rng: random.Random, at: datetime, messages: int = 20) -> dict[str, Any]:
    """A connected call's `session` event with `messages` turns (none: a failed call)."""
    session = _uid(rng)
    turns = [
        _message(rng, at + timedelta(seconds=4 * i), "assistant" if i % 2 == 0 else "user", session)
        for i in range(messages)
    ]
    failed = messages == 0
    return {
        "type": "session",
        "id": session,
        "timestamp": _iso(at),
        "duration": 0.0 if failed else round(4.0 * messages + rng.random(), 3),
        "sip_code": "486" if failed else None,
        "sip_reason": "Busy Here" if failed else None,
        "actions": [{"type": "transfer", "ok": True}] if rng.random() < 0.1 else [],
        "messages": turns,
    }


def _issue(rng: random.Random, run: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "id": _uid(rng),
        "use_case_id": run["use_case_id"],
        "org_id": run["org_id"],
        "run_id": run["id"],
        "run_version_id": run["version_id"],
        "status": rng.choice(ISSUE_STATUSES),
        "priority": rng.choice(ISSUE_PRIORITIES),
        "created_at": _iso(at),
        "type": rng.choice(ISSUE_TYPES),
        "updated_at": _iso(at + timedelta(hours=rng.randrange(48))),
        "assignee": _uid(rng),
        "created_by": _uid(rng),
        "updated_by": _uid(rng),
        "message_id": _uid(rng),
        "correction": _sentence(rng, 10),
        "correction_reason": _sentence(rng, 6),
        "northstar_id": _uid(rng) if rng.random() < 0.5 else None,
    }


def make_run_payload(
    rng: random.Random,
    run_id: uuid.UUID | None = None,
    events: int = 30,
    issues: int = 2,
    version_pool: list[dict[str, Any]] | None = None,
    status: str = "completed",
    sessions: int = 1,
    messages: int = 20,
) -> dict[str, Any]:
    """A realistic run body; its version is drawn from `version_pool` when one is given.

    `events` action events, then `sessions` calls of `messages` turns each (last, so that a
    test may cut the action events without touching them).
    """
    version = rng.choice(version_pool) if version_pool else make_version(rng)
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(30_000_000))
    run: dict[str, Any] = {
        "id": str(run_id) if run_id else _uid(rng),
        "org_id": version["org_id"],
        "use_case_id": version["use_case_id"],
        "version_id": version["id"],
        "status": status,
        "annotation": rng.choice(ANNOTATIONS) if status == "completed" else None,
        "timestamp": _iso(start),
        "completed_at": (
            _iso(start + timedelta(seconds=2 * events + 90)) if status == "completed" else None
        ),
    }
    nodes = [_uid(rng) for _ in range(6)]
    session = _uid(rng)
    run["events"] = [
        _event(rng, run["id"], start + timedelta(seconds=2 * i), nodes, session)
        for i in range(events)
    ] + [make_session(rng, start + timedelta(seconds=60 * i), messages) for i in range(sessions)]
    run["issues"] = [_issue(rng, run, start + timedelta(minutes=5)) for _ in range(issues)]
    run["version"] = version
    return run


# --- hypothesis ---------------------------------------------------------------------------------

# Text a payload may carry, NUL included (normalize strips it from the relational rows).
_text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(["", "\x00", "a\x00b"])
_long_text = st.text(st.characters(codec="utf-8"), min_size=257, max_size=400)
_uuids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_json_objects = st.dictionaries(_text, _json, max_size=4)


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)))
    zone = draw(
        st.sampled_from(["Z", "utc", "naive"])
        | st.integers(-14 * 60, 14 * 60).map(lambda m: timedelta(minutes=m))
    )
    if zone == "naive":
        return moment.isoformat()
    if zone == "Z":
        return moment.isoformat() + "Z"
    if zone == "utc":
        return moment.replace(tzinfo=UTC).isoformat()
    assert isinstance(zone, timedelta)
    return moment.replace(tzinfo=timezone(zone)).isoformat()


def _enum(values: list[str]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values) | st.sampled_from(["paused", "escalated", "Completed"])


def _bool() -> st.SearchStrategy[Any]:
    return st.booleans() | st.sampled_from(["true", "false", "True", "0", "1", 0, 1])


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def _object(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """Each field present, null or missing; sometimes an unknown extra field too."""
    out: dict[str, Any] = {}
    for name, strategy in fields.items():
        presence = draw(st.integers(0, 9))  # missing one time in ten, null one in ten
        if presence > 0:
            out[name] = None if presence == 1 else draw(strategy)
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.sampled_from(["extra", "new_field", "x"]))] = draw(_json)
    return out


def _version_fields(ids: st.SearchStrategy[str]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "id": ids,
        "slug": _text | _long_text,
        "org_id": _uuids,
        "use_case_id": _uuids,
        "version_number": st.integers(-(2**31), 2**31 - 1) | st.integers(0, 999).map(str),
        "name": _text | _long_text,
        "is_published": _bool(),
        "is_live": _bool(),
        "source_version_id": _uuids,
        "timestamp": _timestamps(),
        "published_at": _timestamps(),
        "is_deleted": _bool(),
        "description": _text,
        "created_by": _uuids,
        "environment": _enum(ENVIRONMENTS),
    }


def _intermediate_fields(run_id: str) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "id": _uuids,
        "run_id": st.just(run_id) | _uuids,
        "node_id": _uuids,
        "event_id": _uuids,
        "session_id": _uuids,
        "name": _text,
        "data": _json,
        "error": _text | st.integers(-(2**63), 2**63 - 1),
        "timestamp": _timestamps(),
        "data_deleted": _bool(),
    }


# Numbers as sent: floats, integers (beyond 2**53 too: stored rounded), numeric strings.
_numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(-1e6, 1e6).map(str)
)


def _message_fields() -> dict[str, st.SearchStrategy[Any]]:
    function = _object({"name": _text, "arguments": _text | _json})
    return {
        "id": _uuids,
        "session_id": _uuids,
        "chat_session_id": _uuids,
        "role": _enum(ROLES),
        "content": _text | _long_text,
        "tool_calls": st.lists(_object({"function": function}) | st.none(), max_size=2),
        "name": _text,
        "is_filler": _bool(),
        "is_interrupted": _bool(),
        "is_natural_cut": _bool(),
        "latency_breakdown": _object({stage: _numbers for stage in LATENCY_STAGES}),
        "timestamp": _timestamps(),
        "data_deleted": _bool(),
    }


def _session_fields() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "type": st.just("session"),
        # text in the table: a UUID, a provider's own id, or any JSON value as its JSON text
        "id": _uuids | _text | st.integers(0, 10**12),
        "timestamp": _timestamps(),
        "duration": _numbers,
        "sip_code": _text | st.integers(100, 699),
        "sip_reason": _text,
        "actions": _json,
        "messages": st.lists(_object(_message_fields()) | st.none(), max_size=3),
    }


def _event_fields(run_id: str) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "type": st.just("action") | _text,
        "timestamp": _timestamps(),
        "integration_name": _text | _long_text,
        "event_name": _text | _long_text,
        "intermediate": _object(_intermediate_fields(run_id)),
        "output": _json_objects | _json,
        "node_id": _text | _uuids,
    }


def _issue_fields(run_id: str, ids: st.SearchStrategy[str]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "id": ids,
        "use_case_id": _uuids,
        "org_id": _uuids,
        "run_id": st.just(run_id) | _uuids,
        "run_version_id": _uuids,
        "status": _enum(ISSUE_STATUSES),
        "priority": _enum(ISSUE_PRIORITIES),
        "created_at": _timestamps(),
        "type": _enum(ISSUE_TYPES),
        "updated_at": _timestamps(),
        "assignee": _uuids,
        "created_by": _uuids,
        "updated_by": _uuids,
        "message_id": _uuids,
        "correction": _text | _long_text,
        "correction_reason": _text,
        "northstar_id": _uuids,
    }


@st.composite
def run_payloads(draw: st.DrawFn, max_events: int = 4, max_issues: int = 3) -> dict[str, Any]:
    """A run body (as a dict, before JSON encoding) covering the whole shape and its odd cases."""
    run_id = draw(st.uuids()).hex if draw(st.integers(0, 9)) == 0 else str(draw(st.uuids()))
    body = draw(
        _object(
            {
                "org_id": _uuids,
                "use_case_id": _uuids,
                "version_id": _uuids,
                "status": _enum(RUN_STATUSES),
                "annotation": _enum(ANNOTATIONS),
                "timestamp": _timestamps(),
                "completed_at": _timestamps(),
            }
        )
    )
    body["id"] = run_id
    # A few issue ids, so that duplicates within one run happen.
    issue_ids = st.sampled_from([str(draw(st.uuids())) for _ in range(3)])
    parts = {
        "events": st.lists(
            _object(_event_fields(run_id)) | _object(_session_fields()) | st.none(),
            max_size=max_events,
        ),
        "issues": st.lists(
            _object(_issue_fields(run_id, issue_ids)) | st.none(), max_size=max_issues
        ),
        "version": _object(_version_fields(_uuids)),
    }
    body.update(draw(_object(parts)))
    return body
