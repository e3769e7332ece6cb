"""Azure Blob Storage through adlfs's native async ``BlobServiceClient``.

Conditions: create-only is ``upload_blob(overwrite=False)`` (``If-None-Match: *``);
compare-and-swap and conditional delete pass ``etag=`` with ``MatchConditions.IfNotModified``
(``If-Match``). adlfs's own ``rm_file`` ignores etags, so deletes go to the blob client. adlfs
builds the client from its options (connection string, account name and key, SAS token,
service principal or the default Azure credential).
"""

from __future__ import annotations

import builtins
import contextlib
import weakref
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from omniq.exceptions import MissingDependencyError
from omniq.storage.file.cloud import CloudObjectStore
from omniq.storage.file.objects import VersionMismatch


def _detach_finalizers(fs: Any) -> None:
    """Drop adlfs's exit-time finalizer: it would close the client on the event loop the
    filesystem was made on, which is closed by then ("Loop is not running" at every exit).
    ``close()`` closes the client instead."""
    registry = getattr(weakref.finalize, "_registry", {})
    for finalizer, info in list(registry.items()):
        if info.weakref() is fs:
            finalizer.detach()


class AzureObjectStore(CloudObjectStore):
    """``az://container/prefix`` (also ``abfs://``); options are ``AzureBlobFileSystem``'s."""

    protocol = "az"
    driver = "adlfs"
    extra = "azure"

    async def _connect(self) -> None:
        try:
            import adlfs
            from azure.core import MatchConditions
            from azure.core.exceptions import (
                ResourceExistsError,
                ResourceModifiedError,
                ResourceNotFoundError,
                ServiceRequestError,
                ServiceResponseError,
            )
        except ImportError as exc:
            raise MissingDependencyError("az:// needs adlfs: pip install 'omniq[azure]'") from exc
        self._if_unchanged = MatchConditions.IfNotModified
        self._already, self._modified, self._missing = (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        self.transient_errors = (*self.transient_errors, ServiceRequestError, ServiceResponseError)
        options = {**self.options, "asynchronous": True, "skip_instance_cache": True}
        self.fs: Any = adlfs.AzureBlobFileSystem(**options)
        _detach_finalizers(self.fs)
        self.container: Any = self.fs.service_client.get_container_client(self.bucket)

    async def _disconnect(self) -> None:
        if hasattr(self, "fs"):
            await self.container.close()
            await self.fs.service_client.close()

    async def _ensure_bucket(self) -> None:
        self.requests["head"] += 1
        if not await self.container.exists(retry_total=0):
            self.requests["put"] += 1
            with contextlib.suppress(self._already):  # another worker created it first
                await self.container.create_container(retry_total=0)

    # Every request is sent with the SDK's retries off (``retry_total=0``): OmniQ's loop makes
    # every try, so that a settle's deadline bounds them all (see s3.py), and the two layers
    # do not multiply (an unreachable endpoint took 11 minutes to report).

    async def _put(self, path: str, data: bytes, *, create: bool, version: str | None) -> str:
        blob = self.container.get_blob_client(path)
        self.requests["put"] += 1
        try:
            if create:
                out = await blob.upload_blob(data, overwrite=False, retry_total=0)
            elif version is not None:
                out = await blob.upload_blob(
                    data,
                    overwrite=True,
                    etag=version,
                    match_condition=self._if_unchanged,
                    retry_total=0,
                )
            else:
                out = await blob.upload_blob(data, overwrite=True, retry_total=0)
        except self._already as exc:
            if create:
                raise FileExistsError(path) from exc
            raise
        except (self._modified, self._missing) as exc:
            if version is not None:
                raise VersionMismatch(path) from exc
            raise
        return str(out["etag"])

    async def _get(self, path: str) -> tuple[bytes, str]:
        self.requests["get"] += 1
        try:
            stream = await self.container.get_blob_client(path).download_blob(retry_total=0)
            data = await stream.readall()
        except self._missing as exc:
            raise FileNotFoundError(path) from exc
        return bytes(data), str(stream.properties.etag)

    async def _exists(self, path: str) -> bool:
        self.requests["head"] += 1
        return bool(await self.container.get_blob_client(path).exists(retry_total=0))

    async def _delete(self, path: str, version: str | None) -> bool:
        blob = self.container.get_blob_client(path)
        self.requests["delete"] += 1
        try:
            if version is None:
                await blob.delete_blob(retry_total=0)
            else:
                await blob.delete_blob(
                    etag=version, match_condition=self._if_unchanged, retry_total=0
                )
        except self._missing:
            return False
        except self._modified as exc:
            self.requests["head"] += 1
            if not await blob.exists(retry_total=0):  # Azurite: 412, not 404, for a gone blob
                return False
            raise VersionMismatch(path) from exc
        return True

    async def _pages(
        self,
        prefix: str,
        recursive: bool,
        page_size: int,
        start_after: str | None = None,
        modified: dict[str, float] | None = None,
    ) -> AsyncGenerator[builtins.list[str], None]:
        # Blob listings cannot start after a name (their marker is opaque): ``start_after`` is
        # left to the caller's filter, and ``seeks`` stays False.
        if recursive:
            pages = self.container.list_blobs(
                name_starts_with=prefix, results_per_page=page_size, retry_total=0
            ).by_page()
        else:
            pages = self.container.walk_blobs(
                name_starts_with=prefix,
                delimiter="/",
                results_per_page=page_size,
                retry_total=0,
            ).by_page()
        async for page in pages:
            self.requests["list"] += 1
            items = [item async for item in page]
            if modified is not None:
                for item in items:
                    stamp = getattr(item, "last_modified", None)  # a BlobPrefix has none
                    if isinstance(stamp, datetime):
                        modified[item.name] = stamp.timestamp()
            yield sorted(item.name for item in items)
