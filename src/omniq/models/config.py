"""Configuration: one validated settings model, filled from code, objects, dicts, YAML or env.

Precedence, highest first: keyword arguments in code (``FileBackend(...)``), a ``FileConfig``
object, a dict, a YAML file, ``OMNIQ_*`` environment variables, the built-in defaults. Each field
whose value is not given is read from its environment variable (``OMNIQ_`` + the field name in
upper case) at construction time, so anything given explicitly wins over the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from omniq.exceptions import ConfigError, MissingDependencyError, ValidationError
from omniq.models._time import check_seconds
from omniq.models.ids import validate_name

SerializationFormat = Literal["json", "msgpack", "pickle"]
FORMATS: tuple[str, ...] = ("json", "msgpack", "pickle")

T = TypeVar("T")


DEFAULT_TTL = 7 * 86400.0  # seconds finished tasks, results and events are kept by default


def _env(field: str, default: T, kind: Any = None) -> Callable[[], T]:
    """A default factory reading ``OMNIQ_<FIELD>``, converted to the field's type."""
    var = "OMNIQ_" + field.upper()

    def factory() -> T:
        raw = os.environ.get(var)
        if raw is None or raw == "":
            return default
        if field.endswith("_ttl") and raw.strip().lower() in ("none", "forever"):
            return None  # type: ignore[return-value]
        target = kind if kind is not None else type(default)
        try:
            if target is dict:
                value = json.loads(raw)
                if not isinstance(value, dict):
                    raise ValueError("expected a JSON object")
                return value  # type: ignore[return-value]
            return msgspec.convert(raw, target, strict=False)
        except (ValueError, msgspec.ValidationError) as exc:
            raise ConfigError(f"environment variable {var}={raw!r} is invalid: {exc}") from None

    return factory


C = TypeVar("C", bound="Settings")


def check_durations(config: Any, names: tuple[str, ...], *, optional: bool = False) -> None:
    """Validate (and store as floats) duration settings: finite, at most 100 years, ``> 0`` —
    or, when ``optional`` (ttls), ``>= 0`` or ``None``. ``ConfigError`` names the setting."""
    for name in names:
        value = getattr(config, name)
        if value is None and not optional:
            raise ConfigError(f"{name} must be a number of seconds, got None")
        try:
            setattr(config, name, check_seconds(value, name, allow_zero=optional))
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None


def check_hints_url(url: object) -> str:
    """``url`` if it looks like an SQS queue URL (``http(s)://host/<account>/<name>``), else
    ``ConfigError`` (``FileConfig.event_hints``)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"event_hints must be an SQS queue URL (https://...), got {url!r}")
    if parts.path.endswith(".fifo"):
        raise ConfigError(
            f"event_hints: S3 cannot send event notifications to a FIFO queue: {url!r}"
        )
    if len([p for p in parts.path.split("/") if p]) != 2:
        raise ConfigError(
            f"event_hints must be an SQS queue URL ending in /<account>/<queue name>, got {url!r}"
        )
    return str(url)


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The settings every backend shares (file and SQLite): format, signing, leases, TTLs."""

    serialization_format: str = msgspec.field(default_factory=_env("serialization_format", "json"))
    secret_key: str | None = msgspec.field(default_factory=_env("secret_key", None, str))
    fsync: bool = msgspec.field(default_factory=_env("fsync", False))
    visibility_timeout: float = msgspec.field(default_factory=_env("visibility_timeout", 60.0))
    poll_interval: float = msgspec.field(default_factory=_env("poll_interval", 0.05))
    reap_interval: float = msgspec.field(default_factory=_env("reap_interval", 5.0))
    max_deliveries: int = msgspec.field(default_factory=_env("max_deliveries", 20))
    # Finished tasks, results and events are kept a week by default; None keeps them forever.
    task_ttl: float | None = msgspec.field(default_factory=_env("task_ttl", DEFAULT_TTL, float))
    result_ttl: float | None = msgspec.field(default_factory=_env("result_ttl", DEFAULT_TTL, float))
    event_ttl: float | None = msgspec.field(default_factory=_env("event_ttl", DEFAULT_TTL, float))

    def __post_init__(self) -> None:
        if self.serialization_format not in FORMATS:
            raise ConfigError(
                f"serialization_format must be one of {', '.join(FORMATS)}, "
                f"got {self.serialization_format!r}"
            )
        check_durations(self, ("visibility_timeout", "poll_interval", "reap_interval"))
        check_durations(self, ("task_ttl", "result_ttl", "event_ttl"), optional=True)
        if (
            isinstance(self.max_deliveries, bool)
            or not isinstance(self.max_deliveries, int)
            or self.max_deliveries < 1
        ):
            raise ConfigError(f"max_deliveries must be an int >= 1, got {self.max_deliveries!r}")
        if self.secret_key == "":
            self.secret_key = None

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], **overrides: Any) -> C:
        """Build a config from a mapping (unknown keys are an error); ``overrides`` win."""
        merged = {**dict(data), **overrides}
        try:
            return msgspec.convert(merged, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid {cls.__name__}: {exc}") from None

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike[str], **overrides: Any) -> C:
        """Read a YAML file (a mapping of field names, or one under an ``omniq:`` key)."""
        try:
            import yaml
        except ImportError:
            raise MissingDependencyError(
                "reading YAML configuration needs PyYAML: pip install 'omniq[yaml]'"
            ) from None
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("omniq"), dict):
            data = data["omniq"]
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_env(cls: type[C]) -> C:
        """Only environment variables and defaults."""
        return cls()

    def with_overrides(self: C, **overrides: Any) -> C:
        """A copy with ``overrides`` applied and validated. A ``None`` given is applied too:
        ``result_ttl=None`` keeps results forever rather than meaning "not given"."""
        if not overrides:
            return self
        return type(self).from_dict(msgspec.structs.asdict(self), **overrides)


