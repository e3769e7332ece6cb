"""Object stores with conditional writes (S3, GCS, Azure): what the three drivers share.

Each driver module (``s3``, ``gcs``, ``azure``) implements five requests on its client's native
async API: a put that may be conditional (create-only, or only-if-version), a get that returns the
version, a delete that may be conditional, a one-level listing and a recursive one. Everything
else — moves, tree deletes, the capability probe, request counting, error wrapping — lives here.

No listing cache is used: other workers' writes must be visible at the next listing.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.util
import logging
import os
from abc import abstractmethod
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

from omniq.exceptions import MissingDependencyError, OmniQError, StorageError
from omniq.storage.file.objects import (
    NO_GUARANTEES,
    Capabilities,
    ObjectStore,
    VersionMismatch,
)

logger = logging.getLogger("omniq.storage.file")

T = TypeVar("T")

CONDITIONAL = Capabilities(atomic_rename=False, conditional_create=True, compare_and_swap=True)
PROBE_DIR = ".omniq-probe"


class CloudObjectStore(ObjectStore):
    """An object store reached over HTTP by an async fsspec driver's own client.

    ``root`` is ``bucket/prefix``. Keys are relative to it. ``requests`` counts HTTP requests by
    kind (``put``, ``get``, ``delete``, ``list``), one per request sent, pages included.
    """

    protocol = ""
    page_size = 1000  # names per listing request (the most S3 returns)
    driver = ""  # the fsspec driver package whose client is used
    extra = ""  # the omniq extra that installs it

    def __init__(self, root: str, options: dict[str, Any]) -> None:
        if importlib.util.find_spec(self.driver) is None:
            raise MissingDependencyError(
                f"{self.protocol}:// needs {self.driver}: pip install 'omniq[{self.extra}]'"
            )
        bucket, _, prefix = root.strip("/").partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.options = dict(options)
        self.url = f"{self.protocol}://{root.strip('/')}"
        self.requests = Counter()
        self.capabilities = CONDITIONAL  # until the probe at open says otherwise
        self._opens = 0  # open() and close() nest: the client lives until the last close

    # ------------------------------------------------------------- the driver's requests

    @abstractmethod
    async def _connect(self) -> None:
        """Create the client on the running event loop."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close the client's connections."""

    @abstractmethod
    async def _put(self, path: str, data: bytes, *, create: bool, version: str | None) -> str:
        """PUT ``data``; ``create``: only if absent (``FileExistsError``); ``version``: only if
        unchanged (``VersionMismatch``). Return the new version."""

    @abstractmethod
    async def _get(self, path: str) -> tuple[bytes, str]:
        """GET bytes and version; ``FileNotFoundError`` if absent."""

    @abstractmethod
    async def _delete(self, path: str, version: str | None) -> bool:
        """DELETE; ``False`` if absent; ``VersionMismatch`` if ``version`` no longer matches."""

    @abstractmethod
    def _pages(
        self, prefix: str, recursive: bool, page_size: int, start_after: str | None = None
    ) -> AsyncGenerator[builtins.list[str], None]:
        """Paths under ``prefix`` (which ends in '/'), a page (one request, at most
        ``page_size`` entries) at a time, in name order: one level (files and sub-folders, a
        folder with a trailing '/'), or every object below it. Stores that ``seek`` start
        after the path ``start_after`` server-side; the others may ignore it (the caller
        filters)."""

    async def _list(self, prefix: str, recursive: bool) -> builtins.list[str]:
        pages = self._pages(prefix, recursive, self.page_size)
        return [path async for page in pages for path in page]

    @abstractmethod
    async def _ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (emulators and first runs)."""

    # --------------------------------------------------------------------- the seam

    def _path(self, key: str) -> str:
        return self.prefix + key

    def _fail(self, exc: Exception, action: str, key: str) -> StorageError:
        err = StorageError(f"cannot {action} ({exc})", f"{self.url}/{key}")
        err.__cause__ = exc
        return err

    async def _call(self, action: str, key: str, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except (FileNotFoundError, FileExistsError, VersionMismatch, NotImplementedError,
                StopAsyncIteration):  # fmt: skip
            raise
        except OmniQError:  # already says what went wrong (StorageError, MissingDependencyError)
            raise
        except Exception as exc:
            raise self._fail(exc, action, key) from exc

    async def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        await self._call(
            "write", key, self._put(self._path(key), data, create=exclusive, version=None)
        )

    async def get(self, key: str) -> bytes:
        data, _ = await self._call("read", key, self._get(self._path(key)))
        return data

    async def create(self, key: str, data: bytes) -> str:
        return await self._call(
            "create", key, self._put(self._path(key), data, create=True, version=None)
        )

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        return await self._call("read", key, self._get(self._path(key)))

    async def replace(self, key: str, data: bytes, version: str) -> str:
        return await self._call(
            "write", key, self._put(self._path(key), data, create=False, version=version)
        )

    async def delete(self, key: str) -> bool:
        return await self._call("delete", key, self._delete(self._path(key), None))

    async def delete_version(self, key: str, version: str) -> bool:
        return await self._call("delete", key, self._delete(self._path(key), version))

    @staticmethod
    def _names(base: str, paths: builtins.list[str]) -> builtins.list[str]:
        names = (p[len(base) :].rstrip("/") for p in paths)
        return [n for n in names if n and "/" not in n and not n.startswith(".")]

    async def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.strip("/")) + "/"
        return self._names(base, await self._call("list", prefix, self._list(base, False)))

    async def list_pages(
        self, prefix: str, page_size: int | None = None, start_after: str | None = None
    ) -> AsyncGenerator[builtins.list[str], None]:
        base = self._path(prefix.strip("/")) + "/"
        after = None if start_after is None else base + start_after
        pages = self._pages(base, False, page_size or self.page_size, after)
        try:
            while True:
                try:
                    page = await self._call("list", prefix, anext(pages))
                except StopAsyncIteration:
                    return
                names = self._names(base, page)
                yield names if start_after is None else [n for n in names if n > start_after]
        finally:
            await pages.aclose()

    async def move(self, src: str, dst: str) -> bool:
        """Copy + delete: not atomic. Claims never move on these stores (they use lease
        objects); moves serve only single-owner steps such as setting a corrupt file aside."""
        try:
            data = await self.get(src)
        except FileNotFoundError:
            return False
        await self.put(dst, data)
        await self.discard(src)
        return True

    async def delete_tree(self, prefix: str) -> int:
        base = self._path(prefix.strip("/")) + "/"
        paths = await self._call("list", prefix, self._list(base, True))
        removed = 0
        for path in paths:
            removed += await self._call("delete", path, self._delete(path, None))
        return removed

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self._opens += 1
        if self._opens > 1:
            return
        try:
            await self._call("connect to", "", self._connect())
            await self._call("create the bucket", "", self._ensure_bucket())
            self.capabilities = await self._probe()
        except BaseException:
            await self.close()
            raise
        if not self.capabilities.safe_claims:
            logger.warning(
                "%s did not honour conditional writes in the start-up probe: "
                "claims are not race-free, run one worker only",
                self.url,
            )

    async def close(self) -> None:
        self._opens = max(0, self._opens - 1)
        if self._opens:
            return
        try:
            await self._disconnect()
        except Exception as exc:  # closing must not mask what the caller was doing
            logger.debug("closing %s: %s", self.url, exc)

    async def _probe(self) -> Capabilities:
        """Check once that the store refuses a second create and a stale compare-and-swap.

        Costs five requests at start. A store (or an emulator, or a proxy in between) that
        ignores the conditions would let two workers claim one task.
        """
        key = f"{PROBE_DIR}/{os.getpid()}-{os.urandom(4).hex()}"
        create_ok = cas_ok = False
        try:
            first = await self.create(key, b"1")
            try:
                await self.create(key, b"2")
            except FileExistsError:
                create_ok = True
            second = await self.replace(key, b"3", first)
            try:
                await self.replace(key, b"4", first)
            except VersionMismatch:
                cas_ok = second != first
        except (FileExistsError, VersionMismatch, StorageError) as exc:
            logger.warning("conditional-write probe on %s failed: %s", self.url, exc)
        finally:
            with contextlib.suppress(StorageError):
                await self.delete(key)
        if create_ok and cas_ok:
            return CONDITIONAL
        return NO_GUARANTEES
