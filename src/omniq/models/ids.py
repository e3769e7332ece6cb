"""Ids that sort by creation time, and the checks that keep names inside the base directory."""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from typing import TypeGuard

from omniq.exceptions import ValidationError

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())
_RANDOM_BITS = 80
_lock = threading.Lock()
_last_ms = -1
_last_random = 0

# Ids and queue names become single path components: no separators, no dots at the start
# (``..``, hidden temp files), nothing outside a portable alphabet.
ID_PATTERN = r"[A-Za-z0-9_-]{1,128}"
_ID_RE = re.compile(ID_PATTERN)
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def new_id() -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds, then 80 bits that rise within one ms.

    Ids made in one process sort in creation order; across processes they sort by millisecond.
    """
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _last_random = (_last_random + 1) & ((1 << _RANDOM_BITS) - 1)
        else:
            _last_ms = ms
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # leave room to rise
        value = (ms << _RANDOM_BITS) | _last_random
    # 26 base-32 digits of the 128-bit value, most significant first: base64's base 32 of the
    # value moved to the top of 160 bits (its first 26 digits), in Crockford's alphabet.
    return (
        base64.b32encode((value << 30).to_bytes(20, "big"))[:26].translate(_TO_CROCKFORD).decode()
    )


def is_valid_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def is_valid_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a safe id (1-128 of ``A-Z a-z 0-9 _ -``), else raise."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):  # inline: a hot path
        raise ValidationError(
            f"invalid {what} {value!r}: use 1-128 characters from A-Z, a-z, 0-9, '_' and '-'"
        )
    return value


def validate_name(value: object, what: str = "queue name") -> str:
    """Return ``value`` if it is a safe single path component, else raise ``ValidationError``.

    Rejects separators, ``..``, absolute paths, NUL and anything starting with a dot.
    """
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValidationError(
            f"invalid {what} {value!r}: use 1-128 characters from A-Z, a-z, 0-9, '_', '-' "
            "and '.', not starting with '.'"
        )
    return value
