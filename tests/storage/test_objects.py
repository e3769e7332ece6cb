"""The primitive layer's conditional operations, against each store that has them.

These are what the lease-object claim protocol stands on: if a driver (or an emulator) dropped
the condition, two workers could claim one task. The start-up probe checks the same at run time.
"""

from __future__ import annotations

import logging

import pytest

from conftest import CLAIM_BACKENDS, backend_param
from omniq import AsyncOmniQ
from omniq.exceptions import ConfigError
from omniq.storage.file.objects import VersionMismatch

pytestmark = pytest.mark.file_layout("the primitive object layer under the file stores")


@pytest.fixture(params=CLAIM_BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """This contract runs on SeaweedFS as well (a second real S3 server)."""
    return backend_param(request)


def _conditional(backend) -> bool:
    return backend.objects.capabilities.compare_and_swap


async def test_capabilities_after_open(backend, backend_kind):
    caps = backend.objects.capabilities
    assert caps.safe_claims
    assert caps.atomic_rename == (backend_kind in ("local", "memory"))
    assert caps.compare_and_swap == (backend_kind != "local")


async def test_create_is_exclusive(backend):
    if not _conditional(backend):
        with pytest.raises(NotImplementedError):
            await backend.objects.create("x/a", b"1")
        return
    version = await backend.objects.create("x/a", b"1")
    with pytest.raises(FileExistsError):
        await backend.objects.create("x/a", b"2")
    assert await backend.objects.get_versioned("x/a") == (b"1", version)


async def test_replace_is_compare_and_swap(backend):
    if not _conditional(backend):
        pytest.skip("local disk claims by rename; it has no versioned writes")
    objects = backend.objects
    v1 = await objects.create("x/b", b"1")
    v2 = await objects.replace("x/b", b"2", v1)
    assert v2 != v1
    with pytest.raises(VersionMismatch):
        await objects.replace("x/b", b"3", v1)  # stale
    assert (await objects.get("x/b")) == b"2"
    with pytest.raises(VersionMismatch):
        await objects.replace("x/missing", b"1", v2)


async def test_conditional_delete(backend, backend_kind):
    if not _conditional(backend):
        pytest.skip("local disk claims by rename; it has no versioned writes")
    objects = backend.objects
    v1 = await objects.create("x/c", b"1")
    v2 = await objects.replace("x/c", b"2", v1)
    try:
        await objects.delete_version("x/c", v1)
    except VersionMismatch:
        pass
    else:
        assert backend_kind == "gcs", "a stale conditional delete went through"
        pytest.xfail("fake-gcs-server ignores ifGenerationMatch on DELETE (real GCS honours it)")
    assert await objects.delete_version("x/c", v2) is True
    assert await objects.delete_version("x/c", v2) is False


async def test_listings_tell_when_each_object_was_last_written(backend):
    """The bucket reaper reads only leases its listing shows unwritten for a while: object
    stores report each object's last write (by the server's clock, here this machine's);
    stores whose listings cannot say report ``None``."""
    import time

    from omniq.storage.file.cloud import CloudObjectStore

    objects = backend.objects
    before = time.time()
    await objects.put("x/m/a", b"1")
    await objects.put("x/m/b", b"2")
    listed = await objects.list_modified("x/m")
    assert set(listed) == {"a", "b"}
    for written in listed.values():
        if isinstance(objects, CloudObjectStore):
            assert written is not None and abs(written - before) < 600, listed
        else:
            assert written is None


async def test_probe_refuses_a_store_that_ignores_conditions(s3_server, caplog):
    """A store (or a proxy) that drops the conditions is found out at open, loudly."""
    from omniq.backend.file import FileBackend
    from omniq.storage.file.s3 import S3ObjectStore

    class Unconditional(S3ObjectStore):
        async def _put(self, path, data, *, create, version):
            return await super()._put(path, data, create=False, version=None)

    backend = FileBackend.from_url(s3_server.url(), fs_kwargs=dict(s3_server.options))
    backend.objects.__class__ = Unconditional
    with caplog.at_level(logging.WARNING, logger="omniq.storage.file"):
        async with backend:
            assert not backend.objects.capabilities.safe_claims
            async with AsyncOmniQ(backend) as app:
                app.task(name="one")(one)
                handle = await app.enqueue("one")
                with pytest.raises(ConfigError, match="concurrency=1"):
                    await app.run_worker(concurrency=2, burst=True)
                stats = await app.run_worker(concurrency=1, burst=True)
                assert stats.completed == 1 and await handle.result(timeout=5) == 1
    assert any("run one worker only" in r.message for r in caplog.records)


async def one() -> int:
    return 1


async def test_s3_refuses_a_botocore_that_would_drop_the_conditions(s3_server, monkeypatch):
    """s3fs filters out keywords its botocore does not know: a conditional PUT would silently
    become a plain one. The store checks at start instead of finding out in a race."""
    import s3fs

    from omniq.backend.file import FileBackend
    from omniq.exceptions import MissingDependencyError

    real = s3fs.S3FileSystem._filter_kwargs

    def old_botocore(self, method, kwargs):
        return {k: v for k, v in real(self, method, kwargs).items() if k != "IfMatch"}

    monkeypatch.setattr(s3fs.S3FileSystem, "_filter_kwargs", old_botocore)
    backend = FileBackend.from_url(s3_server.url(), fs_kwargs=dict(s3_server.options))
    with pytest.raises(MissingDependencyError, match="IfMatch"):
        async with backend:
            pass


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("2026-12-05T11:26:06.87568Z", 1796469966.87568),  # fake-gcs-server trims the zeros
        ("2026-12-05T11:26:06Z", 1796469966.0),
        ("2026-12-05T12:26:06.875680+01:00", 1796469966.87568),
        ("2026-13-05T11:26:06Z", None),  # no such month: the lease is read, not skipped
        ("yesterday", None),
        (None, None),
    ],
)
def test_gcs_listing_times_parse_on_every_supported_python(listed, expected):
    from omniq.storage.file.gcs import _timestamp

    assert _timestamp(listed) == (pytest.approx(expected) if expected is not None else None)


async def test_sibling_folders_are_listed_together(backend):
    """``list_folders``: the names of several sibling folders in (folder, name) order. Stores
    that can start a listing after a name do it in one request per page (a short queue's
    payloads and leases in one LIST); paged, the listing goes on across the folders."""
    from omniq.storage.file.cloud import CloudObjectStore

    objects = backend.objects
    for key in [
        "x/q/completed/k",  # sorts before the folders asked for
        "x/q/pending/b",
        "x/q/pending/a",
        "x/q/pending_other/c",  # between them in name order, not asked for
        "x/q/running/a",
        "x/q/s01/pending/z",  # after them
        "x/q/shards.json",
    ]:
        await objects.put(key, b"1")
    expected = [("pending", "a"), ("pending", "b"), ("running", "a")]
    if isinstance(objects, CloudObjectStore):
        await objects.put("x/q/pending/nested/d", b"1")  # a sub-folder lists as a name
        expected.insert(2, ("pending", "nested"))
    for page_size in (None, 2):
        requests = getattr(objects, "requests", None)
        before = requests["list"] if requests is not None else 0
        listing = objects.list_folders("x/q", ("running", "pending"), page_size)
        pages = [page async for page in listing]
        assert [entry for page in pages for entry in page] == expected
        if objects.seeks and page_size is None:
            assert requests["list"] - before == 1, requests
