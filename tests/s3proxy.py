"""A small HTTP proxy in front of an S3 server that answers conditional requests the way other
S3 implementations (or a busy AWS) do.

- ``quoted_if_match=False``: ``If-Match`` with a quoted ETag (the form S3 returns) gets 412, as
  Ceph RGW 16.2 answers; unquoted it goes through.
- ``put_if_match=False``: every ``If-Match`` on a PUT gets 412 (no usable compare-and-swap).
- ``delete_if_match=False``: ``If-Match`` is dropped from DELETE requests: a stale version
  deletes the object, as on RGW.
- ``conflict_rate``: that fraction of conditional writes (PUT with ``If-Match`` or
  ``If-None-Match``, DELETE with ``If-Match``) is answered ``409 ConditionalRequestConflict``
  and not forwarded.
- ``throttle_rate``: that fraction of all requests is answered ``503 ServiceUnavailable`` or
  ``429 TooManyRequests`` and not forwarded.

Faults are drawn from a seeded generator; ``counts`` says how many of each were injected. The
proxy is a thread of the test process; worker subprocesses reach it over 127.0.0.1 like any server.
``requests`` counts every request by kind (``list``, ``get``, ``head``, ``put``, ``delete``,
``post``) and the status answered, e.g. ``("put", 412)``, injected answers included.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_ERRORS = {
    409: ("ConditionalRequestConflict", "A conflicting operation occurred. Please retry."),
    412: ("PreconditionFailed", "At least one of the pre-conditions you specified did not hold"),
    429: ("TooManyRequests", "Please retry later."),
    # S3 also answers 503 SlowDown, which s3fs retries itself (with sleeps) before OmniQ sees it.
    503: ("ServiceUnavailable", "Please retry."),
}


class S3Proxy:
    def __init__(
        self,
        upstream: str,
        *,
        quoted_if_match: bool = True,
        put_if_match: bool = True,
        delete_if_match: bool = True,
        conflict_rate: float = 0.0,
        throttle_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.quoted_if_match = quoted_if_match
        self.put_if_match = put_if_match
        self.delete_if_match = delete_if_match
        self.conflict_rate = conflict_rate
        self.throttle_rate = throttle_rate
        self.counts: Counter[str] = Counter()
        self.requests: Counter[tuple[str, int]] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def options(self, server_options: dict[str, Any]) -> dict[str, Any]:
        """The fsspec options of the server behind, pointed at the proxy."""
        return {**server_options, "endpoint_url": self.endpoint}

    def count(self, method: str, path: str, status: int) -> None:
        query = urlsplit(path).query
        kind = (
            "list"
            if method == "GET" and ("list-type" in query or "prefix=" in query)
            else (method.lower())
        )
        with self._lock:
            self.requests[kind, status] += 1

    def _chance(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._random.random() < rate

    def decide(self, method: str, headers: dict[str, str]) -> int | None:
        """The status to answer instead of forwarding, or ``None`` (headers may be changed)."""
        if self._chance(self.throttle_rate):
            status = 503 if self._chance(0.5) else 429
            self.counts[f"throttled {status}"] += 1
            return status
        if_match = headers.get("If-Match")
        conditional = (method == "PUT" and (if_match or headers.get("If-None-Match"))) or (
            method == "DELETE" and if_match
        )
        if conditional and self._chance(self.conflict_rate):
            self.counts["conflict 409"] += 1
            return 409
        refused = not self.put_if_match or (
            not self.quoted_if_match and (if_match or "").startswith('"')
        )
        if method == "PUT" and if_match is not None and refused:
            self.counts["refused If-Match 412"] += 1
            return 412
        if method == "DELETE" and if_match is not None and not self.delete_if_match:
            del headers["If-Match"]
            self.counts["ignored If-Match on DELETE"] += 1
        return None

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in range(2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            try:
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.getheaders(), data
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy: S3Proxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        status = proxy.decide(self.command, headers)
        if status is not None:
            proxy.count(self.command, self.path, status)
            code, message = _ERRORS[status]
            data = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        status, out_headers, data = proxy.forward(self.command, self.path, headers, body)
        proxy.count(self.command, self.path, status)
        self.send_response(status)
        length = None
        for name, value in out_headers:
            if name.lower() == "content-length":
                length = value
            elif name.lower() not in _HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", length or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
