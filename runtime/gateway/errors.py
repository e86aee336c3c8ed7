"""HTTP errors of the gateway, in OpenAI's error schema, and the one mapping from SDK errors.

Every error the gateway returns has the body OpenAI's clients parse::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": "invalid_parameter"}}

so ``openai.BadRequestError`` and friends carry a useful message and ``param``. The status says
who must act: 4xx the caller (fix the request, authenticate, slow down), 5xx the operator.

This module is the one boundary where errors become HTTP answers; ``build_http`` installs a
handler per kind, so no error, wherever it is raised, reaches the client in another shape:

* :func:`from_agent_error` -- SDK errors (:mod:`agents.errors`); routes raise or let them
  propagate and never pick a status for them by hand;
* :func:`from_validation_error` -- FastAPI's request validation (a body, query or path
  parameter of the wrong type or value: 400 naming the field);
* :func:`from_http_exception` -- what Starlette answers itself before a route runs (404 for an
  unknown URL, 405 for a wrong method);
* :func:`internal_error` -- anything else: a bug, answered 500 in the same schema.

An error body holds strings only (every field is converted when the error is built), so
rendering it (:meth:`ApiError.render`) cannot fail: a non-finite number or a lone surrogate
taken from a request ends up escaped inside the message, never as a value JSON cannot carry.
"""

from __future__ import annotations

import http
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from agents import errors as e

__all__ = [
    "ApiError",
    "from_agent_error",
    "from_http_exception",
    "from_validation_error",
    "internal_error",
    "render_error",
]

log = logging.getLogger(__name__)


