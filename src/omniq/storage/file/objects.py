"""The primitive layer: bytes under '/'-separated keys, and an atomic claim.

The four file stores are written once on top of ``ObjectStore``; technologies differ only here.
``LocalObjectStore`` makes plain ``os`` calls (an fsspec call on the async path costs a thread hop,
~10x a plain syscall, see DESIGN.md). ``FsspecObjectStore`` serves memory and any other fsspec
filesystem; ``omniq.storage.file.cloud`` serves S3, GCS and Azure with conditional writes.
Names starting with ``.`` are private (temporary files) and never listed.

Two claim protocols sit on top (docs/storage-protocol.md): stores with ``atomic_rename`` claim by
renaming; stores with ``compare_and_swap`` claim by creating a lease object conditionally and
fence with versioned writes (``create`` / ``get_versioned`` / ``replace`` / ``delete_version``).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import logging
import os
import shutil
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omniq.exceptions import StorageError

logger = logging.getLogger("omniq.storage.file")
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Capabilities:
    """What a store guarantees. Claims are race-free with an atomic rename, or with conditional
    create plus compare-and-swap (the lease-object protocol). ``conditional_delete`` is never
    needed for safety: where a store ignores it, versioned deletes check the version first."""

    atomic_rename: bool
    conditional_create: bool
    compare_and_swap: bool = False
    conditional_delete: bool = False

    @property
    def safe_claims(self) -> bool:
        return self.atomic_rename or (self.conditional_create and self.compare_and_swap)


NO_GUARANTEES = Capabilities(atomic_rename=False, conditional_create=False, compare_and_swap=False)
IN_PROCESS_CAPABILITIES = Capabilities(
    atomic_rename=True, conditional_create=True, compare_and_swap=True, conditional_delete=True
)


class NotAnObjectError(StorageError):
    """The key names something that is not a plain object: a directory, a symbolic link, a
    device. OmniQ never reads through it; readers set it aside as corrupt."""


class VersionMismatch(Exception):
    """A conditional write or delete found the object changed (or gone) since its version."""


class ObjectStore(ABC):
    """Bytes under keys. Missing objects are ``FileNotFoundError``; any other failure is
    ``StorageError`` naming the key. ``requests`` counts the calls made, by kind."""

    capabilities: Capabilities
    url: str
    requests: Counter[str]

    @abstractmethod
    async def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Write ``data`` atomically (readers see all or nothing). With ``exclusive``, raise
        ``FileExistsError`` instead of replacing an existing object."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` if it does not exist."""

    @abstractmethod
    async def list(self, prefix: str) -> list[str]:
        """Names (not keys) of the objects directly under ``prefix``; ``[]`` if there is none.

        Local directories list regular files only (never directories or symbolic links);
        object stores list the sub-prefixes too, which readers tell apart by their names."""

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Names of the sub-prefixes (directories) directly under ``prefix``."""
        return await self.list(prefix)

    async def list_modified(self, prefix: str) -> dict[str, float | None]:
        """``list`` with each object's last write as the store reports it (seconds since the
        epoch, by the store's clock), or ``None`` where the listing does not say."""
        return dict.fromkeys(await self.list(prefix))

    async def sweep_temp(self, prefix: str, older_than: float) -> int:
        """Remove temporary files of interrupted writes under ``prefix`` that are older than
        ``older_than`` seconds; return how many. Stores whose writes are single requests leave
        none."""
        return 0

    # Whether list_pages can start after a name server-side (else it filters what it lists).
    seeks = False

    @property
    def throttled(self) -> int:
        """Requests retried so far because the store throttled (429, 503 SlowDown) or answered
        with another transient error; 0 where a store never does."""
        return 0

    # Whether ``append`` works (local files); elsewhere an object is only ever rewritten whole.
    appends = False

    async def append(self, key: str, data: bytes) -> None:
        """Add ``data`` at the end of an existing object (``FileNotFoundError`` if it is gone).
        Not atomic: a writer killed in the middle can leave part of ``data``, so only formats
        whose reader drops a partial tail append (``Serializer.appends``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot append to an object")

    async def list_pages(
        self, prefix: str, page_size: int | None = None, start_after: str | None = None
    ) -> AsyncGenerator[builtins.list[str], None]:
        """``list`` in pages (of about ``page_size`` names), in name order, for callers that may
        stop early: on stores that list over HTTP each page is one request. Only names after
        ``start_after`` are listed. Stores that list in one call yield one page."""
        names = sorted(await self.list(prefix))
        yield names if start_after is None else [n for n in names if n > start_after]

    async def list_folders(
        self, prefix: str, folders: Sequence[str], page_size: int | None = None
    ) -> AsyncGenerator[builtins.list[tuple[str, str]], None]:
        """``(folder, name)`` for the names ``list`` gives in each of the sibling ``folders``
        of ``prefix``, in pages, in (folder, name) order. Stores that ``seek`` list them
        together: one request for a page of up to ``page_size`` names, where listing the
        folders one by one takes a request each. The others list one folder after another."""
        for folder in sorted(folders, key=lambda folder: folder + "/"):
            names = sorted(await self.list(f"{prefix}/{folder}"))
            yield [(folder, name) for name in names]

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            await self.get(key)
        except FileNotFoundError:
            return False
        return True

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove an object; ``False`` if it was not there."""

    async def discard(self, key: str) -> None:
        """Remove an object if it is there, without asking whether it was (one request less on
        stores whose delete does not say, such as S3)."""
        await self.delete(key)

    @abstractmethod
    async def move(self, src: str, dst: str) -> bool:
        """Move ``src`` to ``dst``; ``False`` if ``src`` is gone. Exactly one of any number of
        racing movers of the same ``src`` gets ``True`` when ``capabilities.atomic_rename``."""

    @abstractmethod
    async def delete_tree(self, prefix: str) -> int:
        """Remove everything under ``prefix``; return how many objects were removed."""

    # Versioned operations, for stores with ``compare_and_swap`` (the lease-object protocol).
    # A version is an opaque string: an ETag on S3 and Azure, a generation on GCS.

    async def create(self, key: str, data: bytes) -> str:
        """Write ``data`` only if ``key`` does not exist (``FileExistsError`` otherwise);
        return the new version."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and version; ``FileNotFoundError`` if it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    async def replace(self, key: str, data: bytes, version: str) -> str:
        """Overwrite ``key`` only if it still has ``version`` (else ``VersionMismatch``, also
        when it is gone); return the new version."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    async def delete_version(self, key: str, version: str) -> bool:
        """Delete ``key`` only if it still has ``version``; ``False`` if it is gone,
        ``VersionMismatch`` if it changed."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def local_directory(self, prefix: str) -> str | None:
        """The local directory that holds ``prefix``, for file-system notifications; ``None``
        where there is none (memory, buckets)."""
        return None

    async def open(self) -> None:  # noqa: B027 - optional hook, most stores need nothing
        """Prepare the store (create the base directory where that means something)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (none for local stores)."""


def _wrap(exc: OSError, action: str, path: str) -> StorageError:
    err = StorageError(f"cannot {action} ({exc.strerror or exc})", path)
    err.__cause__ = exc
    return err


_IO_THREADS: concurrent.futures.ThreadPoolExecutor | None = None
_IO_LOCK = threading.Lock()


async def _off_loop(call: Callable[[], None]) -> None:
    """Run a blocking call that waits on the disk (an fsync) in a small shared thread pool.

    Only where it pays: a thread hop costs more than a plain small write (measured: 4 slots
    writing through the pool were 1.2-1.9x slower without fsync, 1.1-2.9x faster with it)."""
    global _IO_THREADS
    if _IO_THREADS is None:
        with _IO_LOCK:
            if _IO_THREADS is None:
                _IO_THREADS = concurrent.futures.ThreadPoolExecutor(4, "omniq-io")
    await asyncio.get_running_loop().run_in_executor(_IO_THREADS, call)


class LocalObjectStore(ObjectStore):
    """A local directory through plain ``os`` calls: temp file + ``os.replace`` for writes,
    ``os.link`` for exclusive creates, ``os.rename`` for claims. ``fsync`` makes writes survive
    power loss (file and directory are flushed), at the cost measured in the README.

    Nothing outside the base directory is ever read, written or moved: listings show regular
    files only, reads refuse anything that is not one (``O_NOFOLLOW``), and a directory below
    the base that turns out to be a symbolic link is refused with ``StorageError``. Directories
    are checked again at most every ``DIR_CHECK_SECONDS`` (a syscall per directory per access
    would cost more than the claim itself).
    """

    capabilities = Capabilities(atomic_rename=True, conditional_create=True)
    DIR_CHECK_SECONDS = 1.0
    _READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)

    def __init__(self, root: str, *, fsync: bool = False) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = "file://" + self.root
        self.fsync = fsync
        self.requests = Counter()  # not counted: local calls are syscalls, not requests
        self._checked_dirs: dict[str, float] = {}  # directory -> monotonic time of its check
        self._refused: set[str] = set()  # non-regular entries already reported

    async def open(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise _wrap(exc, "create the base directory", self.root) from exc
        if not os.access(self.root, os.W_OK):
            raise StorageError("the base directory is not writable", self.root)

    def _path(self, key: str) -> str:
        path = self.root + "/" + key  # keys are built from validated names
        self._check_dir(path[: path.rfind("/")])
        return path

    def local_directory(self, prefix: str) -> str | None:
        return self.root + "/" + prefix

    def _dir_path(self, prefix: str) -> str:
        path = self.root + "/" + prefix
        self._check_dir(path)
        return path

    def _check_dir(self, directory: str) -> None:
        """Refuse a directory below the base that is, or lies under, a symbolic link."""
        now = time.monotonic()
        if now - self._checked_dirs.get(directory, -1e9) < self.DIR_CHECK_SECONDS:
            return
        complete = True
        current = directory
        while len(current) > len(self.root):
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                # Not created yet (check again once it exists), or a file stands where a
                # directory should: the call itself fails or finds nothing there.
                complete = False
            except OSError as exc:
                raise _wrap(exc, "inspect", current) from exc
            else:
                if stat.S_ISLNK(mode):
                    logger.error("refused a symbolic link inside the base: %s", current)
                    raise StorageError(
                        "refusing to follow a symbolic link inside the base directory", current
                    )
            current = os.path.dirname(current)
        if complete:
            self._checked_dirs[directory] = now

    @staticmethod
    def _temp_name(directory: str) -> str:
        # Random, not a counter: a pid can be reused after a restart and a forked child
        # inherits its parent's counter.
        return os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(8).hex()}")

    def _open_temp(self, directory: str) -> tuple[str, int]:
        for _ in range(3):
            tmp = self._temp_name(directory)
            try:
                return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
                self._check_dir(directory)
        tmp = self._temp_name(directory)
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    async def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        if self.fsync:  # waits on the disk: let other slots run meanwhile
            await _off_loop(functools.partial(self.put_sync, key, data, exclusive=exclusive))
        else:
            self.put_sync(key, data, exclusive=exclusive)

    def put_sync(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        tmp = ""
        try:
            tmp, fd = self._open_temp(directory)
            try:
                self._write_all(fd, data)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(tmp, path)
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, path)
            if self.fsync:
                self._fsync_dir(directory)
        except FileExistsError:
            if exclusive and tmp:
                raise
            raise StorageError("cannot write (the path exists and is not a file)", path) from None
        except OSError as exc:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise _wrap(exc, "write", path) from exc

    appends = True
    # O_NONBLOCK: a FIFO planted under the name fails to open (ENXIO) instead of blocking.
    _APPEND_FLAGS = (
        os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    )

    async def append(self, key: str, data: bytes) -> None:
        # No new inode and none freed: on the measured disk, rewriting a small file through a
        # temp file cost ~10x an append (creating and freeing blocks dominate).
        if self.fsync:
            await _off_loop(functools.partial(self._append_sync, key, data))
        else:
            self._append_sync(key, data)

    def _open_file(self, path: str, flags: int, action: str) -> int:
        """Open a regular file (never through a symbolic link): ``FileNotFoundError`` if it is
        gone, ``NotAnObjectError`` if something else stands there."""
        try:
            fd = os.open(path, flags)
        except NotADirectoryError as exc:  # a file stands where a folder of the key should
            raise FileNotFoundError(exc.errno, exc.strerror, path) from exc
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotAnObjectError(f"refusing to {action} a symbolic link", path) from exc
            raise _wrap(exc, action, path) from exc
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            os.close(fd)
            raise _wrap(exc, action, path) from exc
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise NotAnObjectError("not a regular file", path)
        return fd

    def _write_all(self, fd: int, data: bytes) -> None:
        """Write all of ``data`` (a write may take part of it), flushed to disk with ``fsync``."""
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if self.fsync:
            os.fsync(fd)

    def _append_sync(self, key: str, data: bytes) -> None:
        path = self._path(key)
        fd = self._open_file(path, self._APPEND_FLAGS, "append to")
        try:
            self._write_all(fd, data)
        except OSError as exc:
            raise _wrap(exc, "append to", path) from exc
        finally:
            os.close(fd)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        fd = self._open_file(path, self._READ_FLAGS, "read")  # ~2x faster than open()
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise _wrap(exc, "read", path) from exc
        finally:
            os.close(fd)

    def _scan(self, prefix: str, want_dirs: bool) -> list[str]:
        """Regular files (or directories) directly under ``prefix``; anything else found there
        is reported once and left alone."""
        path = self._dir_path(prefix)
        names: list[str] = []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    name = entry.name
                    if name[0] == ".":
                        continue
                    if want_dirs:
                        wanted = entry.is_dir(follow_symlinks=False)
                        expected = wanted or entry.is_file(follow_symlinks=False)
                    else:
                        wanted = expected = entry.is_file(follow_symlinks=False)
                    if wanted:
                        names.append(name)
                    elif not expected:  # a link, a device: a file among folders is normal
                        self._refuse(f"{path}/{name}", "a directory" if want_dirs else "a file")
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _wrap(exc, "list", path) from exc
        return names

    def _refuse(self, path: str, expected: str) -> None:
        """Report (once per process) an entry of the wrong kind: it is never read or moved."""
        if path not in self._refused:
            self._refused.add(path)
            logger.warning(
                "ignored %s: expected %s (symbolic links are never followed)", path, expected
            )

    async def list(self, prefix: str) -> list[str]:
        return self._scan(prefix, want_dirs=False)

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        return self._scan(prefix, want_dirs=True)

    async def sweep_temp(self, prefix: str, older_than: float) -> int:
        top = self._dir_path(prefix)
        cutoff = time.time() - older_than
        removed = 0
        for directory, _, files in os.walk(top):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(directory, name)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.warning("could not remove temporary file %s: %s", path, exc)
        return removed

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):  # a file where a folder should be
            return False
        except OSError as exc:
            raise _wrap(exc, "inspect", path) from exc
        return True

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _wrap(exc, "delete", path) from exc

    async def move(self, src: str, dst: str) -> bool:
        src_path, dst_path = self._path(src), self._path(dst)
        try:
            os.rename(src_path, dst_path)
        except FileNotFoundError:
            directory = os.path.dirname(dst_path)
            if os.path.isdir(directory):
                return False  # the source is gone: another mover won
            try:
                os.makedirs(directory, exist_ok=True)
                self._check_dir(directory)
                os.rename(src_path, dst_path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _wrap(exc, "move", f"{src_path} -> {dst_path}") from exc
        except OSError as exc:
            raise _wrap(exc, "move", f"{src_path} -> {dst_path}") from exc
        if self.fsync:
            await _off_loop(functools.partial(self._fsync_dirs, dst_path, src_path))
        return True

    def _fsync_dirs(self, *paths: str) -> None:
        for path in paths:
            self._fsync_dir(os.path.dirname(path))

    async def delete_tree(self, prefix: str) -> int:
        path = self._dir_path(prefix)
        count = sum(len(files) for _, _, files in os.walk(path))
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise _wrap(exc, "delete", path) from exc
        return count

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Memory filesystems live in this process only, so one lock makes their check-then-act atomic.
_process_lock = threading.Lock()


class FsspecObjectStore(ObjectStore):
    """Any fsspec filesystem (``memory://`` and others) through its blocking API.

    ``fs`` is rooted at the base directory (a ``DirFileSystem``). In-process stores (memory) get
    atomic moves, exclusive creates and compare-and-swap from a process lock (versions are content
    hashes, as S3's ETags are). Other protocols get none of these here: moves are copy + delete,
    safe for one consumer only, and the backend says so at open.
    """

    IN_PROCESS = frozenset({"memory"})

    def __init__(self, fs: Any, protocol: str, url: str) -> None:
        self.fs = fs
        self.url = url
        self.requests = Counter()
        self._in_process = protocol in self.IN_PROCESS
        self.capabilities = IN_PROCESS_CAPABILITIES if self._in_process else NO_GUARANTEES

    def _guard(self) -> Any:
        return _process_lock if self._in_process else _NullLock()

    async def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        try:
            with self._guard():
                if exclusive and self.fs.exists(key):
                    raise FileExistsError(errno.EEXIST, "exists", key)
                self.fs.pipe_file(key, data)
        except FileExistsError:
            raise
        except OSError as exc:
            raise _wrap(exc, "write", f"{self.url}/{key}") from exc

    async def get(self, key: str) -> bytes:
        try:
            data = self.fs.cat_file(key)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _wrap(exc, "read", f"{self.url}/{key}") from exc
        return bytes(data)

    def _entries(self, prefix: str, kind: str) -> builtins.list[str]:
        try:
            self.fs.invalidate_cache(prefix)
            entries = self.fs.ls(prefix, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _wrap(exc, "list", f"{self.url}/{prefix}") from exc
        names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == kind)
        return [n for n in names if n and not n.startswith(".")]

    async def list(self, prefix: str) -> builtins.list[str]:
        return self._entries(prefix, "file")

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        return self._entries(prefix, "directory")

    async def delete(self, key: str) -> bool:
        try:
            with self._guard():
                self.fs.rm_file(key)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _wrap(exc, "delete", f"{self.url}/{key}") from exc

    async def move(self, src: str, dst: str) -> bool:
        # Read + write + delete: fsspec's generic mv expands paths with listings, which costs
        # O(objects in the store) per call on memory filesystems.
        try:
            with self._guard():
                data = self.fs.cat_file(src)
                self.fs.pipe_file(dst, data)
                self.fs.rm_file(src)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _wrap(exc, "move", f"{self.url}/{src} -> {dst}") from exc

    # Versioned operations: memory only (under the process lock).

    def _need_lock(self) -> None:
        if not self._in_process:
            raise NotImplementedError(f"{self.url} has no conditional writes")

    @staticmethod
    def _version(data: bytes) -> str:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    async def create(self, key: str, data: bytes) -> str:
        self._need_lock()
        await self.put(key, data, exclusive=True)
        return self._version(data)

    async def get_versioned(self, key: str) -> tuple[bytes, str]:
        self._need_lock()
        data = await self.get(key)
        return data, self._version(data)

    async def replace(self, key: str, data: bytes, version: str) -> str:
        self._need_lock()
        with _process_lock:
            try:
                current = bytes(self.fs.cat_file(key))
            except FileNotFoundError:
                raise VersionMismatch(key) from None
            if self._version(current) != version:
                raise VersionMismatch(key)
            self.fs.pipe_file(key, data)
        return self._version(data)

    async def delete_version(self, key: str, version: str) -> bool:
        self._need_lock()
        with _process_lock:
            try:
                current = bytes(self.fs.cat_file(key))
            except FileNotFoundError:
                return False
            if self._version(current) != version:
                raise VersionMismatch(key)
            self.fs.rm_file(key)
        return True

    async def delete_tree(self, prefix: str) -> int:
        try:
            with self._guard():
                files = self.fs.find(prefix)
                if files:
                    self.fs.rm(files)
                if self.fs.exists(prefix):
                    self.fs.rm(prefix, recursive=True)
            return len(files)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise _wrap(exc, "delete", f"{self.url}/{prefix}") from exc


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
