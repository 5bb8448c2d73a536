"""A simulated run's calls and chats: `session` events with freight-brokerage transcripts.

Conversations are scripted once at import into a fixed pool (a carrier calling about a posted
load: lookup, MC verification, rate talk, booking or transfer), so rendering a session only
stamps ids, times, flags and latencies on a pooled script. Drawing text per message would cost
more than the rest of a run, and the simulator shares two cores with the pipeline it feeds.

A run's sessions are planned apart from its rendering (`plan_sessions`, from its own seed
stream): their places, ids, kinds and durations are known without rendering a body, which is
what GET /usage sums.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# SIP outcomes of calls that never connected, with their standard reason phrases.
SIP_FAILURES = (
    ("486", "Busy Here"),
    ("480", "Temporarily Unavailable"),
    ("404", "Not Found"),
    ("603", "Decline"),
    ("408", "Request Timeout"),
)
VOICE, CHAT, FAILED = "voice", "chat", "failed"
# Salt for the plan's seed stream, so it never overlaps the body's random.Random(seed).
_PLAN_SALT = 0x5E55_10E5
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_uuid(rng: random.Random) -> str:
    """A random version-4 UUID as text (uuid.UUID objects cost a third of rendering time)."""
    h = f"{rng.getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- the script pool ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    role: str  # assistant | user | tool | event
    content: str
    tool_calls: list[dict[str, Any]] | None
    name: str | None
    is_filler: bool
    at: float  # seconds from the session's start at a natural pace


@dataclass(frozen=True)
class Script:
    turns: tuple[Turn, ...]
    seconds: float  # natural length of the whole conversation
    tools: tuple[tuple[int, str], ...]  # (turn index, tool name) of each tool call


_CITIES = (
    "Dallas, TX",
    "Atlanta, GA",
    "Chicago, IL",
    "Laredo, TX",
    "Memphis, TN",
    "Columbus, OH",
    "Ontario, CA",
    "Phoenix, AZ",
    "Denver, CO",
    "Charlotte, NC",
    "Joliet, IL",
    "Savannah, GA",
    "Fresno, CA",
    "Indianapolis, IN",
    "Kansas City, MO",
    "Harrisburg, PA",
    "Salt Lake City, UT",
    "Nashville, TN",
)
_EQUIPMENT = ("53-foot dry van", "reefer", "flatbed", "step deck", "power only")
_COMMODITIES = (
    "paper products",
    "frozen poultry",
    "steel coils",
    "canned beverages",
    "auto parts",
    "fresh produce",
    "building materials",
    "retail freight",
)
_CARRIERS = (
    "Blue Line Transport LLC",
    "R and J Trucking",
    "Eagle Freight Inc",
    "Lone Star Carriers",
    "Midwest Haulers LLC",
    "Patel Express",
    "Sunrise Logistics",
    "Big Sky Transport",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "tomorrow", "today")
_QUESTIONS = (
    ("Is it a live load or drop and hook?", "Live load at pickup, drop and hook at delivery."),
    ("How many stops on this one?", "Just the one pickup and one delivery."),
    ("What's the total mileage?", "It's about {miles} loaded miles."),
    ("Any detention pay?", "Detention is fifty an hour after two hours free, with check-ins."),
    ("Does it need tarps or straps?", "No tarps needed, the shipper loads and braces it."),
    ("What are the delivery hours?", "Receiver takes appointments from six to two, FCFS after."),
    ("Is the weight exact?", "Shipper says {weight} pounds, give or take a pallet."),
    ("Who's the shipper on this?", "I can share that once you're booked, it's a regular lane."),
)


class _Writer:
    """Builds one conversation turn by turn, pacing it like speech."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.turns: list[Turn] = []
        self.tools: list[tuple[int, str]] = []
        self.clock = rng.uniform(0.3, 1.5)

    def say(self, role: str, text: str) -> None:
        none_or_empty: list[dict[str, Any]] | None = (
            [] if role == "assistant" and self.rng.random() < 0.2 else None
        )
        self.turns.append(Turn(role, text, none_or_empty, None, False, self.clock))
        # ~2.6 words a second, plus the pause before the other side answers.
        self.clock += len(text.split()) / 2.6 + self.rng.uniform(0.4, 1.4)

    def call(self, tool: str, args: dict[str, Any], result: dict[str, Any], say: str = "") -> None:
        """An assistant turn calling `tool` (saying `say` meanwhile), then the tool's answer."""
        calls = [{"function": {"name": tool, "arguments": json.dumps(args)}}]
        self.tools.append((len(self.turns), tool))
        # Words said while a tool runs are filler: they only cover the wait.
        self.turns.append(Turn("assistant", say, calls, None, bool(say), self.clock))
        self.clock += len(say.split()) / 2.6 + self.rng.uniform(0.2, 0.6)
        self.turns.append(Turn("tool", json.dumps(result), None, tool, False, self.clock))
        self.clock += self.rng.uniform(0.3, 1.8)

    def event(self, name: str, text: str) -> None:
        self.turns.append(Turn("event", text, None, name, False, self.clock))
        self.clock += self.rng.uniform(0.2, 1.0)

    def script(self) -> Script:
        return Script(tuple(self.turns), self.clock, tuple(self.tools))


