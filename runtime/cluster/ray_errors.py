"""Ray's and Serve's errors, as the SDK's: the one place that reads them.

A call to an agent or a model crosses Ray: an actor call, a Serve handle, a streaming
generator. When it fails, what comes back is Ray's, whatever the callee raised:

* ``RayTaskError`` wraps the callee's exception. It is also made an instance of the cause's
  class (``as_instanceof_cause``) with the remote traceback as its message, so it is unwrapped
  first: a caller gets the callee's own SDK error, with its own message;
* ``BackPressureError``: Serve's queue for the deployment is full;
* ``TaskCancelledError`` (and Serve's ``RequestCancelledError``, which is both): cancelled;
* ``RayActorError``, ``RayServeException`` and the rest: the replica died, is unreachable, or
  there is none yet.

:func:`sdk_error` maps them to :mod:`agents.errors` for the two kinds of callee, in one
decision order: an agent's failures name the agent (``ReplicaUnavailable``, ``HandlerError``,
retryable where a retry can help), a model's are ``ModelError`` naming the model. Callers
raise what it returns; nothing else in the runtime inspects a Ray error.
"""

from __future__ import annotations

import asyncio
from typing import Literal, NoReturn

from ray import exceptions as rex
from ray.serve.exceptions import BackPressureError, RayServeException

from agents.errors import (
    AgentError,
    Backpressure,
    HandlerError,
    ModelError,
    ReplicaUnavailable,
)

__all__ = ["RAY_ERRORS", "raise_sdk_error", "sdk_error"]

RAY_ERRORS: tuple[type[BaseException], ...] = (RayServeException, rex.RayError)
"""What a call through Ray or Serve raises when the call, not the caller, failed (Serve's
``BackPressureError`` is a ``RayServeException``)."""


def sdk_error(exc: BaseException, target: str, kind: Literal["agent", "model"]) -> BaseException:
    """The SDK error (or ``CancelledError``) for ``exc``, raised by a call to the agent or
    model ``target``; an SDK error raised in this process is returned as it is."""
    agent = kind == "agent"
    if isinstance(exc, BackPressureError):
        return Backpressure(target if agent else f"model {target}", 0)
    if isinstance(exc, rex.TaskCancelledError):  # before RayServeException: Serve's is both
        if agent:
            return asyncio.CancelledError()
        return ModelError(f"model {target!r}: the request was cancelled")
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause
        if isinstance(cause, AgentError):
            return cause
        if not agent:
            return ModelError(f"model {target!r} failed: {type(cause).__name__}: {cause}")
        if isinstance(cause, asyncio.CancelledError):
            return ReplicaUnavailable(target, "the call was cancelled on the replica")
        return HandlerError(target, "call", type(cause).__name__, str(cause))
    if isinstance(exc, AgentError):
        return exc
    if agent:  # no replica yet, none reachable, or the one called died
        return ReplicaUnavailable(target, type(exc).__name__)
    if isinstance(exc, rex.RayActorError):
        return ModelError(f"model {target!r}: the replica died or is unreachable; retry")
    return ModelError(f"model {target!r} is unavailable: {type(exc).__name__}: {exc}")


def raise_sdk_error(exc: BaseException, target: str, kind: Literal["agent", "model"]) -> NoReturn:
    """Raise :func:`sdk_error` of ``exc``: a callee's own error without Ray's wrapper in its
    chain, anything else chained to the Ray error it came from."""
    err = sdk_error(exc, target, kind)
    if isinstance(exc, rex.RayTaskError) and err is exc.cause:
        raise err from None
    raise err from exc
