"""Backends bundle the four stores of one storage technology."""

from omniq.backend.base import Backend

__all__ = ["Backend"]