def _carrier_call(rng: random.Random) -> Script:
    """A carrier calling about a posted load, from hello to booked, transferred or passed."""
    w = _Writer(rng)
    origin, dest = rng.sample(_CITIES, 2)
    ref = f"{rng.choice('LRT')}{rng.randrange(10**6, 10**7)}"
    mc = str(rng.randrange(100000, 1200000))
    carrier, equipment = rng.choice(_CARRIERS), rng.choice(_EQUIPMENT)
    rate, miles, weight = rng.randrange(9, 60) * 50, rng.randrange(150, 2400), rng.randrange(8, 45)
    weight *= 1000
    w.say("assistant", "Thanks for calling Northwind Freight, this is Alex. How can I help you?")
    w.say("user", f"Hey, I'm calling on the load out of {origin} going to {dest}, {ref}.")
    found = rng.random() > 0.08
    load = {"reference_number": ref, "origin": origin, "destination": dest}
    w.call(
        "find_load",
        {"reference_number": ref},
        {**load, "equipment": equipment, "weight_lbs": weight, "posted_rate": rate}
        if found
        else {"error": "load not found"},
        "Sure, let me pull that up." if rng.random() < 0.7 else "",
    )
    if not found:
        w.say("assistant", "I'm not finding that reference. Could you double check the number?")
        w.say("user", "Huh, never mind, I'll call back when I have it.")
        return w.script()
    day, hour = rng.choice(_DAYS), rng.randrange(5, 17)
    w.say(
        "assistant",
        f"Got it. That's {rng.choice(_COMMODITIES)}, {weight} pounds on a {equipment}, picking "
        f"up in {origin} {day} at {hour}:00 and delivering to {dest}. What's your MC number?",
    )
    w.say("user", f"Yeah, it's MC {mc}.")
    w.call(
        "verify_carrier",
        {"mc_number": mc},
        {"mc_number": mc, "carrier_name": carrier, "authority": "active", "insurance": True},
        "One second while I verify that." if rng.random() < 0.5 else "",
    )
    w.say("assistant", f"Thanks, I have you as {carrier}. We're at ${rate} all in. Does that work?")
    for question, answer in rng.sample(_QUESTIONS, rng.choice((0, 1, 1, 2, 3, 4))):
        w.say("user", question)
        w.say("assistant", answer.format(miles=miles, weight=weight))
    rate = _negotiate(w, ref, mc, rate)
    _close(w, ref, mc, rate)
    return w.script()


def _negotiate(w: _Writer, ref: str, mc: str, rate: int) -> int:
    """Zero to three counter-offers, each logged; returns the rate both sides ended on."""
    for _ in range(w.rng.choice((0, 1, 1, 2, 3))):
        ask = rate + w.rng.randrange(2, 8) * 50
        w.say("user", f"Could you do ${ask}? That's a long deadhead for me.")
        meet = (rate + ask) // 100 * 50
        w.call(
            "log_offer",
            {"reference_number": ref, "mc_number": mc, "offered_rate": ask},
            {"accepted": False, "counter_rate": meet},
            "Let me check with my team." if w.rng.random() < 0.6 else "",
        )
        w.say("assistant", f"Best I can do is ${meet} on this one.")
        rate = meet
    return rate


