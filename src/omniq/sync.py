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
W = TypeVar("W", bound="SyncWrapper[Any]")

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


def blocking_twins(source: type[Any]) -> Callable[[type[W]], type[W]]:
    """Class decorator for a ``SyncWrapper`` subclass over instances of ``source``.

    Defines a blocking method for each public coroutine method of ``source`` that the class
    does not define itself, with the same name, signature, docstring and type hints, so that
    ``help()``, ``inspect.signature`` and ``typing.get_type_hints`` show what the blocking
    object offers (``__getattr__`` alone would hide it). Generated, never hand-written twins.
    """

    def decorate(cls: type[W]) -> type[W]:
        for name, func in inspect.getmembers(source, inspect.iscoroutinefunction):
            if name.startswith("_") or name in cls.__dict__:
                continue
            twin = _twin(name, func)
            twin.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, twin)
        return cls

    return decorate


def _twin(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # __wrapped__: signature and type hints are the coroutine's
    def method(self: SyncWrapper[Any], *args: Any, **kwargs: Any) -> Any:
        return run_sync(getattr(self.wrapped, name)(*args, **kwargs))

    return method
