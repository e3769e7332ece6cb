"""Object stores with conditional writes (S3, GCS, Azure): what the three drivers share.

Each driver module (``s3``, ``gcs``, ``azure``) implements five requests on its client's native
async API: a put that may be conditional (create-only, or only-if-version), a get that returns the
version, a delete that may be conditional, a one-level listing and a recursive one. Everything
else — moves, tree deletes, the capability probe, retries of throttled requests and of write
conflicts, request counting, error wrapping — lives here.

No listing cache is used: other workers' writes must be visible at the next listing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import functools
import importlib.util
import logging
import os
import random
from abc import abstractmethod
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from omniq.exceptions import MissingDependencyError, OmniQError, StorageError
from omniq.models._time import utcnow_ms
from omniq.storage.file.objects import (
    NO_GUARANTEES,
    Capabilities,
    ObjectStore,
    VersionMismatch,
)

logger = logging.getLogger("omniq.storage.file")

T = TypeVar("T")

CONDITIONAL = Capabilities(
    atomic_rename=False, conditional_create=True, compare_and_swap=True, conditional_delete=True
)
PROBE_DIR = ".omniq-probe"
THROTTLED = frozenset({429, 503})  # "slow down": S3 SlowDown, GCS and Azure rate limits
# Answers worth another try besides those: the server failed, not the request.
RETRIED = THROTTLED | {408, 500, 502, 504}
# How a version can be sent in ``If-Match``: as the store returned it, or with the quotes of an
# ETag taken off or put on (Ceph RGW refuses its own quoted ETag and takes it unquoted).
MATCH_FORMS = ("as returned", "unquoted", "quoted")


#: Requests (and retries) that must not start after this time (epoch ms, OmniQ's clock): a settle
#: whose record a reaper may take over from then on must not land a write after the reaper's.
_DEADLINE: contextvars.ContextVar[int | None] = contextvars.ContextVar("deadline", default=None)


@contextlib.contextmanager
def deadline(at_ms: int) -> Iterator[None]:
    """Within the block, cloud requests (and their retries) are not started at or after
    ``at_ms``: the call fails with ``StorageError`` instead."""
    token = _DEADLINE.set(at_ms)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _past_deadline(wait: float = 0.0) -> bool:
    at_ms = _DEADLINE.get()
    return at_ms is not None and utcnow_ms() + int(wait * 1000) >= at_ms


class WriteConflict(Exception):
    """The store refused a conditional write because another request on the same object was in
    flight (S3 ``409 ConditionalRequestConflict``); it asks for the write to be retried. It
    says nothing about who holds the object."""


class ConflictError(StorageError):
    """The store kept answering ``WriteConflict`` to a conditional write (a create is retried
    once, a compare-and-swap until ``Backoff.attempts``): the object is busy, which says
    nothing about who holds it."""


def http_status(exc: BaseException | None) -> int | None:
    """The HTTP status behind a driver's exception (botocore, gcsfs, azure-core, aiohttp),
    following the chain of causes; ``None`` if there was no HTTP answer."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
        for attr in ("status_code", "status", "code"):
            value = getattr(exc, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                return value
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with full jitter: the wait before retry ``n`` (from 0) is uniform
    in ``[0, min(cap, base * 2**n)]``; ``attempts`` requests in all, then the error stands.
    Tests inject a short one (``store.backoff = Backoff(base=0.001)``)."""

    attempts: int = 8
    base: float = 0.05
    cap: float = 5.0

    def delay(self, retry: int) -> float:
        return random.uniform(0.0, min(self.cap, self.base * 2**retry))


class CloudObjectStore(ObjectStore):
    """An object store reached over HTTP by an async fsspec driver's own client.

    ``root`` is ``bucket/prefix``. Keys are relative to it. ``requests`` counts HTTP requests by
    kind (``put``, ``get``, ``delete``, ``list``), one per request sent, pages included, and the
    retries of throttled requests (``throttled``) and of write conflicts (``conflict``).
    ``probe_report`` says what the start-up probe found, capability by capability.
    """

    protocol = ""
    page_size = 1000  # names per listing request (the most S3 returns)
    driver = ""  # the fsspec driver package whose client is used
    extra = ""  # the omniq extra that installs it
    match_forms: tuple[str, ...] = ("as returned",)  # If-Match forms the probe tries, in order
    refused_status: int | None = None  # the status of a refusal, where the driver drops it

    #: The provider's limit on writes to one object name (GCS: one per second, answered 429).
    #: A throttled write (or delete) of a key this process wrote less than this long ago is
    #: retried once the interval has passed, not after a random back-off: a short task's lease
    #: object is created, replaced and deleted within a second, and the back-off's early
    #: retries were all refused until they ran out ("could not record its outcome").
    object_write_interval: float = 0.0
    #: Failures without an HTTP answer that another try may cure (drivers add theirs).
    transient_errors: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)

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
        self.probe_report: dict[str, str] = {}
        self.match_form = "as returned"
        self.backoff = Backoff()
        self._opens = 0  # open() and close() nest: the client lives until the last close
        self._written: dict[str, float] = {}  # key -> loop time of this process's last write

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
        unchanged (``VersionMismatch``; send it through ``_match_value``). Return the new
        version. ``WriteConflict`` where the store asks to retry."""

    @abstractmethod
    async def _get(self, path: str) -> tuple[bytes, str]:
        """GET bytes and version; ``FileNotFoundError`` if absent."""

    @abstractmethod
    async def _delete(self, path: str, version: str | None) -> bool:
        """DELETE; ``False`` if absent; ``VersionMismatch`` if ``version`` no longer matches."""

    @abstractmethod
    def _pages(
        self,
        prefix: str,
        recursive: bool,
        page_size: int,
        start_after: str | None = None,
        modified: dict[str, float] | None = None,
    ) -> AsyncGenerator[builtins.list[str], None]:
        """Paths under ``prefix`` (which ends in '/'), a page (one request, at most
        ``page_size`` entries) at a time, in name order: one level (files and sub-folders, a
        folder with a trailing '/'), or every object below it. Stores that ``seek`` start
        after the path ``start_after`` server-side; the others may ignore it (the caller
        filters). Into ``modified``, if given, each listed object's last write (seconds since
        the epoch, as the listing reports it)."""

    async def _list(
        self, prefix: str, recursive: bool, modified: dict[str, float] | None = None
    ) -> builtins.list[str]:
        pages = self._pages(prefix, recursive, self.page_size, None, modified)
        return [path async for page in pages for path in page]

    @abstractmethod
    async def _ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (emulators and first runs)."""

    def _match_value(self, version: str) -> str:
        """``version`` in the ``If-Match`` form the probe found the store honours."""
        if self.match_form == "unquoted":
            return version.strip('"')
        if self.match_form == "quoted":
            return f'"{version.strip(chr(34))}"'
        return version

    # --------------------------------------------------------------------- the seam

    def _path(self, key: str) -> str:
        return self.prefix + key

    def _fail(self, exc: Exception, action: str, key: str) -> StorageError:
        kind = ConflictError if isinstance(exc, WriteConflict) else StorageError
        err = kind(f"cannot {action} ({exc})", f"{self.url}/{key}")
        err.transient = not isinstance(exc, WriteConflict) and self._transient(exc)
        err.__cause__ = exc
        return err

    def _transient(self, exc: BaseException) -> bool:
        """Whether another try may succeed: a throttling or server-error answer, or no answer
        at all for a reason in ``transient_errors`` (a dropped connection, a timeout)."""
        status = http_status(exc)
        if status is not None:
            return status in RETRIED
        seen: BaseException | None = exc
        for _ in range(5):
            if seen is None:
                return False
            if isinstance(seen, self.transient_errors):
                return True
            seen = seen.__cause__ or seen.__context__
        return False

    @property
    def throttled(self) -> int:
        return self.requests["throttled"]

    async def _throttled(self, exc: Exception, retry: int, action: str, key: str) -> None:
        """Wait before retrying a request that may succeed on another try (``_transient``);
        raise the error (wrapped) if it may not, or the retries are used up. The drivers' own
        retries are turned off: this loop makes every try, so a deadline governs them all."""
        delay = max(self.backoff.delay(retry), self._object_wait(action, key))
        if not self._transient(exc) or retry + 1 >= self.backoff.attempts or _past_deadline(delay):
            if isinstance(exc, OmniQError):
                raise exc
            raise self._fail(exc, action, key) from exc
        self.requests["throttled"] += 1
        logger.debug("%s/%s: throttled (%s); retrying in %.3f s", self.url, key, exc, delay)
        await asyncio.sleep(delay)

    async def _call(self, action: str, key: str, request: Callable[[], Awaitable[T]]) -> T:
        """Send one request (``request()`` makes it), retrying throttled answers with back-off;
        any other failure but the ones callers act on becomes a ``StorageError``."""
        retry = 0
        while True:
            if _past_deadline():
                late = StorageError(f"cannot {action}: past the deadline", f"{self.url}/{key}")
                late.transient = True  # the store was slow: the settle is left to a reaper
                raise late
            try:
                return await request()
            except (FileNotFoundError, FileExistsError, VersionMismatch, WriteConflict,
                    NotImplementedError, StopAsyncIteration):  # fmt: skip
                raise
            except Exception as exc:
                await self._throttled(exc, retry, action, key)
                retry += 1

    async def _write(self, key: str, data: bytes, *, create: bool, version: str | None) -> str:
        path = self._path(key)
        written = await self._call(
            "write", key, lambda: self._put(path, data, create=create, version=version)
        )
        self._wrote(key)
        return written

    def _object_wait(self, action: str, key: str) -> float:
        """Seconds until ``object_write_interval`` has passed since this process last wrote
        ``key`` (0 if it has, or for reads)."""
        last = self._written.get(key)
        if last is None or action not in ("write", "delete"):
            return 0.0
        return max(0.0, last + self.object_write_interval - asyncio.get_running_loop().time())

    def _wrote(self, key: str) -> None:
        if not self.object_write_interval:
            return
        now = asyncio.get_running_loop().time()
        if len(self._written) >= 4096:  # forget the keys whose interval has passed
            horizon = now - self.object_write_interval
            self._written = {k: t for k, t in self._written.items() if t > horizon}
        self._written[key] = now

    async def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        if exclusive:
            await self.create(key, data)
        else:
            await self._write(key, data, create=False, version=None)

    async def get(self, key: str) -> bytes:
        data, _ = await self.get_versioned(key)
        return data

    async def create(self, key: str, data: bytes) -> str:
        if not self.capabilities.conditional_create:  # one consumer only: check, then write
            with contextlib.suppress(FileNotFoundError):
                await self.get_versioned(key)
                raise FileExistsError(f"{self.url}/{key}")
            return await self._write(key, data, create=False, version=None)
        try:
            return await self._write(key, data, create=True, version=None)
        except WriteConflict:
            self.requests["conflict"] += 1
            await asyncio.sleep(self.backoff.delay(0))
        try:  # once: a second conflict means the object is busy, not that someone holds it
            return await self._write(key, data, create=True, version=None)
        except WriteConflict as exc:
            raise self._fail(WriteConflict("409 twice in a row"), "create", key) from exc

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        return await self._call("read", key, lambda: self._get(path))

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        return await self._call("read", key, lambda: self._exists(path))

    async def _exists(self, path: str) -> bool:
        """Whether an object is at ``path``: a read of it, unless the store has a cheaper
        request that says so (S3's HEAD, Azure's properties) without the object's bytes."""
        try:
            await self._get(path)
        except FileNotFoundError:
            return False
        return True

    async def _still(self, key: str, version: str) -> bool:
        """Whether ``key`` still has ``version`` (``False`` if it is gone)."""
        try:
            _, current = await self.get_versioned(key)
        except FileNotFoundError:
            return False
        return current == version

    async def replace(self, key: str, data: bytes, version: str) -> str:
        if not self.capabilities.compare_and_swap:  # one consumer only: check, then write
            if not await self._still(key, version):
                raise VersionMismatch(key)
            return await self._write(key, data, create=False, version=None)
        retry = 0
        while True:
            try:
                return await self._write(key, data, create=False, version=version)
            except WriteConflict as exc:  # re-read: retry only if the version still stands
                await self._conflict(exc, retry, "write", key)
                retry += 1
                if not await self._still(key, version):
                    raise VersionMismatch(key) from exc

    async def _conflict(self, exc: WriteConflict, retry: int, action: str, key: str) -> None:
        self.requests["conflict"] += 1
        delay = self.backoff.delay(retry)
        if retry + 1 >= self.backoff.attempts or _past_deadline(delay):
            raise self._fail(exc, action, key) from exc
        await asyncio.sleep(delay)

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        deleted = await self._call("delete", key, lambda: self._delete(path, None))
        self._wrote(key)
        return deleted

    async def delete_version(self, key: str, version: str) -> bool:
        path = self._path(key)
        retry = 0
        while True:
            if not self.capabilities.conditional_delete:
                # The store ignores the condition: check the version, then delete. The protocol
                # never relies on this delete for safety (docs/storage-protocol.md).
                try:
                    _, current = await self.get_versioned(key)
                except FileNotFoundError:
                    return False
                if current != version:
                    raise VersionMismatch(key)
                return await self.delete(key)
            try:
                deleted = await self._call("delete", key, lambda: self._delete(path, version))
                self._wrote(key)
                return deleted
            except WriteConflict as exc:
                await self._conflict(exc, retry, "delete", key)
                retry += 1

    @staticmethod
    def _names(base: str, paths: builtins.list[str]) -> builtins.list[str]:
        names = (p[len(base) :].rstrip("/") for p in paths)
        return [n for n in names if n and "/" not in n and not n.startswith(".")]

    async def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.strip("/")) + "/"
        return self._names(base, await self._call("list", prefix, lambda: self._list(base, False)))

    async def list_modified(self, prefix: str) -> dict[str, float | None]:
        base = self._path(prefix.strip("/")) + "/"
        modified: dict[str, float] = {}
        paths = await self._call("list", prefix, lambda: self._list(base, False, modified))
        return {name: modified.get(base + name) for name in self._names(base, paths)}

    async def list_pages(
        self, prefix: str, page_size: int | None = None, start_after: str | None = None
    ) -> AsyncGenerator[builtins.list[str], None]:
        base = self._path(prefix.strip("/")) + "/"
        after = None if start_after is None else base + start_after
        async with contextlib.aclosing(self._paged(prefix, base, False, page_size, after)) as pages:
            async for page in pages:
                yield self._names(base, page)

    async def list_folders(
        self, prefix: str, folders: Sequence[str], page_size: int | None = None
    ) -> AsyncGenerator[builtins.list[tuple[str, str]], None]:
        if not self.seeks:  # a listing would start at the first folder there is
            listing = super().list_folders(prefix, folders, page_size)
            async with contextlib.aclosing(listing) as pages:
                async for entries in pages:
                    yield entries
            return
        base = self._path(prefix.strip("/")) + "/"
        # In path order: "running-old/x" sorts before "running/" ('-' before '/').
        wanted = sorted(folders, key=lambda folder: folder + "/")
        end = f"{base}{wanted[-1]}/"
        last: tuple[str, str] | None = None
        paths_listed = self._paged(prefix, base, True, page_size, f"{base}{wanted[0]}/")
        async with contextlib.aclosing(paths_listed) as pages:
            async for paths in pages:
                page: builtins.list[tuple[str, str]] = []
                for path in paths:
                    if path > end and not path.startswith(end):  # past the last folder
                        yield page
                        return
                    folder, _, rest = path[len(base) :].partition("/")
                    # An object in a sub-folder stands for the sub-folder, as ``list`` has it.
                    name = rest.split("/", 1)[0]
                    entry = (folder, name)
                    if folder in wanted and name and not name.startswith(".") and entry != last:
                        page.append(entry)
                        last = entry
                yield page

    async def _paged(
        self, prefix: str, base: str, recursive: bool, page_size: int | None, after: str | None
    ) -> AsyncGenerator[builtins.list[str], None]:
        """``_pages`` of ``base`` (paths after ``after``), a throttled page listed again from
        after the last page."""
        size = page_size or self.page_size
        pages = self._pages(base, recursive, size, after)
        retry = 0
        try:
            while True:
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    await self._throttled(exc, retry, "list", prefix)
                    retry += 1
                    await pages.aclose()
                    pages = self._pages(base, recursive, size, after)
                    continue
                if after is not None:
                    page = [p for p in page if p > after]
                if page:
                    after = page[-1]
                yield page
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
        paths = await self._call("list", prefix, lambda: self._list(base, True))
        removed = 0
        for path in paths:
            removed += await self._call("delete", path, functools.partial(self._delete, path, None))
        return removed

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self._opens += 1
        if self._opens > 1:
            return
        try:
            await self._call("connect to", "", self._connect)
            await self._call("create the bucket", "", self._ensure_bucket)
            self.capabilities = await self._probe()
        except BaseException:
            await self.close()
            raise
        found = "; ".join(f"{what}: {outcome}" for what, outcome in self.probe_report.items())
        if not self.capabilities.safe_claims:
            logger.warning(
                "%s: claims are not race-free here, run one worker with concurrency 1 "
                "(conditional writes found at start: %s)",
                self.url,
                found,
            )
        else:
            logger.info("%s: conditional writes found at start: %s", self.url, found)

    async def close(self) -> None:
        self._opens = max(0, self._opens - 1)
        if self._opens:
            return
        try:
            await self._disconnect()
        except Exception as exc:  # closing must not mask what the caller was doing
            logger.debug("closing %s: %s", self.url, exc)

    async def _probe(self) -> Capabilities:
        """Find out, once at open, which conditional writes the store honours and how.

        Conditional create: a second create of one object must be refused. Compare-and-swap:
        a PUT on the current version must be accepted — in the first ``If-Match`` form of
        ``match_forms`` that the store takes — and one on a stale version refused.
        Conditional delete: a DELETE on a stale version must be refused. ``probe_report`` keeps
        what was found for each, with the HTTP status of each refusal. About eight requests.
        """
        key = f"{PROBE_DIR}/{os.getpid()}-{os.urandom(4).hex()}"
        path = self._path(key)
        report: dict[str, str] = {}
        self.probe_report = report
        put, delete = self._put, self._delete

        async def attempt(request: Callable[[], Awaitable[T]]) -> tuple[T | None, str]:
            """The answer, or ``None`` and "refused (HTTP 412)" / "failed (...)"."""
            for retry in range(self.backoff.attempts):
                try:
                    return await self._call("probe", key, request), "accepted"
                except (FileExistsError, VersionMismatch) as exc:
                    status = http_status(exc) or self.refused_status
                    return None, f"refused (HTTP {status or '?'})"
                except WriteConflict:  # the store asks to retry: ask again
                    await asyncio.sleep(self.backoff.delay(retry))
                except StorageError as exc:
                    return None, f"failed (HTTP {http_status(exc) or '?'}: {exc})"
            return None, "failed (HTTP 409 at every try)"

        create_ok = cas_ok = delete_ok = False
        try:
            first, outcome = await attempt(lambda: put(path, b"1", create=True, version=None))
            if first is None:
                report["conditional create"] = f"a first create {outcome}"
                return NO_GUARANTEES
            again, outcome = await attempt(lambda: put(path, b"2", create=True, version=None))
            create_ok = outcome.startswith("refused")
            report["conditional create"] = (
                f"honoured (a second create was {outcome})" if create_ok
                else f"unusable (a second create was {outcome})"
            )  # fmt: skip
            current = again or first
            second, tried = None, []
            sent: set[str] = set()
            for form in self.match_forms:
                self.match_form = form
                if self._match_value(current) in sent:
                    continue  # the same header as a form already tried
                sent.add(self._match_value(current))
                second, outcome = await attempt(
                    lambda: put(path, b"3", create=False, version=current)
                )
                if second is not None:
                    break
                tried.append(f"{form}: {outcome}")
            others = f" (If-Match {'; '.join(tried)})" if tried else ""
            if second is None:
                self.match_form = self.match_forms[0]
                report["compare-and-swap"] = f"unusable: no If-Match form accepted{others}"
                # Unchanged since the create: give it a new version for the delete check.
                await self._call("probe", key, lambda: put(path, b"5", create=False, version=None))
            else:
                _, outcome = await attempt(lambda: put(path, b"4", create=False, version=current))
                cas_ok = outcome.startswith("refused") and second != current
                report["compare-and-swap"] = (
                    f"honoured with If-Match {self.match_form}{others}; a stale version was "
                    f"{outcome}" if cas_ok
                    else f"unusable: a stale version was {outcome}{others}"
                )  # fmt: skip
            _, latest = await self._call("probe", key, lambda: self._get(path))
            _, outcome = await attempt(lambda: delete(path, first))
            if outcome.startswith("refused"):
                gone, current_outcome = await attempt(lambda: delete(path, latest))
                delete_ok = gone is not None
                report["conditional delete"] = (
                    f"honoured (a stale version was {outcome})" if delete_ok
                    else f"unusable: the current version was {current_outcome}"
                )  # fmt: skip
            else:
                report["conditional delete"] = f"unusable: a stale version was {outcome}"
            if not delete_ok:
                report["conditional delete"] += " (versions are checked before deletes instead)"
        finally:
            with contextlib.suppress(StorageError):
                await self._call("probe", key, lambda: delete(path, None))
        return Capabilities(atomic_rename=False, conditional_create=create_ok,
                            compare_and_swap=cas_ok, conditional_delete=delete_ok)  # fmt: skip
