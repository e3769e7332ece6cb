"""Arguments arrive as they were sent, or are refused at enqueue.

JSON has no bytes, datetimes, tuples or sets, and msgspec would turn them into strings and
lists without a word; msgpack keeps bytes and aware datetimes but not the rest. A task function
that was called with ``b"abc"`` must not receive ``"YWJj"``, so ``check_arguments`` refuses
every value the configured format cannot give back unchanged, naming the argument. Pickle keeps
any picklable value and needs no check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from omniq.exceptions import SerializationError

_SCALARS = (type(None), bool, int, str)
_MAX_DEPTH = 64


def _problem(value: Any, fmt: str, depth: int) -> str | None:
    """Why ``value`` would not come back unchanged from ``fmt``, or ``None``."""
    kind = type(value)
    if kind in _SCALARS:
        return None
    if depth > _MAX_DEPTH:
        return f"it is nested more than {_MAX_DEPTH} levels deep"
    if kind is float:
        if fmt == "json" and not math.isfinite(value):
            return f"JSON has no {value!r} (it would arrive as None)"
        return None
    if kind is list:
        for item in value:
            why = _problem(item, fmt, depth + 1)
            if why:
                return why
        return None
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"a {type(key).__name__} dict key would arrive as a string"
            why = _problem(item, fmt, depth + 1)
            if why:
                return why
        return None
    if fmt == "msgpack":
        if kind is bytes:
            return None
        if kind is datetime and value.tzinfo is not None:
            return None
    try:
        (msgspec.json if fmt == "json" else msgspec.msgpack).encode(value)
    except (TypeError, ValueError, OverflowError):
        return f"a {kind.__name__} cannot be represented in {fmt}"
    return f"a {kind.__name__} would arrive as {_arrives_as(value, fmt)}"


def _arrives_as(value: Any, fmt: str) -> str:
    if isinstance(value, (tuple, set, frozenset)):
        return "a list"
    if isinstance(value, datetime) and fmt == "msgpack":
        return "a string (naive datetimes have no msgpack timestamp; give it a timezone)"
    if isinstance(value, (bytes, bytearray)):
        return "a base64 string" if fmt == "json" else "bytes"
    return "something else (a string, or a plain number)"


def check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any], fmt: str) -> None:
    """Raise ``SerializationError`` naming the first argument ``fmt`` would change."""
    if fmt == "pickle":
        return
    named = [(f"args[{i}]", v) for i, v in enumerate(args)]
    named += [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    for where, value in named:
        why = _problem(value, fmt, 0)
        if why:
            raise SerializationError(
                f"cannot serialize argument {where} as {fmt}: {why}. Convert it (a list for "
                "a tuple, an ISO string for a datetime...) or use serialization_format='pickle'"
            )
