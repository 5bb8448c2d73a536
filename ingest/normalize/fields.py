"""Field conversions: each reads obj[key] and returns the column value, or raises BadField
naming `key`; the object's builder prefixes the path ("events[3].intermediate."), so the happy
path builds no strings. `where` is the path pattern used in drift notes ("events[]."), a
constant. Shared by the run body's builders and the catalog's (ingest.discovery.catalog)."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asyncpg.pgproto import pgproto

from ingest import jsontext
from ingest.normalize.rows import DriftNote
from ingest.normalize.shape import DOCUMENTED_MAX_LENGTH

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


class BadField(Exception):
    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem


def show(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a value nested deeper than repr goes: say what it is
        text = f"a {type(value).__name__} nested too deep to show"
    return text if len(text) <= 80 else text[:77] + "..."


class Notes:
    """Drift notes of one run, each (kind, detail) once, in the order first seen."""

    __slots__ = ("notes", "seen")

    def __init__(self) -> None:
        self.notes: list[DriftNote] = []
        self.seen: set[tuple[str, str]] = set()

    def add(self, kind: str, detail: str) -> None:
        if (kind, detail) not in self.seen:
            self.seen.add((kind, detail))
            self.notes.append(DriftNote(kind, detail))


# Repeated values (org, use case, version, node, session ids) dominate; a bounded cache of
# parsed UUIDs skips parsing them again, within a run and across runs. Cleared, not LRU.
UUID_CACHE: dict[str, uuid.UUID] = {}
UUID_CACHE_MAX = 50_000
_FastUUID: Callable[[str], uuid.UUID] = pgproto.UUID


def parse_uuid(value: str) -> uuid.UUID:
    try:
        # asyncpg's UUID is a uuid.UUID subclass parsed in C (~0.13 µs, against ~1 µs for
        # uuid.UUID's pure Python): two per event are never repeated (intermediate id,
        # event_id), so this is the hot spot of a backfill. It takes 32 hex digits with any
        # dashes, as uuid.UUID does, and the driver sends it without converting it again.
        return _FastUUID(value)
    except ValueError:
        return uuid.UUID(value)  # braces, urn:uuid:, more dashes, and the errors


def read_uuid(obj: dict[str, Any], key: str) -> uuid.UUID | None:
    """A UUID that recurs across runs (org, use case, version, node, session, user ids)."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is str:
        cached = UUID_CACHE.get(value)
        if cached is not None:
            return cached
        try:
            parsed = parse_uuid(value)
        except ValueError:
            pass
        else:
            if len(UUID_CACHE) >= UUID_CACHE_MAX:
                UUID_CACHE.clear()
            UUID_CACHE[value] = parsed
            return parsed
    raise BadField(key, f"is not a UUID: {show(value)}")


