"""The drivers do not retry writes behind OmniQ's back: OmniQ's loop makes every try, so that a
settle's deadline bounds them all (a try inside a driver could land a write after a reaper
completed the same settle). S3's side is tested through the fault proxy in test_s3_compat.py;
here GCS (fake-gcs-server) and Azure (Azurite), with the connection failing under the driver.
"""

from __future__ import annotations

import pytest

from conftest import emulator_for
from omniq.backend.file import FileBackend
from omniq.exceptions import StorageError
from omniq.storage.file.cloud import Backoff

pytestmark = pytest.mark.file_layout("the object-store drivers under the file stores")


async def _tries_of_a_failing_write(backend: FileBackend) -> None:
    objects = backend.objects
    objects.backoff = Backoff(base=0.001, attempts=3)
    with pytest.raises(StorageError) as caught:
        await objects.put("x/dropped", b"1")
    assert caught.value.transient  # a dropped connection: worth another try, later


async def test_gcsfs_sends_each_try_once(tmp_path_factory, monkeypatch):
    import aiohttp

    server = emulator_for("gcs", tmp_path_factory)
    backend = FileBackend.from_url(server.url(), fs_kwargs=dict(server.options))
    async with backend:
        sent: list[str] = []

        def dropped(self, method, url, **kwargs):
            sent.append(method)
            raise aiohttp.ClientConnectionError("connection dropped")

        monkeypatch.setattr(aiohttp.ClientSession, "request", dropped)
        await _tries_of_a_failing_write(backend)
        monkeypatch.undo()
        assert len(sent) == 3, sent  # gcsfs alone made 6 tries of each, waiting up to 32 s


async def test_azure_writes_are_sent_once_per_try(tmp_path_factory, monkeypatch):
    from azure.core.exceptions import ServiceRequestError
    from azure.core.pipeline.transport import AioHttpTransport

    server = emulator_for("azure", tmp_path_factory)
    backend = FileBackend.from_url(server.url(), fs_kwargs=dict(server.options))
    async with backend:
        sent: list[str] = []

        async def dropped(self, request, **kwargs):
            sent.append(request.method)
            raise ServiceRequestError("connection dropped")

        monkeypatch.setattr(AioHttpTransport, "send", dropped)
        await _tries_of_a_failing_write(backend)
        monkeypatch.undo()
        assert len(sent) == 3, sent  # the SDK alone made 4 tries of each


async def test_azure_reads_and_listings_are_sent_once_per_try(tmp_path_factory, monkeypatch):
    """Reads too: with the SDK's 4 tries under OmniQ's 8 an unreachable endpoint took eleven
    minutes to report."""
    from azure.core.exceptions import ServiceRequestError
    from azure.core.pipeline.transport import AioHttpTransport

    server = emulator_for("azure", tmp_path_factory)
    backend = FileBackend.from_url(server.url(), fs_kwargs=dict(server.options))
    async with backend:
        backend.objects.backoff = Backoff(base=0.001, attempts=2)
        sent: list[str] = []

        async def dropped(self, request, **kwargs):
            sent.append(request.method)
            raise ServiceRequestError("connection dropped")

        monkeypatch.setattr(AioHttpTransport, "send", dropped)
        with pytest.raises(StorageError):
            await backend.objects.get("x/anything")
        with pytest.raises(StorageError):
            await backend.objects.list("x")
        monkeypatch.undo()
        assert len(sent) == 4, sent


@pytest.mark.parametrize(
    ("store", "error", "transient"),
    [
        # gcsfs raises a 502 from Google's front end as requests' ProxyError, without a status
        ("gcs", "proxy", True),
        ("gcs", "invalid credentials", True),  # a failed token refresh
        ("gcs", "forbidden", False),
        ("s3", "request timeout", True),  # 400 RequestTimeout: the body arrived too slowly
        ("s3", "bad request", False),
        ("s3", "408", True),
    ],
)
async def test_which_driver_errors_are_worth_another_try(store, error, transient):
    from botocore.exceptions import ClientError
    from gcsfs.retry import HttpError
    from requests.exceptions import ProxyError

    from omniq.storage.file.gcs import GCSObjectStore
    from omniq.storage.file.s3 import S3ObjectStore

    def s3_error(status: int, code: str) -> ClientError:
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
        )

    errors = {
        "proxy": ProxyError("502 Bad Gateway"),
        "invalid credentials": HttpError({"code": 401, "message": "Invalid Credentials"}),
        "forbidden": HttpError({"code": 403, "message": "Forbidden"}),
        "request timeout": s3_error(400, "RequestTimeout"),
        "bad request": s3_error(400, "InvalidArgument"),
        "408": s3_error(408, "RequestTimeout"),
    }
    cls = GCSObjectStore if store == "gcs" else S3ObjectStore
    objects = cls("bucket/prefix", {"token": "anon"} if store == "gcs" else {"anon": True})
    await objects._connect()  # the driver's errors are added here (no request is sent)
    try:
        assert objects._transient(errors[error]) is transient
    finally:
        await objects._disconnect()
