"""S3 (and S3-compatible servers) through s3fs's native async client (aiobotocore).

Conditions: create-only is ``If-None-Match: *``, compare-and-swap and conditional delete are
``If-Match: <etag>`` (in the form the probe found the server honours: Ceph RGW wants the ETag
unquoted); a failed condition is HTTP 412. HTTP 409 ``ConditionalRequestConflict`` (a conflicting
request landed meanwhile) is ``WriteConflict``: retried, never read as "someone else holds it".
The calls go straight to the client (``_call_s3``) so that nothing is cached and every keyword
reaches botocore; ``_check_keywords`` refuses to start if this botocore would drop them.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from omniq.exceptions import ConfigError, MissingDependencyError
from omniq.storage.file.cloud import MATCH_FORMS, CloudObjectStore, WriteConflict, http_status
from omniq.storage.file.objects import VersionMismatch


def _error_code(exc: BaseException) -> str | None:
    for err in (exc, exc.__cause__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return str(code) if code is not None else None
    return None


class S3ObjectStore(CloudObjectStore):
    """``s3://bucket/prefix``; options are ``S3FileSystem``'s (key, secret, endpoint_url,
    client_kwargs, ...)."""

    protocol = "s3"
    seeks = True  # ListObjectsV2 StartAfter
    driver = "s3fs"
    extra = "s3"
    match_forms = MATCH_FORMS

    def __init__(self, root: str, options: dict[str, Any]) -> None:
        super().__init__(root, options)
        if self.bucket.endswith("--x-s3"):
            raise ConfigError(
                f"{self.url}: S3 Express One Zone directory buckets are not supported: their "
                "listings neither start after a name nor come in name order, and OmniQ's "
                "queues are read in name order (priority, then due time); use a general "
                "purpose bucket"
            )

    async def _connect(self) -> None:
        try:
            import s3fs
            from s3fs.core import S3_RETRYABLE_ERRORS
        except ImportError as exc:
            raise MissingDependencyError("s3:// needs s3fs: pip install 'omniq[s3]'") from exc
        options = {**self.options, "asynchronous": True, "skip_instance_cache": True}
        # Neither botocore nor s3fs retries: OmniQ's loop makes every try (CloudObjectStore.
        # _throttled), so that a settle's deadline bounds them all (a retry inside the driver
        # could land a write after a reaper completed the settle).
        config = dict(options.get("config_kwargs") or {})
        retries = dict(config.get("retries") or {})
        if "max_attempts" not in retries and "total_max_attempts" not in retries:
            retries["total_max_attempts"] = 1  # a retry mode alone would turn them back on
        config["retries"] = retries
        options["config_kwargs"] = config
        self.fs: Any = s3fs.S3FileSystem(**options)
        self.fs.retries = 1
        self.transient_errors = (*self.transient_errors, *S3_RETRYABLE_ERRORS)
        await self.fs.set_session()
        await self._check_keywords()

    def _transient(self, exc: BaseException) -> bool:
        # S3 answers 400 to a request whose body arrived too slowly or damaged: worth a retry
        # (botocore retried these before its retries were turned off).
        return _error_code(exc) in ("RequestTimeout", "BadDigest") or super()._transient(exc)

    async def _check_keywords(self) -> None:
        # s3fs filters out keywords its botocore does not know, which would turn a conditional
        # write into a plain one without a word.
        s3 = await self.fs.get_s3(self.bucket)
        for method, keyword in (("put_object", "IfNoneMatch"), ("put_object", "IfMatch"),
                                ("delete_object", "IfMatch")):  # fmt: skip
            kept = self.fs._filter_kwargs(getattr(s3, method), {keyword: "x"})
            if keyword not in kept:
                raise MissingDependencyError(
                    f"this botocore does not send {keyword} on {method}: upgrade s3fs/botocore "
                    "(pip install -U 'omniq[s3]')"
                )

    async def _disconnect(self) -> None:
        s3 = getattr(self.fs, "_s3", None) if hasattr(self, "fs") else None
        if s3 is not None:
            await s3.__aexit__(None, None, None)
            self.fs._s3 = None

    async def _ensure_bucket(self) -> None:
        self.requests["head"] += 1
        try:
            await self.fs._call_s3("head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            self.requests["put"] += 1
            region = (self.fs.client_kwargs or {}).get("region_name")
            where = {"CreateBucketConfiguration": {"LocationConstraint": region}}
            extra = where if region and region != "us-east-1" else {}
            await self.fs._call_s3("create_bucket", Bucket=self.bucket, **extra)
        except PermissionError:
            pass  # listing and writing may still be allowed; the probe will tell

    async def _put(self, path: str, data: bytes, *, create: bool, version: str | None) -> str:
        condition: dict[str, str] = {}
        if create:
            condition["IfNoneMatch"] = "*"
        elif version is not None:
            condition["IfMatch"] = self._match_value(version)
        self.requests["put"] += 1
        try:
            out = await self.fs._call_s3(
                "put_object", Bucket=self.bucket, Key=path, Body=data, **condition
            )
        except FileExistsError:
            raise
        except OSError as exc:
            self._conflict_of(exc, path, bool(condition))
            if condition and _error_code(exc) == "PreconditionFailed":
                if create:
                    raise FileExistsError(path) from exc
                raise VersionMismatch(path) from exc
            if version is not None and isinstance(exc, FileNotFoundError):
                raise VersionMismatch(path) from exc
            raise
        return str(out["ETag"])

    @staticmethod
    def _conflict_of(exc: OSError, path: str, conditional: bool) -> None:
        if conditional and (
            _error_code(exc) == "ConditionalRequestConflict" or http_status(exc) == 409
        ):
            raise WriteConflict(path) from exc

    async def _get(self, path: str) -> tuple[bytes, str]:
        self.requests["get"] += 1
        out = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=path)
        async with out["Body"] as body:
            data = await body.read()
        return bytes(data), str(out["ETag"])

    async def delete(self, key: str) -> bool:
        # S3 answers 204 whether or not the object was there: ask first.
        path = self._path(key)
        if not await self._call("delete", key, lambda: self._exists(path)):
            return False
        return await super().delete(key)

    async def discard(self, key: str) -> None:
        await super().delete(key)

    async def _delete(self, path: str, version: str | None) -> bool:
        condition = {"IfMatch": self._match_value(version)} if version is not None else {}
        self.requests["delete"] += 1
        try:
            await self.fs._call_s3("delete_object", Bucket=self.bucket, Key=path, **condition)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._conflict_of(exc, path, bool(condition))
            if condition and _error_code(exc) == "PreconditionFailed":
                if not await self._exists(path):  # SeaweedFS answers 412 for a gone object
                    return False
                raise VersionMismatch(path) from exc
            raise
        return True

    async def _exists(self, path: str) -> bool:
        self.requests["head"] += 1
        try:
            await self.fs._call_s3("head_object", Bucket=self.bucket, Key=path)
        except FileNotFoundError:
            return False
        return True  # S3 answers 204 whether or not the object was there

    async def _pages(
        self,
        prefix: str,
        recursive: bool,
        page_size: int,
        start_after: str | None = None,
        modified: dict[str, float] | None = None,
    ) -> AsyncGenerator[builtins.list[str], None]:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "MaxKeys": page_size,
        }
        if not recursive:
            params["Delimiter"] = "/"
        if start_after is not None:
            params["StartAfter"] = start_after
        while True:
            self.requests["list"] += 1
            page = await self.fs._call_s3("list_objects_v2", **params)
            keys = [item["Key"] for item in page.get("Contents", ())]
            if modified is not None:
                for item in page.get("Contents", ()):
                    if isinstance(item.get("LastModified"), datetime):
                        modified[item["Key"]] = item["LastModified"].timestamp()
            keys.extend(item["Prefix"] for item in page.get("CommonPrefixes", ()))
            yield sorted(keys)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token
