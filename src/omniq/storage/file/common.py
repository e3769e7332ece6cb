"""What the four file stores share: the object store, the serializer, and corrupt-file handling."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from omniq.exceptions import CorruptFileError, SerializationError
from omniq.models.config import FileConfig
from omniq.serialization import Serializer, codec_for_extension
from omniq.storage.file.objects import NotAnObjectError, ObjectStore
from omniq.storage.lifecycle import from_ms as from_ms
from omniq.storage.lifecycle import to_ms as to_ms

logger = logging.getLogger("omniq.storage.file")

T = TypeVar("T")

CORRUPT_DIR = "corrupt"

# Called with (original key, key it was moved to or None, the decoding error).
CorruptionReporter = Callable[[str, "str | None", Exception], Awaitable[None]]


@dataclass
class FileStoreContext:
    """The parts every file store of one backend shares."""

    objects: ObjectStore
    serializer: Serializer
    config: FileConfig
    reporters: list[CorruptionReporter] = field(default_factory=list)

    @property
    def ext(self) -> str:
        return self.serializer.extension

    def is_data_name(self, name: str) -> bool:
        return codec_for_extension(name) is not None

    async def read(self, key: str, type: type[T]) -> T:
        """Read and decode one object; a corrupt one is set aside and ``CorruptFileError`` raised.

        ``FileNotFoundError`` passes through: the object is gone, which callers expect in races.
        """
        try:
            data = await self.objects.get(key)
            return self.serializer.decode(data, type, key)
        except (SerializationError, NotAnObjectError) as exc:
            moved_to = await self.set_aside(key, exc)
            raise CorruptFileError(str(exc), key, moved_to) from exc

    async def read_many(self, keys: list[str], type: type[T]) -> list[T]:
        """Read several objects, skipping ones that vanished or were corrupt (set aside)."""
        out: list[T] = []
        for key in keys:
            try:
                out.append(await self.read(key, type))
            except (FileNotFoundError, CorruptFileError):
                continue
        return out

    async def set_aside(self, key: str, error: Exception) -> str | None:
        """Move an unreadable object under ``corrupt/`` (same relative key), log and report it."""
        target = f"{CORRUPT_DIR}/{key}"
        try:
            moved = await self.objects.move(key, target)
        except Exception as exc:  # a failed move must not stop the caller either
            logger.error("could not set aside corrupt file %s: %s", key, exc)
            moved = False
        moved_to = target if moved else None
        await self.report(key, moved_to, error)
        return moved_to

    async def report(self, key: str, moved_to: str | None, error: Exception) -> None:
        """Log and report an unreadable object (set aside to ``moved_to``, or left in place)."""
        where = f"set aside to {moved_to}" if moved_to else "left in place"
        logger.warning("corrupt file %s %s: %s", key, where, error)
        for report in self.reporters:
            try:
                await report(key, moved_to, error)
            except Exception as exc:
                logger.error("corruption reporter failed for %s: %s", key, exc)