def _close(w: _Writer, ref: str, mc: str, rate: int) -> None:
    """The call's end: booked (most), transferred to a rep, or the carrier passes."""
    roll = w.rng.random()
    if roll < 0.55:
        w.say("user", "Alright, let's book it.")
        confirmation = f"BK-{w.rng.randrange(10**5, 10**6)}"
        w.call(
            "book_load",
            {"reference_number": ref, "mc_number": mc, "rate": rate},
            {"status": "booked", "confirmation": confirmation},
            "Great, booking that now.",
        )
        w.say("assistant", f"You're booked, confirmation {confirmation}. Rate con is on its way.")
        w.say("user", "Perfect, thanks.")
        w.say("assistant", "Drive safe!")
    elif roll < 0.8:
        w.say("user", "Can I talk to somebody about the rate?")
        w.call(
            "transfer_call",
            {"department": "carrier_sales", "reason": "rate negotiation"},
            {"status": "transferring"},
            "Sure, transferring you to a rep now.",
        )
        w.event("transfer", "Call transferred to carrier sales")
    else:
        w.say("user", "That's too low for me, I'll pass.")
        w.say("assistant", "Understood. Thanks for calling, check the board for anything else.")
        w.say("user", "Will do, bye.")


def _chat(rng: random.Random) -> Script:
    """A dispatcher asking for a load's pickup time over chat."""
    w = _Writer(rng)
    ref = f"L{rng.randrange(10**6, 10**7)}"
    w.say("user", f"what's the pickup appointment for {ref}")
    w.call("find_load", {"reference_number": ref}, {"reference_number": ref, "status": "booked"})
    w.say("assistant", f"{ref} picks up {rng.choice(_DAYS)} at {rng.randrange(5, 17)}:00.")
    w.say("user", "thanks")
    return w.script()


def _pool(build: Callable[[random.Random], Script], n: int, seed: int) -> list[Script]:
    rng = random.Random(seed)
    return [build(rng) for _ in range(n)]


_CALLS = _pool(_carrier_call, 128, 0)
_CHATS = _pool(_chat, 16, 1)


def _latencies(rng: random.Random, chat: bool) -> dict[str, float | int]:
    """One assistant turn's latency split (ms); chats have no speech stages."""
    voice = 0 if chat else 1
    return {
        "network": rng.randrange(15, 90),
        "initial_wait": rng.randrange(0, 60),
        "transcriber": round(rng.uniform(60, 280), 1) * voice,
        "eos": round(rng.uniform(120, 650), 1) * voice,
        "eos_wait": rng.randrange(0, 320) * voice,
        "llm": round(rng.lognormvariate(6.3, 0.35), 1),
        "tts": round(rng.uniform(90, 420), 1) * voice,
    }


_LATENCY_RNG = random.Random(2)
_LATENCIES = {chat: [_latencies(_LATENCY_RNG, chat) for _ in range(256)] for chat in (False, True)}


# -- a run's sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPlan:
    """One session of a run, fixed before any body is rendered."""

    seq: int  # position in the run's events
    id: str  # text: a UUID, or a provider's call id
    start: datetime
    duration: float  # seconds, as the API sends it
    kind: str  # VOICE | CHAT | FAILED
    sip: tuple[str, str] | None  # (code, reason) of a failed call
    script: Script | None  # None: no transcript (failed call)
    message_session_id: str | None
    chat_session_id: str | None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration)


