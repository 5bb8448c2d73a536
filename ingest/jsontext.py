"""JSON text in and out, and one way of saying what is wrong with bytes that are not JSON.

orjson does the work. It refuses to parse past 1,024 levels of nesting and to write past 254,
though PostgreSQL's jsonb holds far deeper values; only when orjson gives up for that reason
does the stdlib's C parser/encoder take over, under the same rules, up to `MAX_DEPTH`.
Both the API client and normalize use this module, so a broken body is described the same way
whether it arrives from the API or is reprocessed from storage. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from collections.abc import Callable
from itertools import accumulate
from typing import Any, TypeVar

import orjson

# PostgreSQL 15 with its default max_stack_depth (2 MB) parses jsonb nested up to ~13,000
# levels of objects and ~14,500 of arrays; a run body wraps `output` in 3 more levels and an
# intermediate's `data` in 4. 20,000 stores whatever such a server can hold and still keeps
# the stdlib's C recursion near 2.5 MB of stack (it overflowed 8 MB at ~65,000 levels).
MAX_DEPTH = 20_000

_T = TypeVar("_T")
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1
# The fallback runs in a thread with a stack of known size, so that the caller's own stack
# (a small thread's, say) cannot overflow: the recursion limit then fails first, cleanly.
_STACK_BYTES = 32 * 2**20
_deep_lock = threading.Lock()

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]|[^\s\[\]{},:"]+', re.S)
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.S)
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonError(ValueError):
    """Bytes that are not a JSON document this module accepts; `reason` (also `str(exc)`) is
    one line saying what is wrong and at which byte, such as
    `invalid JSON: unexpected character, expected a JSON value at byte 812`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Refused(ValueError):
    """A scalar orjson would refuse, met by the stdlib parser's hooks (which know no offset)."""

    def __init__(self, problem: str, token: str) -> None:
        super().__init__(problem)
        self.problem, self.token = problem, token


def loads(body: bytes) -> Any:
    """The JSON value of `body`, by orjson's rules at any depth up to MAX_DEPTH."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _recover(body, exc)


def loads_object(body: bytes) -> dict[str, Any]:
    """`loads`, for a body that must be a JSON object (a run)."""
    doc = loads(body)
    if type(doc) is not dict:
        raise JsonError(f"body is not a JSON object but {type(doc).__name__}")
    return doc


def dumps(value: Any) -> str:
    """`value` as compact JSON text, at any depth up to MAX_DEPTH."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        if str(exc) != "Recursion limit reached":
            raise
    try:
        return _deeply(_ENCODER.encode)(value)
    except RecursionError:
        raise JsonError(f"value nests deeper than {MAX_DEPTH} levels") from None


# --- the fallback: only ever reached when orjson has refused ----------------------------------


def _recover(body: bytes, exc: orjson.JSONDecodeError) -> Any:
    try:
        text = body.decode()
    except UnicodeDecodeError as bad:
        byte = body[bad.start]
        raise JsonError(f"invalid UTF-8: 0x{byte:02x} at byte {bad.start} ({bad.reason})") from None
    if not exc.msg.startswith("depth limit exceeded"):
        raise JsonError(f"invalid JSON: {exc.msg} at byte {_byte(text, exc.pos)}") from None
    if _depth(body) > MAX_DEPTH:
        raise JsonError(_too_deep(body)) from None
    try:
        value = _deeply(_DECODER.decode)(text)
    except json.JSONDecodeError as bad:
        problem = bad.msg.removesuffix(" at")  # "Invalid control character at"
        raise JsonError(f"invalid JSON: {problem} at byte {_byte(text, bad.pos)}") from None
    except _Refused as bad:
        raise JsonError(f"invalid JSON: {bad.problem} at byte {_find(body, bad.token)}") from None
    except RecursionError:
        # Python 3.12+ caps C recursion apart from sys.setrecursionlimit.
        raise JsonError(
            f"JSON nests deeper than Python {sys.version_info[0]}.{sys.version_info[1]} can parse"
        ) from None
    if b"\\u" in body:
        _check_surrogates(body)
    return value


