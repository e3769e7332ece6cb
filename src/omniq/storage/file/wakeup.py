"""Wake-ups for idle consumers: a waiting ``dequeue`` returns as soon as a task may be there.

Two sources, never relied on for correctness (the consumer polls as well, only less often):

- same-process enqueues and requeues call ``Wakeup.notify()`` directly;
- on Linux, for local directories that are not network mounts, the kernel's inotify reports a
  task file renamed or linked into a watched ``pending/`` directory by any process. The binding
  is a few ``ctypes`` calls into the C library (no dependency); where it is not available
  (other platforms, memory://, buckets, NFS/SMB/FUSE mounts, an event loop without
  ``add_reader``) the consumer simply polls every ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import struct
import sys
import threading

logger = logging.getLogger("omniq.storage.file")

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_IGNORED = 0x00008000  # the watch is gone (its directory was removed)
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
# Mounts whose changes made on another machine inotify does not see: poll them.
_REMOTE_TYPES = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs",
                 "lustre", "gpfs", "beegfs", "virtiofs")  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch  # noqa: B018 - present?
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def filesystem_type(path: str) -> str | None:
    """The type of the file system ``path`` is on (Linux, from /proc/self/mountinfo)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    path = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, right.split()[0]
    return kind


def notifications_work(root: str) -> bool:
    """Whether inotify reports changes under ``root`` made by any process on this machine."""
    if _LIBC is None:
        return False
    kind = filesystem_type(root) or ""
    return not (kind in _REMOTE_TYPES or kind.startswith("fuse"))


class Wakeup:
    """Lets a waiting consumer sleep until a task may have arrived.

    ``wait(timeout)`` returns ``True`` when woken (a notification or ``notify()``), ``False``
    after ``timeout``. ``watch(path)`` adds a directory to the inotify watch (a no-op, answering
    ``False``, where notifications are not available). Thread-safe ``notify``; the watch belongs
    to the event loop that first waited and is moved if another loop waits.
    """

    def __init__(self, notifications: bool) -> None:
        self._notifications = notifications
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: dict[int, str] = {}  # watch descriptor -> directory
        self.wakes = 0  # how many times waiters were woken (tests, benchmarks)

    @property
    def watching(self) -> bool:
        return self._fd >= 0

    def notify(self) -> None:
        """Wake every waiting consumer (any thread, any event loop)."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        if waiters:
            self.wakes += 1
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, future))

    def watch(self, directory: str) -> bool:
        """Watch ``directory`` for task files moved or linked in; ``False`` if not possible
        (no notifications here, or the directory does not exist yet: try again later)."""
        if not self._notifications or _LIBC is None:
            return False
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.close()
            if not self._start(loop):
                return False
        if directory in self._watched.values():
            return True
        wd = _LIBC.inotify_add_watch(self._fd, os.fsencode(directory), IN_MOVED_TO | IN_CREATE)
        if wd < 0:
            err = ctypes.get_errno()
            if err != 2:  # ENOENT: nothing was ever enqueued there; poll until it exists
                logger.debug("cannot watch %s: %s; polling it", directory, os.strerror(err))
            return False
        self._watched[wd] = directory
        return True

    def _start(self, loop: asyncio.AbstractEventLoop) -> bool:
        assert _LIBC is not None
        fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            self._notifications = False  # out of inotify instances: poll
            return False
        try:
            loop.add_reader(fd, self._readable)
        except (NotImplementedError, RuntimeError):
            os.close(fd)
            self._notifications = False
            return False
        self._fd, self._loop = fd, loop
        return True

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        offset, task_file = 0, False
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_IGNORED:
                self._watched.pop(wd, None)  # watch it again once it exists
            else:
                task_file = task_file or not name.startswith(b".")  # temp files are not tasks
        if task_file:
            self.notify()

    def close(self) -> None:
        """Stop watching (the next ``watch`` starts again)."""
        if self._fd >= 0:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._loop = -1, None
        self._watched.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
