"""Run IDs: the one place that decides what a valid one looks like.

Everything that comes from outside (files, flags, the API) passes through here before it
reaches a URL or a SQL statement.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Hyphenated or bare 32-hex UUIDs only: no braces, URNs or anything with a slash or a dot.
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


class InvalidRunId(ValueError):
    """Not a UUID: refused before it reaches any URL or SQL statement."""


def parse_run_id(value: object) -> uuid.UUID:
    """The UUID in `value`, or InvalidRunId with a message that quotes it (shortened)."""
    if isinstance(value, uuid.UUID):
        return value
    text = value if isinstance(value, str) else None
    if not text or not _UUID.fullmatch(text):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise InvalidRunId(f"not a run ID (expected a UUID): {shown}")
    return uuid.UUID(text)


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    text: str
    reason: str


def parse_lines(
    lines: Iterable[str], first_line: int = 1
) -> Iterator[tuple[uuid.UUID | None, BadLine | None]]:
    """One result per non-blank, non-comment line: (id, None) or (None, why it is bad)."""
    for n, raw in enumerate(lines, start=first_line):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            yield parse_run_id(text), None
        except ValueError as exc:
            yield None, BadLine(n, text[:80], str(exc))