class FileConfig(Settings, kw_only=True, forbid_unknown_fields=True):
    """Settings of a file (fsspec) backend. See the README's configuration table."""

    base_dir: str = msgspec.field(default_factory=_env("base_dir", "./omniq_data"))
    fsspec_uri: str | None = msgspec.field(default_factory=_env("fsspec_uri", None, str))
    fs_protocol: str | None = msgspec.field(default_factory=_env("fs_protocol", None, str))
    storage_options: dict[str, Any] = msgspec.field(
        default_factory=_env("storage_options", {}, dict)
    )
    tasks_dir: str = msgspec.field(default_factory=_env("tasks_dir", "tasks"))
    results_dir: str = msgspec.field(default_factory=_env("results_dir", "results"))
    events_dir: str = msgspec.field(default_factory=_env("events_dir", "events"))
    schedules_dir: str = msgspec.field(default_factory=_env("schedules_dir", "schedules"))
    listing_ttl: float = msgspec.field(default_factory=_env("listing_ttl", 1.0))
    event_hints: str | None = msgspec.field(default_factory=_env("event_hints", None, str))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.event_hints == "":
            self.event_hints = None
        if self.event_hints is not None:
            check_hints_url(self.event_hints)
        for name in ("tasks_dir", "results_dir", "events_dir", "schedules_dir"):
            try:
                validate_name(getattr(self, name), name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not isinstance(self.base_dir, str) or not self.base_dir:
            raise ConfigError(f"base_dir must be a non-empty string, got {self.base_dir!r}")
        check_durations(self, ("listing_ttl",))
        if self.fsspec_uri == "":
            self.fsspec_uri = None


class SQLiteConfig(Settings, kw_only=True, forbid_unknown_fields=True):
    """Settings of a SQLite backend: the shared ones plus the database file and lock wait.

    ``fsync=True`` maps to ``PRAGMA synchronous=FULL`` (``NORMAL`` otherwise, both in WAL mode).
    ``busy_timeout`` is how long a writer waits for another process's write lock (and retries)
    before a ``StorageError``.
    """

    path: str = msgspec.field(default_factory=_env("sqlite_path", "omniq.db"))
    busy_timeout: float = msgspec.field(default_factory=_env("sqlite_busy_timeout", 60.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError(f"path must be a non-empty string, got {self.path!r}")
        check_durations(self, ("busy_timeout",))