def _deeply(fn: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """`fn` run in a thread with a big stack and a recursion limit raised to MAX_DEPTH (the
    limit is interpreter-wide in 3.11: raised only meanwhile, one caller at a time)."""

    def call(arg: Any) -> _T:
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(fn(arg))
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)

        with _deep_lock:
            limit = sys.getrecursionlimit()
            stack = threading.stack_size(_STACK_BYTES)
            sys.setrecursionlimit(max(limit, MAX_DEPTH + 100))
            try:
                worker = threading.Thread(target=run, name="jsontext-deep")
                worker.start()
                worker.join()
            finally:
                threading.stack_size(stack)
                sys.setrecursionlimit(limit)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        result: _T = outcome[0]
        return result

    return call


def _int(text: str) -> int | float:
    # orjson reads integers beyond 64 bits as floats: so must the fallback, or a body's rows
    # would depend on how deep it nests. (20 digits or fewer: int() has a digit limit.)
    if len(text) <= 20 and _I64_MIN <= (value := int(text)) <= _U64_MAX:
        return value
    return _float(text)


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused("number is infinity when parsed as double", text)
    return value


def _constant(text: str) -> float:
    raise _Refused("unexpected character, expected a JSON value", text)


_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _byte(text: str, pos: int) -> int:
    """The byte offset of character `pos` (both parsers count characters)."""
    return len(text[:pos].encode())


def _depth(body: bytes) -> int:
    """How deep `body` nests, counting brackets outside strings at C speed."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def _too_deep(body: bytes) -> str:
    """Where `body` first nests deeper than MAX_DEPTH: its byte and the path leading there."""
    path: list[str | int] = []  # per open container: the current key or index
    expecting_key: list[bool] = []
    offset = 0
    for token in _TOKEN.finditer(body):
        first = token.group()[:1]
        if first in (b"[", b"{"):
            if len(path) == MAX_DEPTH:
                offset = token.start()
                break
            path.append("" if first == b"{" else 0)
            expecting_key.append(first == b"{")
        elif first in (b"]", b"}") and path:
            path.pop()
            expecting_key.pop()
        elif first == b"," and path:
            if isinstance(path[-1], int):
                path[-1] += 1
            else:
                expecting_key[-1] = True
        elif first == b'"' and expecting_key and expecting_key[-1]:
            path[-1] = token.group()[1:-1].decode(errors="replace")[:40]
            expecting_key[-1] = False
    # A prefix of the path is as true a place as the whole: show where the nesting starts.
    shown = path[:4]
    while len(shown) > 1 and isinstance(shown[-1], int):
        shown.pop()
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in shown).lstrip(".")
    return f"JSON nests deeper than {MAX_DEPTH} levels at byte {offset}" + (
        f" (in {where})" if where else ""
    )


def _find(body: bytes, literal: str) -> int:
    """The byte offset of the first scalar token `literal` (outside strings)."""
    wanted = literal.encode()
    return next((t.start() for t in _TOKEN.finditer(body) if t.group() == wanted), 0)


def _check_surrogates(body: bytes) -> None:
    """Refuse a lone UTF-16 surrogate escape, as orjson does (text and jsonb cannot hold one)."""
    for string in _STRING.finditer(body):
        high: int | None = None  # offset of a high surrogate waiting for its low half
        end = 0  # where the previous escape ended: a low half must follow its high one at once
        for escape in _ESCAPE.finditer(string.group()):
            at = string.start() + escape.start()
            code = int(escape.group(1), 16) if escape.group(1) else None
            is_low = code is not None and 0xDC00 <= code <= 0xDFFF
            if high is not None and not (is_low and escape.start() == end):
                break
            end = escape.end()
            if high is None and is_low:
                raise JsonError(f"invalid JSON: invalid high surrogate in string at byte {at}")
            high = at if code is not None and 0xD800 <= code <= 0xDBFF else None
        if high is not None:
            raise JsonError(f"invalid JSON: no low surrogate in string at byte {high}")
