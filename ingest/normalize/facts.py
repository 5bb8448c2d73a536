"""What the dashboards say about a run and each of its calls, computed once, from the rows a
body becomes, and stored with them (runs, run_sessions) in the same transaction.

The `bi_*` views used to compute these on every query by scanning the run's events, sessions
and messages: ~1 s per dashboard chart at a million runs. Each figure here is defined exactly as
that SQL defined it (migration 0004), so stored and recomputed agree; tests check them against
the child rows after insert, re-ingest and reprocess.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import orjson

from ingest.normalize.rows import EventRow, IssueRow, MessageRow, RunRow, SessionRow, ToolCallRow

# bi_calls' rule: no SIP code, an empty one, or a 2xx (SIP's "answered") is a connected call.
# PostgreSQL's btrim() trims spaces only, hence strip(" ").
_ANSWERED = re.compile(r"(2[0-9][0-9])?")


def connected(sip_code: str | None) -> bool:
    """Whether a session connected (the API leaves sip_code null when it did)."""
    return sip_code is None or _ANSWERED.fullmatch(sip_code.strip(" ")) is not None


def percentiles(values: Sequence[float], fractions: Sequence[float]) -> list[float | None]:
    """PostgreSQL's `percentile_cont(fractions) WITHIN GROUP (ORDER BY v)` (nulls left out by
    the caller), with its arithmetic, so that the stored figure equals the SQL one bit for bit."""
    ordered = sorted(values)
    count = len(ordered)
    out: list[float | None] = []
    for fraction in fractions:
        if not ordered:
            out.append(None)
            continue
        position = fraction * (count - 1)
        first, second = math.floor(position), math.ceil(position)
        low = ordered[first]
        out.append(low if second == first else low + (position - first) * (ordered[second] - low))
    return out


_P50_P95 = (0.5, 0.95)


def turn_latency(message: MessageRow) -> float | None:
    """A turn's whole wait: the sum of its latency stages, a missing stage counted as 0; None
    when the turn has no breakdown at all (user, tool and event turns), so it is left out of
    the percentiles instead of pulling them down."""
    total: float | None = None
    # Added in this order, as the SQL did (floating-point sums depend on it).
    for stage in (
        message.latency_network,
        message.latency_initial_wait,
        message.latency_transcriber,
        message.latency_eos,
        message.latency_eos_wait,
        message.latency_llm,
        message.latency_tts,
    ):
        if stage is not None:
            total = stage if total is None else total + stage
        elif total is not None:
            total = total + 0.0
    return total


def fill_session(
    session: SessionRow, messages: Sequence[MessageRow], tool_calls: Sequence[ToolCallRow]
) -> None:
    """Set a session's figures from its own messages and tool calls (one pass: this runs for
    every call the worker stores)."""
    roles: Counter[str | None] = Counter()
    interruptions = fillers = natural_cuts = 0
    first: datetime | None = None
    llm: list[float] = []
    tts: list[float] = []
    turns: list[float] = []
    for m in messages:
        roles[m.role] += 1
        if m.role == "assistant" and m.timestamp is not None:
            first = m.timestamp if first is None or m.timestamp < first else first
        interruptions += m.is_interrupted is True
        fillers += m.is_filler is True
        natural_cuts += m.is_natural_cut is True
        if m.latency_llm is not None:
            llm.append(m.latency_llm)
        if m.latency_tts is not None:
            tts.append(m.latency_tts)
        turn = turn_latency(m)
        if turn is not None:
            turns.append(turn)
    session.messages = len(messages)
    session.assistant_turns = roles["assistant"]
    session.user_turns = roles["user"]
    session.tool_turns = roles["tool"]
    session.event_turns = roles["event"]
    session.interruptions, session.fillers, session.natural_cuts = (
        interruptions,
        fillers,
        natural_cuts,
    )
    session.tool_calls = len(tool_calls)
    by_name = Counter(call.name for call in tool_calls)
    session.tools = orjson.dumps(
        sorted(by_name.items(), key=lambda item: (item[0] is not None, item[0] or ""))
    ).decode()
    session.first_assistant_at = first
    session.latency_llm_p50, session.latency_llm_p95 = percentiles(llm, _P50_P95)
    session.latency_tts_p50, session.latency_tts_p95 = percentiles(tts, _P50_P95)
    session.latency_turn_p50, session.latency_turn_p95 = percentiles(turns, _P50_P95)


def fill_run(
    run: RunRow,
    events: Sequence[EventRow],
    sessions: Sequence[SessionRow],
    issues: Sequence[IssueRow],
) -> None:
    """Set a run's figures from its events, sessions and issues. Its calls and issues carry
    the run's use case and version, so that their dashboards and daily counts need no join to
    runs (which a cascaded delete has already emptied when their counts are taken)."""
    times = [e.timestamp for e in events if e.timestamp is not None]
    run.event_count = len(events)
    run.first_event_at = min(times) if times else None
    run.last_event_at = max(times) if times else None
    run.issue_count = len(issues)
    run.session_count = len(sessions)
    durations = [s.duration for s in sessions if s.duration is not None]
    run.call_duration = sum(durations) if durations else None
    run.any_connected = any(connected(s.sip_code) for s in sessions) if sessions else None
    for session in sessions:
        session.use_case_id = run.use_case_id
        session.version_id = run.version_id
    for issue in issues:
        issue.counted_use_case_id = issue.use_case_id or run.use_case_id
        issue.counted_version_id = issue.run_version_id or run.version_id
