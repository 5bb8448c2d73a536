"""ingest.jsontext: orjson's rules at any depth PostgreSQL holds, and one precise wording of
what is wrong with a body."""

from __future__ import annotations

import sys
import threading
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import jsontext
from ingest.jsontext import MAX_DEPTH, JsonError

# Deep enough that orjson refuses it (1,024 levels), so the fallback decides.
DEEP = 1_100


def nest(levels: int, inner: bytes = b"1") -> bytes:
    return b"[" * levels + inner + b"]" * levels


def unwrap(value: Any, levels: int) -> Any:
    for _ in range(levels):
        (value,) = value
    return value


def refused(body: bytes) -> str:
    with pytest.raises(JsonError) as caught:
        jsontext.loads(body)
    return caught.value.reason


@pytest.mark.parametrize("levels", [300, 1_000, 1_025, 5_000, MAX_DEPTH])
@pytest.mark.parametrize("kind", ["arrays", "objects"])
def test_deep_documents_round_trip_exactly(levels: int, kind: str) -> None:
    body = nest(levels) if kind == "arrays" else b'{"a":' * levels + b"1" + b"}" * levels
    assert jsontext.dumps(jsontext.loads(body)).encode() == body


def test_beyond_the_cap_the_reason_names_the_byte_and_the_path() -> None:
    deep = nest(MAX_DEPTH + 5)
    body = b'{"id":"x","events":[{"output":"[{"},{"output":' + deep + b"}]}"
    opened = body.index(deep) + MAX_DEPTH - 3  # the bracket that opens level MAX_DEPTH + 1
    assert refused(body) == (
        f"JSON nests deeper than {MAX_DEPTH} levels at byte {opened} (in events[1].output)"
    )
    assert refused(nest(MAX_DEPTH + 1)) == (
        f"JSON nests deeper than {MAX_DEPTH} levels at byte {MAX_DEPTH} (in [0])"
    )


def test_the_fallback_leaves_the_recursion_limit_and_thread_stack_size_as_they_were() -> None:
    limit, stack = sys.getrecursionlimit(), threading.stack_size()
    jsontext.loads(nest(5_000))
    with pytest.raises(JsonError):
        jsontext.loads(nest(MAX_DEPTH + 1))
    assert (sys.getrecursionlimit(), threading.stack_size()) == (limit, stack)


def test_a_thread_with_a_small_stack_can_parse_the_deepest_document() -> None:
    """The fallback brings its own stack: the caller's could not hold MAX_DEPTH C frames."""
    results: list[object] = []

    def parse() -> None:
        try:
            results.append(len(jsontext.dumps(jsontext.loads(nest(MAX_DEPTH)))))
        except BaseException as exc:
            results.append(exc)

    previous = threading.stack_size(256 * 1024)
    try:
        thread = threading.Thread(target=parse)
        thread.start()
    finally:
        threading.stack_size(previous)
    thread.join()
    assert results == [2 * MAX_DEPTH + 1]


def test_dumps_beyond_the_cap_is_an_error_not_a_crash() -> None:
    value: list[Any] = []
    for _ in range(MAX_DEPTH + 200):
        value = [value]
    with pytest.raises(JsonError, match=f"nests deeper than {MAX_DEPTH} levels"):
        jsontext.dumps(value)


def test_dumps_passes_on_errors_that_are_not_about_depth() -> None:
    with pytest.raises(TypeError, match="Integer exceeds 64-bit range"):
        jsontext.dumps({"n": 2**70})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": "\xe9\xff"}', "invalid UTF-8: 0xe9 at byte 7 (invalid continuation byte)"),
        (b'{"a": 1, "b": "x\xff"}', "invalid UTF-8: 0xff at byte 16 (invalid start byte)"),
        # Bytes, not characters: each "é" is two.
        (
            b'{"\xc3\xa9\xc3\xa9": x}',
            "invalid JSON: unexpected character, expected a JSON value at byte 9",
        ),
        (b"", "invalid JSON: Input is a zero-length, empty document at byte 0"),
        (b'{"a": 1} x', "invalid JSON: unexpected content after document at byte 9"),
        (b'{"id": "abc", "events": [', "invalid JSON: unexpected end of data at byte 25"),
        (b'{"x": NaN}', "invalid JSON: unexpected character, expected a JSON value at byte 6"),
        (b'{"x": 1e999}', "invalid JSON: number is infinity when parsed as double at byte 6"),
    ],
)
def test_what_is_wrong_and_at_which_byte(body: bytes, reason: str) -> None:
    assert refused(body) == reason


@pytest.mark.parametrize(
    ("inner", "reason"),
    [
        (b"NaN", "unexpected character, expected a JSON value at byte 1100"),
        (b"-Infinity", "unexpected character, expected a JSON value at byte 1100"),
        (b"1e999", "number is infinity when parsed as double at byte 1100"),
        (b"9" * 400, "number is infinity when parsed as double at byte 1100"),
        (b'"\\ud800"', "no low surrogate in string at byte 1101"),
        (b'"\\ud800 \\udc00"', "no low surrogate in string at byte 1101"),
        (b'"\\udc00"', "invalid high surrogate in string at byte 1101"),
        (b'"ok", "x\\udc00"', "invalid high surrogate in string at byte 1108"),
        (b'"x\x01"', "Invalid control character at byte 1102"),
        (b"1 2", "Expecting ',' delimiter at byte 1102"),
    ],
)
def test_deep_documents_keep_orjsons_rules(inner: bytes, reason: str) -> None:
    assert refused(nest(DEEP, inner)) == f"invalid JSON: {reason}"


@pytest.mark.parametrize(
    "inner",
    [
        b'"\\ud83d\\ude00"',  # a surrogate pair is one character
        b'"\\\\ud800"',  # an escaped backslash, then text
        b"18446744073709551615",
        b"18446744073709551616",  # beyond 64 bits: a float, as orjson reads it
        b"-9223372036854775809",
        b'{"a": [1.5e300, -0.0, true, false, null, "\\u00e9\\n"]}',
    ],
)
def test_deep_documents_read_as_orjson_reads_them(inner: bytes) -> None:
    expected = orjson.loads(inner)
    got = unwrap(jsontext.loads(nest(DEEP, inner)), DEEP)
    assert got == expected and type(got) is type(expected)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_the_fallback_reads_any_value_as_orjson_does(value: Any) -> None:
    inner = orjson.dumps(value)
    expected = orjson.loads(inner)
    got = unwrap(jsontext.loads(nest(DEEP, inner)), DEEP)
    assert orjson.dumps(got) == orjson.dumps(expected)


def test_loads_object_names_what_it_got_instead() -> None:
    assert jsontext.loads_object(b'{"a": 1}') == {"a": 1}
    for body, kind in [(b"[1]", "list"), (b'"run"', "str"), (b"null", "NoneType")]:
        with pytest.raises(JsonError, match=f"^body is not a JSON object but {kind}$"):
            jsontext.loads_object(body)


def test_the_happy_path_is_orjsons() -> None:
    body = orjson.dumps({"id": "x", "events": [{"output": {"a": [1, 2.5, "é"]}}]})
    assert jsontext.loads(body) == orjson.loads(body)
    value = orjson.loads(body)
    assert jsontext.dumps(value) == orjson.dumps(value).decode()
