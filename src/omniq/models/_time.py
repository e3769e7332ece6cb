"""UTC time helpers shared by the models."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from omniq.exceptions import ValidationError

# The latest due time a task can have: its name holds the due time as 13 decimal digits of
# milliseconds since the epoch (2286-11-20). Later times are refused, never wrapped.
MAX_DUE = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=10**13 - 1)
# The longest duration any setting takes (100 years): longer ones overflow date arithmetic.
MAX_SECONDS = 100 * 365.25 * 86400


def system_now() -> datetime:
    return datetime.now(timezone.utc)


_clock: Callable[[], datetime] = system_now


def utcnow() -> datetime:
    """The current time as an aware UTC datetime, from the clock ``set_clock`` installed."""
    return _clock()


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Make every due time, lease expiry and timestamp OmniQ computes read ``clock`` (an aware
    UTC ``datetime`` factory); ``None`` restores the system clock. For tests that move time on
    instead of sleeping: waits and timeouts still run on real (monotonic) time."""
    global _clock
    _clock = clock or system_now


def as_utc(value: object, field: str) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive one is taken as local time."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is timezone.utc:  # the common case, and every decoded value
        return value
    return value.astimezone(timezone.utc)


def optional_utc(value: object, field: str) -> datetime | None:
    return None if value is None else as_utc(value, field)


def check_seconds(value: object, field: str, *, allow_zero: bool = True) -> float | None:
    """Validate an optional duration in seconds: a finite int or float, not negative, at most
    ``MAX_SECONDS`` (100 years)."""
    if value is None:
        return None
    if type(value) is float and 0 < value <= MAX_SECONDS:  # fast path; NaN fails it too
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{field} must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValidationError(f"{field} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(f"{field} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    if value > MAX_SECONDS:
        raise ValidationError(
            f"{field} must be at most {MAX_SECONDS:.0f} s (100 years), got {value!r}"
        )
    return float(value)


def check_due(value: datetime, field: str) -> datetime:
    """Refuse a due time past ``MAX_DUE`` (the largest one a task name holds)."""
    if value > MAX_DUE:
        raise ValidationError(
            f"{field} must be no later than {MAX_DUE.isoformat()}, got {value.isoformat()}"
        )
    return value
