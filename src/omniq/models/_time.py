"""UTC time helpers shared by the models."""

from __future__ import annotations

from datetime import datetime, timezone

from omniq.exceptions import ValidationError


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


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
    """Validate an optional duration in seconds (int or float, not negative)."""
    if value is None:
        return None
    if type(value) is float and value > 0:  # fast path for decoded values
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{field} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(f"{field} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)