class ApiError(HTTPException):
    """An HTTP error with OpenAI's body.

    It is a Starlette ``HTTPException`` so that FastAPI lets it through unchanged wherever it is
    raised -- even while FastAPI reads the request body, where any other exception would become
    a bare ``{"detail": ...}`` 400 (:mod:`runtime.gateway.json_body` raises it there).

    Args:
        status: HTTP status.
        message: what went wrong and, where possible, how to fix it.
        type: OpenAI's error type (``invalid_request_error``, ``authentication_error``, ...).
        param: the request field at fault, if one is.
        code: a short machine-readable code.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = str(message)
        super().__init__(status, message, headers or {})
        self.status = status
        self.message = message
        self.type = str(type)
        self.param = None if param is None else str(param)
        self.code = None if code is None else str(code)
        self.headers: dict[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def render(self) -> bytes:
        """The JSON body, as bytes (see :func:`render_error`)."""
        return render_error(self.body())

    def response(self) -> Response:
        return Response(
            self.render(),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )


def render_error(body: Mapping[str, Any]) -> bytes:
    """An error body as JSON bytes; never raises.

    ASCII-only, so a lone surrogate quoted from a request is escaped rather than failing the
    UTF-8 encoding. A value JSON cannot carry (a non-finite number, an object) -- possible
    only in a body built by hand, since :class:`ApiError` holds strings -- is written as its
    ``str()`` instead of failing the response that reports the error.
    """
    try:
        text = json.dumps(body, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = json.dumps(_json_safe(body), ensure_ascii=True, separators=(",", ":"))
    return text.encode("ascii")


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def from_agent_error(exc: e.AgentError) -> ApiError:
    """The HTTP error for an SDK error (see the table in the README's API section)."""
    msg = str(exc)
    match exc:
        case e.InvalidParameter():
            return ApiError(400, msg, param=exc.field, code="invalid_parameter")
        case e.NoHandler():
            return ApiError(400, msg, param="model", code="no_handler")
        case e.MessageDecodeError() | e.MessageEncodeError():
            return ApiError(422, msg, code="invalid_message")
        case e.MessageTooLarge():
            return ApiError(413, msg, code="message_too_large")
        case e.UnknownModel() | e.UnknownAgent():
            return ApiError(404, msg, param="model", code="model_not_found")
        case e.UnknownQueue():
            return ApiError(404, msg, param="queue", code="queue_not_found")
        case e.UnknownTopic():
            return ApiError(404, msg, param="topic", code="topic_not_found")
        case e.TaskNotFound():
            return ApiError(404, msg, code="task_not_found")
        case e.Backpressure():
            headers = _retry_after(exc.retry_after_s)
            return ApiError(429, msg, type="rate_limit_error", code="backpressure", headers=headers)
        case e.Overloaded():
            headers = _retry_after(exc.retry_after_s)
            return ApiError(429, msg, type="rate_limit_error", code="overloaded", headers=headers)
        case e.SendTimeout():
            return ApiError(504, msg, type="timeout_error", code="upstream_timeout")
        case e.HandlerError():
            return ApiError(502, msg, type="api_error", code="agent_failed")
        case e.ModelError():
            return ApiError(
                503, msg, type="api_error", code="model_unavailable", headers=_retry_after(1)
            )
        case e.ReplicaUnavailable() | e.RuntimeClosed() | e.QueueUnavailable():
            return ApiError(503, msg, type="api_error", code="unavailable", headers=_retry_after(1))
    return ApiError(500, msg, type="api_error", code=type(exc).__name__)


# -- errors raised by FastAPI and Starlette, before or around a route ----------------------------


def from_validation_error(exc: RequestValidationError) -> ApiError:
    """The 400 for FastAPI's request validation: a body that is not JSON, or a field (of the
    body, the query or the path) of the wrong type or value, named in ``param`` as a dotted
    path (``messages.0.content``, ``wait_s``). The first error is reported: one fix at a time,
    as OpenAI's API answers."""
    errors = exc.errors()
    if not errors:
        return ApiError(400, "invalid request", code="invalid_request")
    err = errors[0]
    kind = str(err.get("type", ""))
    loc = tuple(err.get("loc", ()))
    if kind == "json_invalid":
        reason = (err.get("ctx") or {}).get("error") or err.get("msg")
        at = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        return ApiError(400, f"request body is not valid JSON: {reason}{at}", code="bad_json")
    where = _field(loc, getattr(exc, "body", None), kind)
    if kind == "missing":
        code = "missing_parameter"
    elif kind.endswith(("_type", "_parsing")):
        code = "invalid_type"
    else:
        code = "invalid_value"
    return ApiError(400, f"{where or 'body'}: {err.get('msg')}", param=where or None, code=code)


def _field(loc: tuple[Any, ...], body: Any, kind: str) -> str:
    """The field a validation error is about, as a dotted path of the caller's own keys and
    indexes. Pydantic puts the member type of a union in ``loc`` (``content.str``,
    ``content.list[TextPart].0.text``); that is not a field the caller wrote, so a part of a
    body's ``loc`` is kept only where the body has it, or when it is the field found
    missing."""
    if not loc:
        return ""
    source, *rest = loc
    if source != "body":  # query, path, header: one name
        return ".".join(str(p) for p in rest)
    parts: list[str] = []
    node = body
    for i, part in enumerate(rest):
        if _holds(node, part):
            node = node[part]
        elif not (kind == "missing" and i == len(rest) - 1):
            continue  # a union member's tag
        parts.append(str(part))
    return ".".join(parts)


def _holds(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and type(part) is int and 0 <= part < len(node)


def from_http_exception(request: Request, exc: HTTPException) -> ApiError:
    """OpenAI's body for an error Starlette or FastAPI answered itself: 404 for a URL no route
    has, 405 for a method the route does not take (its ``Allow`` header kept), or a 400 for a
    body FastAPI could not read."""
    status = exc.status_code
    headers = dict(exc.headers or {})
    target = f"{request.method} {request.url.path}"
    if status == 404:
        return ApiError(404, f"unknown URL ({target})", code="unknown_url", headers=headers)
    if status == 405:
        allowed = headers.get("Allow") or headers.get("allow") or ""
        return ApiError(
            405,
            f"method not allowed ({target}); allowed: {allowed or 'none'}",
            code="method_not_allowed",
            headers=headers,
        )
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return ApiError(status, message, type=_type_of(status), code=code, headers=headers)


def internal_error(request: Request, exc: BaseException) -> ApiError:
    """The 500 for an exception nothing else handled: a bug, logged with its traceback; the
    client gets OpenAI's body and the exception's type, never its text (it may quote
    internals)."""
    log.error(
        "gateway: %s %s failed: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )
    return ApiError(
        500,
        f"internal error ({type(exc).__name__}); the server's log has the details",
        type="api_error",
        code="internal_error",
    )


def _type_of(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"
