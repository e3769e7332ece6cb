"""The OmniQ exception family: every error OmniQ raises on purpose is an ``OmniQError``."""

from __future__ import annotations


class OmniQError(Exception):
    """Base class of every error raised by OmniQ."""


class ConfigError(OmniQError, ValueError):
    """A configuration value is missing, malformed or contradicts another one."""


class ValidationError(OmniQError, ValueError):
    """A model field, name or id is invalid (bad cron, negative ttl, path traversal...)."""


class StorageError(OmniQError):
    """A storage operation failed; ``path`` names the object, ``__cause__`` keeps the original.
    ``transient`` is true when the request may well succeed a little later: the store asked
    to slow down or failed on its side (HTTP 408, 429, 5xx) past the retries, or did not answer
    (a timeout, a dropped connection)."""

    transient = False

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{message}: {path}" if path else message)


class SettleDeferredError(StorageError):
    """A finish or requeue was fenced — its outcome is stored in the lease's settle record —
    but the rest of the settle could not be written now; a reaper completes it. Nothing is
    lost and the task does not run again."""


class MissingDependencyError(OmniQError, ImportError):
    """An optional package is needed; the message names the ``omniq[extra]`` to install."""


class SerializationError(OmniQError):
    """A value could not be encoded, or stored bytes could not be decoded."""


class SignatureError(SerializationError):
    """A stored object is unsigned or its HMAC signature does not match the secret key."""


class CorruptFileError(SerializationError):
    """A stored file could not be read; it was moved aside to ``moved_to``."""

    def __init__(self, message: str, path: str, moved_to: str | None) -> None:
        self.path = path
        self.moved_to = moved_to
        super().__init__(f"{message}: {path} (moved to {moved_to})")


class TaskNotFoundError(OmniQError, KeyError):
    """No task with the given id exists in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not found"


class TaskBusyError(TaskNotFoundError):
    """The task is between two places (on a bucket: a settle is under way, completed by its
    writer or a reaper shortly): try again. A ``TaskNotFoundError`` for older callers."""


class ScheduleNotFoundError(OmniQError, KeyError):
    """No schedule with the given id exists in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "schedule not found"


class LeaseLostError(OmniQError):
    """The caller's lease on a running task expired and was taken over; its write was refused."""


class NotOpenError(OmniQError, RuntimeError):
    """A backend was used before ``open()`` / ``async with``, or after it was closed."""


class TaskFailedError(OmniQError):
    """The task ended failed; ``remote_traceback`` is the traceback from the worker."""

    def __init__(self, task_id: str, error: str | None, remote_traceback: str | None = None):
        self.task_id = task_id
        self.error = error
        self.remote_traceback = remote_traceback
        message = f"task {task_id} failed: {error}"
        if remote_traceback:
            message += f"\n\nRemote traceback:\n{remote_traceback}"
        super().__init__(message)


class TaskCancelledError(TaskFailedError):
    """The task was cancelled before it ran."""


class ResultTimeoutError(OmniQError, TimeoutError):
    """No result arrived within the timeout."""


class TaskNotRegisteredError(OmniQError, LookupError):
    """A task names a function that is not registered with the app."""
