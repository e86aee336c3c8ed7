"""Where a model is served, as something shaped like its deployment handle.

A model runs either in its own ``ModelServer`` deployment (``placement: deployment``) or inside
the gateway replicas (``placement: gateway``, the default: the replica that holds the engine
answers the model's HTTP routes itself, so a request crosses no Ray hop). Its callers --
:class:`~runtime.models.client.ModelServerClient` (``ctx.llm`` and the gateway's completions)
and a model's fallback -- call ``h.chat.remote(...)``, ``h.complete.remote(...)`` and
``h.options(stream=True).stream.remote(...)`` whatever the placement:

==========================  ==========================  =====================================
the caller has              it is                       a call goes
==========================  ==========================  =====================================
``DeploymentHandle``        the model's own deployment  through Serve to a ModelServer replica
:class:`ModelAt`            a name, resolved in the     through Serve to the hosting
                            caller's replica            deployment's ``model_<method>(name, ...)``
:class:`LocalModel`         the engine in this process  a plain ``await``: no Ray, no copy
==========================  ==========================  =====================================

:class:`ModelAt` is what an agent deployment is bound with for a gateway-hosted model: the
gateway binds the agents, so binding the gateway into them would be a cycle; a deployment
name, resolved by ``serve.get_deployment_handle`` inside the replica, is not.

Example:
    >>> ModelAt("Gateway", "default")
    ModelAt(deployment='Gateway', model='default')
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.models.server import ModelHost

__all__ = ["LocalModel", "ModelAt", "RoutedModel", "resolve_model"]


@dataclass(frozen=True)
class ModelAt:
    """Model ``model``, served by deployment ``deployment`` of the caller's application through
    its ``model_chat`` / ``model_complete`` / ``model_stream`` methods."""

    deployment: str
    model: str


class _Prefixed:
    """``method.remote(*args)`` that calls ``target.remote(model, *args)``."""

    __slots__ = ("_model", "_target")

    def __init__(self, target: Any, model: str) -> None:
        self._target = target
        self._model = model

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._target.remote(self._model, *args, **kwargs)


class RoutedModel:
    """A handle-shaped view of one model hosted by another deployment (see :class:`ModelAt`).

    Args:
        handle: a handle to the hosting deployment.
        model: the model's configured name.
    """

    def __init__(self, handle: Any, model: str) -> None:
        self._handle = handle
        self._model = model

    def options(self, **kwargs: Any) -> RoutedModel:
        return RoutedModel(self._handle.options(**kwargs), self._model)

    def __getattr__(self, method: str) -> _Prefixed:
        if method.startswith("_"):
            raise AttributeError(method)
        return _Prefixed(getattr(self._handle, f"model_{method}"), self._model)


class _Direct:
    """``method.remote(*args)`` that calls the host's method in this process."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


class LocalModel:
    """A handle-shaped view of a :class:`~runtime.models.server.ModelHost` in this process.

    ``chat.remote``/``complete.remote`` return the coroutine (await it), ``stream.remote`` the
    host's async generator without delta batching (``aclose`` it to abort the generation).
    Errors are the host's own SDK errors: nothing is wrapped.
    """

    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.chat = _Direct(host.chat)
        self.complete = _Direct(host.complete)
        self.stream = _Direct(self._stream)

    def options(self, **_: Any) -> LocalModel:
        return self

    def _stream(
        self,
        prompt: Any,
        params: Any = None,
        traceparent: str | None = None,
        priority: Any = "interactive",
        affinity: str | None = None,  # routing is done: this is the engine in this process
    ) -> AsyncIterator[Any]:
        return self.host.stream(prompt, params, traceparent, batch=False, priority=priority)


def resolve_model(ref: Any, app_name: str | None = None) -> Any:
    """A handle-shaped object for ``ref``: a :class:`ModelAt` becomes a :class:`RoutedModel`
    over a handle to its deployment (in ``app_name``, default: the calling replica's
    application); anything else (a handle, a :class:`LocalModel`, None) is returned as is."""
    if not isinstance(ref, ModelAt):
        return ref
    from ray import serve

    if app_name is None:
        app_name = serve.get_replica_context().app_name
    return RoutedModel(serve.get_deployment_handle(ref.deployment, app_name=app_name), ref.model)