def read_unique_uuid(obj: dict[str, Any], key: str) -> uuid.UUID | None:
    """A UUID seen once (an event's or issue's own id): caching it would only evict others."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is str:
        try:
            return parse_uuid(value)
        except ValueError:
            pass
    raise BadField(key, f"is not a UUID: {show(value)}")


def read_timestamp(obj: dict[str, Any], key: str, notes: Notes, where: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadField(key, f"is not a timestamp: {show(value)}") from None
    if parsed.tzinfo is None:
        notes.add("naive_timestamp", f"{where}{key}")
        return parsed.replace(tzinfo=UTC)
    if parsed.year in (1, 9999):
        # An offset can push the instant outside what Python (and so the driver) can hold.
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            raise BadField(key, f"is out of range: {show(value)}") from None
    return parsed


def read_text(obj: dict[str, Any], key: str, notes: Notes, where: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    # A text column can hold any JSON value as its JSON text: nothing is lost.
    notes.add("coerced_to_text", f"{where}{key}")
    return jsontext.dumps(value)


def read_name(obj: dict[str, Any], key: str, notes: Notes, where: str) -> str | None:
    """A text field the API documents as at most 256 characters."""
    value = read_text(obj, key, notes, where)
    if value is not None and len(value) > DOCUMENTED_MAX_LENGTH:
        notes.add("long_string", f"{where}{key}")
    return value


def read_enum(
    obj: dict[str, Any], key: str, known: frozenset[str], notes: Notes, where: str
) -> str | None:
    value = read_text(obj, key, notes, where)
    if value is not None and value not in known:
        notes.add("new_enum_value", f"{where}{key}={value[:80]!r}")
    return value


def read_int(obj: dict[str, Any], key: str, notes: Notes, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is int:
        number = value
    elif (type(value) is str and _INTEGER.fullmatch(value)) or (
        type(value) is float and value.is_integer()
    ):
        number = int(value)
        notes.add("coerced_to_integer", f"{where}{key}")
    else:
        raise BadField(key, f"is not an integer: {show(value)}")
    if not _INT32_MIN <= number <= _INT32_MAX:
        raise BadField(key, f"is out of integer range: {show(value)}")
    return number


def read_float(obj: dict[str, Any], key: str, notes: Notes, where: str) -> float | None:
    """A number stored as sent (double precision); a numeric string is read as its number."""
    value = obj.get(key)
    if value is None:
        return None
    kind = type(value)
    if kind is float or kind is int:
        if kind is int and not -_DOUBLE_EXACT <= value <= _DOUBLE_EXACT:
            notes.add("rounded_to_double", f"{where}{key}")
        return float(value)
    if kind is str:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                notes.add("coerced_to_number", f"{where}{key}")
                return number
    raise BadField(key, f"is not a number: {show(value)}")


_DOUBLE_EXACT = 2**53  # beyond it a double cannot hold every integer: say it was rounded
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def read_bool(obj: dict[str, Any], key: str, notes: Notes, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or type(value) is bool:
        return value
    if type(value) is str:
        parsed = _BOOLEANS.get(value.strip().lower())
    elif type(value) is int:
        parsed = _BOOLEANS.get(str(value))
    else:
        parsed = None
    if parsed is None:
        raise BadField(key, f"is not a boolean: {show(value)}")
    notes.add("coerced_to_boolean", f"{where}{key}")
    return parsed


def note_unknown_fields(
    obj: dict[str, Any], known: frozenset[str], notes: Notes, where: str
) -> None:
    if not known.issuperset(obj):
        for key in sorted(obj.keys() - known):
            notes.add("unknown_field", f"{where}{key}"[:200])


def strip_nul(value: Any, path: str, notes: Notes) -> Any:
    """The value without NUL characters, which PostgreSQL text and jsonb cannot hold."""
    if type(value) is str:
        if "\x00" in value:
            notes.add("nul_removed", path or "(root)")
            return value.replace("\x00", "")
        return value
    if type(value) is list:
        return [strip_nul(item, f"{path}[]", notes) for item in value]
    if type(value) is dict:
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            clean_key = key.replace("\x00", "")
            key_path = f"{path}.{clean_key}" if path else clean_key
            if clean_key != key:
                notes.add("nul_removed", f"{key_path} (key)")
            # Two keys equal once cleaned: the later one wins, as with duplicate JSON keys.
            cleaned[clean_key] = strip_nul(item, key_path, notes)
        return cleaned
    return value


def json_text(value: Any) -> str | None:
    """A jsonb value as JSON text, made here so that the parsed tree dies with the payload:
    held until its batch is written, its thousands of objects would each be walked by the
    cycle collector, and encoded then it costs the same. A str, not orjson's bytes, which
    keep 4 KiB of spare room each: 50 per run, held until written, doubled a worker's RSS.
    """
    return None if value is None else jsontext.dumps(value)


def prefixed(prefix: str, bad: BadField) -> BadField:
    return BadField(f"{prefix}{bad.path}", bad.problem)
