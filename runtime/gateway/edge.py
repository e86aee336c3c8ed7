"""What every request passes before a route runs: API-key auth and the body size limit.

One plain ASGI middleware, ahead of FastAPI's routing, so that a request that is too big or
unauthenticated costs no JSON parsing and never reaches a handler:

* **Auth.** When keys are configured, every path except ``/healthz`` and ``/readyz`` needs
  ``Authorization: Bearer <key>`` (401 otherwise, with ``WWW-Authenticate``). The presented key
  is compared with *every* configured key through ``hmac.compare_digest`` on SHA-256 digests,
  so the time taken says nothing about which key, or how much of one, matched. The caller's
  tenant — the scope that separates cache entries — is a fingerprint of the key (never the key
  itself), refined by an ``x-raygent-tenant`` header when the caller sends one.
* **Admin.** ``/admin/...`` (changing variant weights) takes only an admin key
  (``auth.admin_keys``), compared the same way; API keys do not open it, and with no admin key
  configured it is closed to everyone (403), whether or not API keys are.
* **Body limit.** A ``Content-Length`` over the limit is refused at once; a chunked body is
  read up to the limit and refused as soon as it passes it (413). The body is then replayed to
  the app, which therefore never sees more than the limit.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from pydantic import SecretStr

from runtime.gateway.errors import ApiError

__all__ = ["ADMIN", "ADMIN_PREFIX", "ANONYMOUS", "OPEN_PATHS", "Edge", "fingerprint"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Paths that answer without a key: probes of load balancers and orchestrators."""

ANONYMOUS = "anonymous"
"""The tenant of every caller when no keys are configured."""

ADMIN_PREFIX = "/admin/"
"""Paths that take an admin key (``auth.admin_keys``) instead of an API key."""

ADMIN = "admin"
"""The tenant of an admin request."""


def fingerprint(key: str) -> str:
    """A stable, non-reversible name for an API key (what logs and cache keys may carry)."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


class Edge:
    """The ASGI middleware (``app.add_middleware(Edge, keys=..., max_body_bytes=...)``).

    Args:
        app: the wrapped ASGI app.
        keys: accepted API keys; empty means auth is off.
        max_body_bytes: the largest request body accepted.
        admin_keys: the keys of ``/admin/`` paths; empty means those are closed.
    """

    def __init__(
        self,
        app: Any,
        keys: Sequence[SecretStr],
        max_body_bytes: int,
        admin_keys: Sequence[SecretStr] = (),
    ) -> None:
        self.app = app
        self._digests = [_digest(k.get_secret_value()) for k in keys]
        self._admin = [_digest(k.get_secret_value()) for k in admin_keys]
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            tenant = self._authenticate(scope["path"], headers)
            body = await self._read_body(headers, receive)
        except ApiError as err:
            await _reply(send, err)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, _replay(body, receive), send)

    def _authenticate(self, path: str, headers: dict[str, str]) -> str:
        if path.startswith(ADMIN_PREFIX):
            if not self._admin:
                raise ApiError(
                    403,
                    "the admin API is off: set auth.admin_keys (RAYGENT_ADMIN_KEYS)",
                    type="permission_error",
                    code="admin_disabled",
                )
            if not _matches(_bearer(headers), self._admin):
                raise _unauthorized("invalid admin key")
            return ADMIN
        extra = headers.get("x-raygent-tenant", "")
        if not self._digests:
            return f"{ANONYMOUS}/{extra}" if extra else ANONYMOUS
        if path in OPEN_PATHS:
            return ANONYMOUS
        key = _bearer(headers)
        if not _matches(key, self._digests):
            raise _unauthorized("invalid API key")
        tenant = fingerprint(key)
        return f"{tenant}/{extra}" if extra else tenant

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "invalid Content-Length header", code="invalid_header")
            if int(length) > self._max:
                raise _too_large(int(length), self._max)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                raise _too_large(size, self._max)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _bearer(headers: dict[str, str]) -> str:
    """The presented key (401 without one)."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("missing 'Authorization: Bearer <key>' header")
    return key.strip()


def _matches(key: str, digests: Sequence[bytes]) -> bool:
    digest = _digest(key)
    matched = False
    for known in digests:  # no early exit: the time does not depend on which key
        matched |= hmac.compare_digest(digest, known)
    return matched


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then defers to the server (which
    reports the client's disconnect to streaming responses)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        type="authentication_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body of {size} bytes (or more) is over the limit of {limit} bytes "
        "(limits.max_body_bytes)",
        code="body_too_large",
    )


async def _reply(send: Send, err: ApiError) -> None:
    body = err.render()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in err.headers.items()),
    ]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