def plan_sessions(seed: int, n_events: int, start: datetime, seconds: float) -> list[SessionPlan]:
    """The sessions of a run of `n_events` events over [start, start + seconds].

    Most runs hold one call; some none (the workflow never dialled), some two (a transfer or
    a callback). A session sits at an event position early enough that events follow it,
    so a running run can be cut in the middle of its call.
    """
    rng = random.Random(seed ^ _PLAN_SALT)
    roll = rng.random()
    count = 0 if roll < 0.07 or n_events < 6 else 2 if roll > 0.92 else 1
    seqs = [rng.randrange(max(1, n_events // 3))]
    if count == 2:
        seqs.append(rng.randrange(seqs[0] + 2, n_events - 2))
    del seqs[count:]
    slot = seconds / max(n_events, 1)
    starts = [start + timedelta(seconds=slot * (seq + rng.uniform(0.1, 0.4))) for seq in seqs]
    # A call ends before the next one starts, and before the run's last event.
    limits = [*starts[1:], start + timedelta(seconds=seconds - slot)][: len(starts)]
    return [
        _plan_one(rng, seq, at, (limit - at).total_seconds())
        for seq, at, limit in zip(seqs, starts, limits, strict=True)
    ]


def _plan_one(rng: random.Random, seq: int, start: datetime, room: float) -> SessionPlan:
    provider_id = rng.random() < 0.1
    session_id = f"CA{rng.getrandbits(128):032x}" if provider_id else new_uuid(rng)
    message_session_id = new_uuid(rng) if provider_id else session_id
    roll = rng.random()
    if roll < 0.12:
        sip = rng.choice(SIP_FAILURES)
        duration = 0.0 if rng.random() < 0.5 else round(rng.uniform(0.5, 6.0), 1)
        return SessionPlan(seq, session_id, start, duration, FAILED, sip, None, None, None)
    if roll < 0.18:
        script = rng.choice(_CHATS)
        duration = round(min(script.seconds * rng.uniform(3, 12), room * 0.9), 1)
        chat_id = new_uuid(rng)
        return SessionPlan(seq, session_id, start, duration, CHAT, None, script, None, chat_id)
    script = rng.choice(_CALLS)
    # Ringing, holds and silences stretch a call past its words' pace.
    duration = round(min(script.seconds * rng.uniform(1.0, 2.2), 400.0, room * 0.9), 1)
    return SessionPlan(
        seq, session_id, start, duration, VOICE, None, script, message_session_id, None
    )


def session_event(rng: random.Random, plan: SessionPlan, cut: datetime | None) -> dict[str, Any]:
    """The session event; with `cut`, as seen mid-call at that time (a transcript prefix).

    Every message is drawn whatever the cut, so a later fetch only adds messages.
    """
    messages = _messages(rng, plan) if plan.script is not None else []
    actions = [
        {"type": "tool_call", "name": name, "timestamp": messages[i]["timestamp"]}
        for i, name in (plan.script.tools if plan.script is not None else ())
    ]
    duration = plan.duration
    if cut is not None and cut < plan.end:
        messages = [m for m in messages if m["timestamp"] <= cut]
        actions = [a for a in actions if a["timestamp"] <= cut]
        duration = round(max((cut - plan.start).total_seconds(), 0.0), 1)
    return {
        "type": "session",
        "id": plan.id,
        "timestamp": plan.start,
        "duration": duration,
        "sip_code": plan.sip[0] if plan.sip else None,
        "sip_reason": plan.sip[1] if plan.sip else None,
        "actions": actions,
        "messages": messages,
    }


def _messages(rng: random.Random, plan: SessionPlan) -> list[dict[str, Any]]:
    assert plan.script is not None
    script, start = plan.script, plan.start
    pace = plan.duration / script.seconds if script.seconds else 0.0
    latencies = _LATENCIES[plan.kind == CHAT]
    messages = []
    for turn in script.turns:
        bits = rng.getrandbits(17)
        speaking = turn.role == "assistant" and not turn.tool_calls
        # About one spoken assistant turn in twelve is barged in on; half of those at a pause.
        interrupted = speaking and (bits >> 8) & 255 < 21
        messages.append(
            {
                "id": new_uuid(rng),
                "session_id": plan.message_session_id,
                "chat_session_id": plan.chat_session_id,
                "role": turn.role,
                "content": turn.content,
                "tool_calls": turn.tool_calls,
                "name": turn.name,
                "is_filler": turn.is_filler,
                "is_interrupted": interrupted,
                "is_natural_cut": interrupted and bits >> 16 == 1,
                "latency_breakdown": latencies[bits & 255] if turn.role == "assistant" else None,
                "timestamp": start + timedelta(seconds=turn.at * pace),
                "data_deleted": False,
            }
        )
    return messages


def expire_session(event: dict[str, Any]) -> None:
    """The platform's retention view of a session: messages keep their skeleton, lose content."""
    event["messages"] = [
        {**m, "content": "", "tool_calls": None, "data_deleted": True} for m in event["messages"]
    ]
