"""Google Cloud Storage through gcsfs's native async HTTP session (its JSON API calls).

Conditions are ``ifGenerationMatch``: ``0`` means create-only, a generation means
compare-and-swap; a failed one is HTTP 412, which gcsfs raises as ``FileExistsError``. gcsfs has
no public compare-and-swap, so uploads are built here the way gcsfs's own ``simple_upload`` does
(one multipart request; the emulator enforces conditions on those, not on resumable uploads).
The core ``GCSFileSystem`` is used, not the experimental zonal-bucket subclass, whose start-up
probe stalls against emulators.
"""

from __future__ import annotations

import builtins
import inspect
import json
import re
import types
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from omniq.exceptions import MissingDependencyError
from omniq.storage.file.cloud import CloudObjectStore, http_status
from omniq.storage.file.objects import VersionMismatch

_BOUNDARY = "==omniq=="


_RFC3339 = re.compile(r"([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def _timestamp(value: object) -> float | None:
    """An object's ``updated`` time (RFC 3339, as the JSON API lists it) in epoch seconds.

    The fraction is parsed apart: emulators trim its trailing zeros (``.87568Z``), which
    ``datetime.fromisoformat`` refuses before Python 3.11."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    base, fraction, zone = match.groups()
    try:
        stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    except ValueError:
        return None
    return stamp + (float("0." + fraction) if fraction else 0.0)


class GCSObjectStore(CloudObjectStore):
    """``gs://bucket/prefix``; options are ``GCSFileSystem``'s (project, token, endpoint_url,
    ...). ``STORAGE_EMULATOR_HOST`` is honoured as gcsfs does."""

    protocol = "gs"
    seeks = True  # startOffset
    driver = "gcsfs"
    extra = "gcs"
    refused_status = 412  # gcsfs raises every 412 as FileExistsError, without the status
    object_write_interval = 1.0  # GCS: one write per second per object name

    async def _connect(self) -> None:
        try:
            import aiohttp
            from gcsfs.core import GCSFileSystem
            from requests.exceptions import RequestException
        except ImportError as exc:
            raise MissingDependencyError("gs:// needs gcsfs: pip install 'omniq[gcs]'") from exc
        options = {**self.options, "asynchronous": True, "skip_instance_cache": True}
        self.fs: Any = GCSFileSystem(**options)
        # gcsfs retries each request up to 6 times (waits up to 32 s), fixed when its class is
        # defined: this instance sends through the undecorated request, and OmniQ's loop makes
        # every try, so that a settle's deadline bounds them all (see s3.py).
        self.fs._request = types.MethodType(inspect.unwrap(GCSFileSystem._request), self.fs)
        # gcsfs raises a 502 as requests' ProxyError, without its status.
        self.transient_errors = (*self.transient_errors, aiohttp.ClientError, RequestException)
        await self.fs._set_session()
        self._object_url = f"b/{quote(self.bucket, safe='')}/o"
        self._upload_url = f"{self.fs._location}/upload/storage/v1/{self._object_url}"

    def _transient(self, exc: BaseException) -> bool:
        # A token refresh that failed (the metadata server, at the hourly refresh) reaches us
        # as 401 "Invalid Credentials": gcsfs retried it, and so does OmniQ now.
        if http_status(exc) == 401 and "Invalid Credentials" in str(exc):
            return True
        return super()._transient(exc)

    async def _disconnect(self) -> None:
        session = getattr(self.fs, "_session", None) if hasattr(self, "fs") else None
        if session is not None and not session.closed:
            await session.close()

    async def _ensure_bucket(self) -> None:
        self.requests["head"] += 1
        try:
            await self.fs._call("GET", f"b/{quote(self.bucket, safe='')}", json_out=True)
        except FileNotFoundError:
            self.requests["put"] += 1
            await self.fs._call(
                "POST", "b", json={"name": self.bucket}, json_out=True, project=self.fs.project
            )

    def _object(self, path: str) -> str:
        return f"{self._object_url}/{quote(path, safe='')}"

    async def _put(self, path: str, data: bytes, *, create: bool, version: str | None) -> str:
        condition: dict[str, str] = {}
        if create:
            condition["ifGenerationMatch"] = "0"
        elif version is not None:
            condition["ifGenerationMatch"] = version
        head = (
            f"--{_BOUNDARY}\nContent-Type: application/json; charset=UTF-8\n\n"
            f"{json.dumps({'name': path})}\n--{_BOUNDARY}\n"
            "Content-Type: application/octet-stream\n\n"
        ).encode()
        body = head + data + f"\n--{_BOUNDARY}--".encode()
        self.requests["put"] += 1
        try:
            out = await self.fs._call(
                "POST",
                self._upload_url,
                uploadType="multipart",
                headers={"Content-Type": f'multipart/related; boundary="{_BOUNDARY}"'},
                data=body,
                json_out=True,
                **condition,
            )
        except (FileExistsError, FileNotFoundError) as exc:
            if create and isinstance(exc, FileExistsError):
                raise
            if version is not None:
                raise VersionMismatch(path) from exc
            raise
        return str(out["generation"])

    async def _get(self, path: str) -> tuple[bytes, str]:
        self.requests["get"] += 1
        headers, data = await self.fs._call("GET", self._object(path), alt="media")
        return bytes(data), str(headers.get("x-goog-generation", ""))

    async def _exists(self, path: str) -> bool:
        self.requests["get"] += 1  # the object's metadata, not its bytes: a GET all the same
        try:
            await self.fs._call("GET", self._object(path), fields="generation")
        except FileNotFoundError:
            return False
        return True

    async def _delete(self, path: str, version: str | None) -> bool:
        condition = {"ifGenerationMatch": version} if version is not None else {}
        self.requests["delete"] += 1
        try:
            await self.fs._call("DELETE", self._object(path), **condition)
        except FileNotFoundError:
            return False
        except FileExistsError as exc:  # gcsfs reports every 412 this way
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
        params: dict[str, Any] = {"prefix": prefix, "maxResults": page_size}
        if not recursive:
            params["delimiter"] = "/"
        if start_after is not None:
            params["startOffset"] = start_after  # inclusive; callers filter the name itself
        while True:
            self.requests["list"] += 1
            page = await self.fs._call("GET", self._object_url, json_out=True, **params)
            names = [item["name"] for item in page.get("items", ())]
            if modified is not None:
                for item in page.get("items", ()):
                    stamp = _timestamp(item.get("updated"))
                    if stamp is not None:
                        modified[item["name"]] = stamp
            names.extend(page.get("prefixes", ()))
            yield sorted(names)
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token
