"""One generic blocking wrapper over any async object.

Coroutines run on a private event loop in a daemon thread, so blocking calls work the same from
plain scripts, from threads, and from inside a running event loop (where ``asyncio.run`` would
refuse). All sync wrappers share that loop, so objects they open stay on one loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _runner_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="omniq-sync-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` to completion on the private loop and return its result (or raise)."""
    loop = _runner_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a blocking OmniQ call was made from OmniQ's own loop thread; await it")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


class SyncWrapper(Generic[T]):
    """Blocking view of an async object: ``SyncWrapper(obj).method(...)`` returns the value.

    Coroutine methods are run to completion; other attributes pass through unchanged. ``with``
    maps to the wrapped object's ``async with``.
    """

    __slots__ = ("_target",)

    def __init__(self, target: T) -> None:
        object.__setattr__(self, "_target", target)

    @property
    def wrapped(self) -> T:
        """The async object behind this wrapper."""
        return self._target  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):
            return _blocking(attr)
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __enter__(self) -> SyncWrapper[T]:
        run_sync(self._target.__aenter__())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        run_sync(self._target.__aexit__(*exc_info))

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._target)) | {"wrapped"})

    def __repr__(self) -> str:
        return f"{self._target!r} (blocking)"


def _blocking(func: Callable[..., Coroutine[Any, Any, R]]) -> Callable[..., R]:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> R:
        return run_sync(func(*args, **kwargs))

    return call
