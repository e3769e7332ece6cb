"""``FileBackend``: the four stores on any fsspec filesystem, rooted at a base directory."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from typing import Any

import fsspec
from fsspec.core import split_protocol
from fsspec.implementations.dirfs import DirFileSystem

from omniq.backend.base import Backend
from omniq.exceptions import ConfigError, MissingDependencyError
from omniq.models.config import FileConfig
from omniq.models.event import EventType, TaskEvent
from omniq.models.ids import validate_id, validate_name
from omniq.serialization import Serializer
from omniq.storage.file import (
    FileEventStorage,
    FileResultStorage,
    FileScheduleStorage,
    FileStoreContext,
    FileTaskQueue,
    FsspecObjectStore,
    LocalObjectStore,
    ObjectStore,
)
from omniq.storage.file.cloud import CloudObjectStore
from omniq.storage.file.hints import SqsHints
from omniq.storage.file.keys import task_id_of
from omniq.storage.file.lease_queue import LeaseTaskQueue
from omniq.storage.file.records import FinishedRecords
from omniq.storage.file.s3 import S3ObjectStore

logger = logging.getLogger("omniq.storage.file")

_LOCAL = frozenset({"file", "local"})
_CLOUD_PROTOCOLS = {
    "s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs",
    "az": "az", "abfs": "az", "abfss": "az",
}  # fmt: skip
EXTRAS = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs",
    "az": "azure", "abfs": "azure", "abfss": "azure", "adl": "azure",
}  # fmt: skip


def resolve_location(config: FileConfig) -> tuple[str, str]:
    """(protocol, root path) of a config: ``fsspec_uri`` wins over ``base_dir``."""
    location = config.fsspec_uri or config.base_dir
    protocol, path = split_protocol(location)
    if protocol is None:
        protocol = config.fs_protocol or "file"
    elif config.fs_protocol and config.fs_protocol != protocol:
        raise ConfigError(f"fs_protocol={config.fs_protocol!r} contradicts {location!r}")
    if protocol in _LOCAL:
        return "file", os.path.abspath(os.path.expanduser(path))
    if not path.strip("/"):
        raise ConfigError(f"{location!r} names no bucket or folder to keep OmniQ's data in")
    return protocol, ("/" + path.strip("/")) if protocol == "memory" else path.rstrip("/")


def make_filesystem(protocol: str, options: dict[str, Any]) -> Any:
    """An fsspec filesystem instance; a missing driver names the extra to install."""
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        hint = (
            f"pip install 'omniq[{extra}]'"
            if extra
            else f"install the fsspec driver for {protocol!r}"
        )
        raise MissingDependencyError(f"the {protocol!r} filesystem needs a driver: {hint}") from exc
    except ValueError as exc:
        raise ConfigError(f"unknown filesystem protocol {protocol!r}") from exc
    return cls(**options)


def cloud_store(kind: str, root: str, options: dict[str, Any]) -> CloudObjectStore:
    """The object store of a cloud protocol family ("s3", "gs" or "az")."""
    if kind == "s3":
        from omniq.storage.file.s3 import S3ObjectStore

        return S3ObjectStore(root, options)
    if kind == "gs":
        from omniq.storage.file.gcs import GCSObjectStore

        return GCSObjectStore(root, options)
    from omniq.storage.file.azure import AzureObjectStore

    return AzureObjectStore(root, options)


class FileBackend(Backend):
    """OmniQ's state in a directory tree that fsspec reaches.

    ``FileBackend(base_dir="./omniq_data", fs_protocol="file", fs_kwargs={...})``, or
    ``FileBackend.from_url("s3://bucket/prefix")``, or ``FileBackend.from_config(FileConfig(...))``.
    Keyword ``settings`` are any other ``FileConfig`` field; unset fields come from ``OMNIQ_*``
    environment variables. ``fs_kwargs`` go to the fsspec filesystem; ``{"debug": True}`` turns
    on debug logging of ``omniq.storage.file`` instead.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        fs_protocol: str | None = None,
        fs_kwargs: dict[str, Any] | None = None,
        *,
        config: FileConfig | None = None,
        **settings: Any,
    ) -> None:
        if base_dir is not None:
            settings["base_dir"] = os.fspath(base_dir)
            settings["fsspec_uri"] = ""  # a base_dir given in code wins over any fsspec_uri
        if fs_protocol is not None:
            settings["fs_protocol"] = fs_protocol
        config = (config or FileConfig()).with_overrides(**settings)
        options = {**config.storage_options, **(fs_kwargs or {})}
        if options.pop("debug", False):
            logger.setLevel(logging.DEBUG)
        self.config = config
        self.protocol, self.root = resolve_location(config)
        self.storage_options = options
        self._fs: Any = None
        self.objects = self._make_objects()
        ctx = FileStoreContext(
            objects=self.objects,
            serializer=Serializer(config.serialization_format, config.secret_key),
            config=config,
            reporters=[self._report_corrupt],
        )
        # Stores with an atomic rename claim by renaming; object stores by lease objects.
        queue_class = (
            LeaseTaskQueue if isinstance(self.objects, CloudObjectStore) else FileTaskQueue
        )
        self.task_queue = self._file_queue = queue_class(ctx, config.tasks_dir)
        if config.event_hints is not None:
            self._listen_for_hints(config.event_hints)
        # Workers keep a finished task's result and events in its record (one object): the
        # result and event stores read them back from there. On buckets a listing of the
        # queues is a request, so record look-ups reuse it for ``listing_ttl``.
        records = FinishedRecords(
            self._file_queue, ctx,
            queue_cache=config.listing_ttl if queue_class is LeaseTaskQueue else 0.0,
        )  # fmt: skip
        self.result_storage = FileResultStorage(ctx, config.results_dir, records)
        self.event_storage = FileEventStorage(ctx, config.events_dir, records)
        self.schedule_storage = FileScheduleStorage(ctx, config.schedules_dir)
        self._wire_stores()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> FileBackend:
        """``FileBackend.from_url("memory://omniq")``, ``"s3://bucket/prefix"``, a local path..."""
        if not isinstance(url, str) or not url:
            raise ConfigError(f"from_url needs a URL or path, got {url!r}")
        return cls(config=FileConfig(fsspec_uri=url), **kwargs)

    @classmethod
    def from_config(cls, config: FileConfig, **kwargs: Any) -> FileBackend:
        if not isinstance(config, FileConfig):
            raise ConfigError(f"from_config takes a FileConfig, got {type(config).__name__}")
        return cls(config=config, **kwargs)

    @property
    def url(self) -> str:
        return self.objects.url

    @property
    def fs(self) -> Any:
        """A ``DirFileSystem`` rooted at the base directory, to look at the data with fsspec."""
        if self._fs is None:
            inner = make_filesystem(self.protocol, self.storage_options)
            self._fs = DirFileSystem(path=self.root, fs=inner)
        return self._fs

    def _listen_for_hints(self, url: str) -> None:
        """Idle consumers wake on the bucket's event notifications (``hints.py``): S3 only."""
        if not isinstance(self.objects, S3ObjectStore):
            if os.environ.get("OMNIQ_EVENT_HINTS") == url:  # set for the S3 bases of a shell
                logger.debug("OMNIQ_EVENT_HINTS ignored: %s is not an s3:// base", self.url)
                return
            raise ConfigError(
                f"event_hints needs an s3:// base (S3 event notifications to SQS), not "
                f"{self.url}: GCS Pub/Sub and Azure Event Grid hints are not supported"
            )
        if importlib.util.find_spec("aiobotocore") is None:
            raise MissingDependencyError("event_hints needs aiobotocore: pip install 'omniq[s3]'")
        assert isinstance(self._file_queue, LeaseTaskQueue)
        prefix = f"{self.objects.prefix}{self.config.tasks_dir}/"
        self._file_queue.hints = SqsHints(url, self.objects.bucket, prefix, self.storage_options)

    def _make_objects(self) -> ObjectStore:
        if self.protocol == "file":
            return LocalObjectStore(self.root, fsync=self.config.fsync)
        cloud = _CLOUD_PROTOCOLS.get(self.protocol)
        if cloud is not None:
            return cloud_store(cloud, self.root, self.storage_options)
        return FsspecObjectStore(
            self.fs, self.protocol, f"{self.protocol}://{self.root.lstrip('/')}"
        )

    async def open(self) -> None:
        await self.objects.open()
        await self._file_queue.open()
        if not self.objects.capabilities.safe_claims:
            logger.warning(
                "%s offers neither an atomic rename nor conditional create + compare-and-swap: "
                "run one worker only",
                self.url,
            )

    async def close(self) -> None:
        await self._file_queue.close()  # its inotify descriptor or event hints, if opened
        await self.objects.close()

    # A temporary file older than this belongs to no write in progress (writes take
    # milliseconds): its writer was killed.
    TEMP_MAX_AGE = 3600.0

    async def sweep_temp_files(self, queues: Sequence[str] | None = None) -> int:
        prefixes = (
            [f"{self.config.tasks_dir}/{validate_name(q)}" for q in queues]
            if queues is not None
            else [""]
        )
        removed = 0
        for prefix in prefixes:
            removed += await self.objects.sweep_temp(prefix, self.TEMP_MAX_AGE)
        if removed:
            logger.info("removed %d temporary file(s) left by interrupted writes", removed)
        return removed

    async def cleanup_expired(self) -> dict[str, int]:
        """The three ttl cleanups, and (``temp_files``) temporary files of killed writers.
        ``results`` counts those removed with the finished-task record that held them too."""
        tasks, in_records = await self._file_queue.cleanup_finished()
        return {
            "tasks": tasks,
            "results": in_records + await self.result_storage.cleanup_expired_results(),
            "events": await self.event_storage.cleanup_expired_events(),
            "temp_files": await self.sweep_temp_files(),
        }

    async def _report_corrupt(self, key: str, moved_to: str | None, error: Exception) -> None:
        if key.startswith(self.config.events_dir + "/"):
            return  # reporting a corrupt event file as an event could loop
        task_id = task_id_of(key.rsplit("/", 1)[-1]) or "unknown"
        try:
            validate_id(task_id)
        except ValueError:
            task_id = "unknown"
        await self.event_storage.log_event(
            TaskEvent(
                task_id=task_id,
                event_type=EventType.CORRUPTED,
                message=f"{key} could not be read and was moved to {moved_to}: {error}",
                data={"path": key, "moved_to": moved_to},
            )
        )

    def __repr__(self) -> str:
        return f"FileBackend({self.url!r})"
