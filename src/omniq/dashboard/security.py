"""Who may look and who may act: the token check, CSRF tokens, loopback-only binding.

- With a token every request needs it, as ``Authorization: Bearer T`` (scripts) or HTTP basic
  auth with T as the password (browsers ask for it once); without one only loopback Host names are
  accepted, so a page on another site cannot reach the dashboard through DNS rebinding.
- Every action is a POST that carries the CSRF token (form field ``csrf`` or header
  ``X-CSRF-Token``): an HMAC of the token (or of this process's random secret), embedded in the
  pages and given by ``GET /api/csrf``, which another site's page can neither read nor guess.
  A POST whose ``Origin`` is another site is refused as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the dashboard on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a ``Host`` header (``127.0.0.1:8080`` -> ``127.0.0.1``)."""
    return urlsplit(f"//{header}").hostname or ""


class Guard:
    """The checks, for one dashboard process."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        # With a token the CSRF token derives from it, so that several dashboard processes
        # behind one address accept each other's pages; without one it is random per process.
        self._secret = b"token:" + token.encode() if token else secrets.token_bytes(32)
        self.csrf_token = hmac.new(
            self._secret, b"omniq-dashboard-csrf", hashlib.sha256
        ).hexdigest()

    def authorized(self, request: Request) -> bool:
        """The request carries the token (always true when none is set)."""
        if self.token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def host_allowed(self, request: Request) -> bool:
        """Without a token, only requests addressed to a loopback name (DNS rebinding)."""
        return self.token is not None or is_loopback(host_name(request.headers.get("host", "")))

    def same_origin(self, request: Request) -> bool:
        """A browser's ``Origin`` (when it sends one) names this dashboard's own host."""
        origin = request.headers.get("origin")
        if origin is None:  # not a browser, or a same-origin request of an older one
            return True
        return urlsplit(origin).netloc == request.headers.get("host", "")

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_token.encode())
