"""Every SQL statement about `ingest_queue` (and its dead letters) lives in this package.

A run's life: pending -> (claim) running under a lease -> done | pending again (retry with
backoff, or a poll of a run not terminal yet) | dead (with a reason and the raw body).
Workers, commands and the ops pages never write SQL about the queue; they call these.
"""

from ingest.queue.control import Pause, pause, paused, resume
from ingest.queue.enqueue import EnqueueResult, enqueue, retry_dead
from ingest.queue.notify import Listener, listen, notify, notify_channel
from ingest.queue.readings import (
    DeadLetter,
    QueueCounts,
    counts,
    dead_by_kind,
    done_within,
    finished_per_minute,
    finished_within,
    freshness,
    latest_dead,
)
from ingest.queue.work import (
    FIRST_WEBHOOK_POLL_S,
    Claim,
    Completed,
    Landed,
    Requeue,
    claim,
    complete,
    dead_letter,
    fail,
    in_flight,
    next_due_in,
    outstanding,
    reclaim_expired,
    record_batch,
    release,
    renew,
)

__all__ = [
    "FIRST_WEBHOOK_POLL_S",
    "Claim",
    "Completed",
    "DeadLetter",
    "EnqueueResult",
    "Landed",
    "Listener",
    "Pause",
    "QueueCounts",
    "Requeue",
    "claim",
    "complete",
    "counts",
    "dead_by_kind",
    "dead_letter",
    "done_within",
    "enqueue",
    "fail",
    "finished_per_minute",
    "finished_within",
    "freshness",
    "in_flight",
    "latest_dead",
    "listen",
    "next_due_in",
    "notify",
    "notify_channel",
    "outstanding",
    "pause",
    "paused",
    "reclaim_expired",
    "record_batch",
    "release",
    "renew",
    "resume",
    "retry_dead",
]
