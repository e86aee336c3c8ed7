"""HTTP errors of the gateway, in OpenAI's error schema, and the one mapping from SDK errors.

Every error the gateway returns has the body OpenAI's clients parse::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": "invalid_parameter"}}

so ``openai.BadRequestError`` and friends carry a useful message and ``param``. The status says
who must act: 4xx the caller (fix the request, authenticate, slow down), 5xx the operator.
:func:`from_agent_error` is the only place where SDK errors (:mod:`agents.errors`) become
statuses; routes raise or let them propagate and never pick a status for them by hand.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse

from agents import errors as e

__all__ = ["ApiError", "from_agent_error"]


class ApiError(Exception):
    """An HTTP error with OpenAI's body.

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
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


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
