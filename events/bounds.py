"""The bounds on what the codec decodes (size, nesting, keys, numbers, text): proven on the
raw bytes where a scan can (`within_bounds`, `cleared`), else checked on the parsed document
(`load_json`, which parses within them)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic_core import from_json

from jetgrid.events.errors import InvalidEvent

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_KEYS",
    "Cleared",
    "cleared",
    "load_json",
    "within_bounds",
]

# Bounds on what the codec decodes. Every event jetgrid writes nests at most 8 deep (a chat
# message's content part inside a submitted job's input, inside the envelope); a body that
# nests deeper than MAX_DEPTH, or is larger than MAX_BYTES (NATS refuses payloads over its
# max_payload, 1 MB by default, long before), is refused before it can cost more.
MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32
MAX_KEYS = 4096
# Integers must fit a signed 64-bit column (sequences, counts and sizes are stored in SQL).
MAX_INT = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
# Every digit as "0" and "E" as "e", so that a few substring searches find the number tokens
# that could fall outside the bounds once parsed (see within_bounds): 19 digits in a row, or
# an exponent of 3 or more digits.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789E", b"0000000000e")
_EXPONENTS = (b"0e000", b"0e+000", b"0e-000")
# A number token with an exponent of 3 or more digits: what ends a number in JSON follows it
# (a hex id such as "...3e1234f..." inside a string does not match).
_BIG_EXPONENT = re.compile(rb"\d[eE][+-]?\d{3,}(?=[\s,\]}]|\Z)")
_DEEP = "recursion limit exceeded"


def _refuse_constant(name: str) -> Any:
    raise InvalidEvent(f"Body holds {name}, which is not a JSON number; send a finite number.")


def _check(obj: Any, strings: bool) -> None:
    """Refuse a parsed document outside the bounds; `strings` also checks for lone surrogates.

    Iterative, so no document can make it recurse; dispatches on exact types, as parsed JSON
    holds nothing else, because this runs on every event.
    """
    if type(obj) is not dict and type(obj) is not list:
        _check_scalar(obj, strings)
        return
    stack: list[tuple[Any, int]] = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent(f"Body nests deeper than {MAX_DEPTH} levels; flatten it.")
        if type(value) is dict:
            if len(value) > MAX_KEYS:
                raise InvalidEvent(
                    f"Body has an object with {len(value)} keys; at most {MAX_KEYS} are accepted."
                )
            if strings:
                for key in value:
                    _check_str(key)
            items = value.values()
        else:
            items = value
        for item in items:
            t = type(item)
            if t is str:
                if strings:
                    _check_str(item)
            elif t is dict or t is list:
                push((item, depth + 1))
            elif t is float or t is int:
                _check_scalar(item, strings)


def _check_scalar(value: Any, strings: bool) -> None:
    if isinstance(value, str):
        if strings:
            _check_str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(
                f"Body holds the number {value!r}, which is out of range; send a finite number."
            )
    elif isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        raise InvalidEvent(
            f"Body holds an integer of {len(str(abs(value)))} digits; at most 64-bit integers "
            "are accepted."
        )


def _check_str(value: str) -> None:
    if _SURROGATE.search(value) is not None:
        raise InvalidEvent(
            f"Body holds a lone surrogate ({value[:40]!r}), which is not valid Unicode text."
        )


class Cleared(bytes):
    """Bytes that `cleared` passed where they were read: load_json skips the scan and the walk,
    decode the scan before its one pass. A replay's reader child scans each message it sends
    (projections.pump), while the process that decodes them is the busier one. Only jetgrid's
    own readers make one; what NATS delivers is plain bytes, which are scanned here."""

    __slots__ = ()


def within_bounds(data: bytes | str) -> bool:
    """Whether the raw bytes alone prove that the parsed document is within the bounds that
    `_check` enforces (with ``strings=False``), so that walking it can be skipped.

    Conservative, and a few C-speed scans instead of a walk of every value: no document nests
    deeper than it has ``[`` and ``{`` bytes, no object has more keys than the document has
    ``:`` bytes, an integer outside 64 bits needs 19 digits in a row (anything shorter is below
    10**18), and a finite literal can only overflow to infinity with an exponent of 3 or more
    digits (its mantissa then has at most 18 digits before the point; in JSON a digit always
    precedes the ``e``). Bytes inside strings are counted too, which can only send a body to
    the walk. Cleared bytes were scanned where they were read.
    """
    if type(data) is Cleared:
        return True
    if type(data) is not bytes or data.count(b"{") + data.count(b"[") > MAX_DEPTH:
        return False
    if data.count(b":") > MAX_KEYS:
        return False
    zeros = data.translate(_DIGITS_AS_ZERO)
    if b"0000000000000000000" in zeros:  # 19 digits in a row
        return False
    if b"0e" not in zeros:  # in every exponent pattern: one scan rules them all out
        return True
    for exponent in _EXPONENTS:
        if exponent in zeros:  # maybe inside a string: the pattern decides
            return _BIG_EXPONENT.search(data) is None
    return True


def load_json(data: bytes | str) -> Any:
    """Bytes of one JSON document -> Python objects, within the codec's bounds.

    Refuses, as InvalidEvent with a one-sentence reason, anything that is not JSON or exceeds
    MAX_BYTES, MAX_DEPTH or MAX_KEYS, numbers that are not finite or do not fit 64 bits
    (NaN, Infinity, 1e999, huge integers) and lone surrogates. Never raises anything else.
    """
    if len(data) > MAX_BYTES:
        raise InvalidEvent(f"Body is {len(data)} bytes; at most {MAX_BYTES} are accepted.")
    # pydantic-core's parser is about twice as fast as json.loads on an event, gives the same
    # objects for every document both accept, and stops at a fixed depth instead of
    # recursing. It refuses a few documents json.loads takes (a UTF-8 BOM, UTF-16, lone
    # surrogates in escapes), so on any other failure json.loads decides, and its reason is
    # the one given.
    try:
        obj = from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        if _DEEP in str(exc):
            raise InvalidEvent(f"Body nests deeper than {MAX_DEPTH} levels; flatten it.") from None
    else:
        if not within_bounds(data):
            _check(obj, strings=False)
        return obj
    try:
        obj = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidEvent(f"Body nests deeper than {MAX_DEPTH} levels; flatten it.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEvent(f"Body is not JSON: {exc}.") from exc
    _check(obj, strings=True)
    return obj


def cleared(data: bytes) -> bool:
    """Whether `data` is within the bounds (within_bounds) and holds no NaN or Infinity token,
    which the one pass would take as a number (a token inside a string counts too)."""
    return within_bounds(data) and b"NaN" not in data and b"Infinity" not in data
