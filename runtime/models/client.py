"""``ctx.llm`` on Ray: a :class:`~agents.model.ModelClient` over a ModelServer deployment handle.

:class:`ModelServerClient` implements the SDK's model protocol (``chat``, ``complete``,
``stream``) by calling a :mod:`runtime.models.server` deployment through a Serve
``DeploymentHandle``. It is the boundary where Ray's errors become SDK errors
(:func:`runtime.cluster.ray_errors.sdk_error`, the one translator, shared with agent calls):

=====================================================  ========================================
Ray / Serve raises                                     the caller sees
=====================================================  ========================================
``RayTaskError`` carrying an SDK error                 that error (``InvalidParameter``, ...)
``ActorDiedError`` / ``ActorUnavailableError``         ``ModelError`` (retryable)
``BackPressureError`` (Serve's queue is full)          ``Backpressure`` (retryable)
``DeploymentUnavailableError``                         ``ModelError`` (retryable)
``RequestCancelledError``, ``TaskCancelledError``      ``ModelError`` (retryable)
any other ``RayError`` / ``RayServeException``         ``ModelError`` (retryable)
=====================================================  ========================================

Cancelling a call (or closing a stream early) cancels the Serve request, which cancels the
replica's handler, which aborts the request in the vLLM engine.

Example:
    >>> from ray import serve  # doctest: +SKIP
    >>> llm = ModelServerClient.for_model("default", app_name="raygent")  # doctest: +SKIP
    >>> (await llm.chat([{"role": "user", "content": "Hi"}], max_tokens=8)).model  # doctest: +SKIP
    'default'
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from agents.errors import InvalidParameter
from agents.model import (
    ChatMessage,
    Handoff,
    ModelReply,
    Prompt,
    SamplingParams,
    TextStream,
    Usage,
)
from agents.tracing import TraceContext
from runtime.cluster.ray_errors import RAY_ERRORS, raise_sdk_error
from runtime.models._wire import ModelDelta, ToolCallDelta, join_tool_calls

__all__ = ["AFFINITY", "CACHE_SALT", "ModelServerClient", "deployment_name"]

CACHE_SALT = "cache_salt"
"""The request parameter, beside the sampling parameters, that scopes vLLM's prefix cache: only
requests with the same salt reuse each other's KV blocks (``ModelServerClient.scoped``). It
travels in ``params`` so that every handle shape (a deployment, ``RoutedModel``, ``LocalModel``,
a fallback) carries it unchanged; the model host takes it out before checking the rest."""

AFFINITY = "affinity"
"""The keyword argument of a model call that names its conversation for routing (the caller's
session): calls with one key go to one replica while it is not overloaded, so later turns find
the earlier ones in its prefix cache (:mod:`runtime.models.router`). Without it, the router
names the conversation by its opening messages."""


def deployment_name(model: str) -> str:
    """The Serve deployment name of the ModelServer for ``model``."""
    return f"ModelServer-{model}"


class ModelServerClient:
    """``ctx.llm`` backed by a ModelServer deployment, or by a model hosted elsewhere.

    Args:
        handle: a handle to the model's deployment (see :meth:`for_model`), or a
            handle-shaped ``RoutedModel`` / ``LocalModel`` (:mod:`runtime.models.routes`).
        name: the model's configured name (used in error messages).
    """

    def __init__(self, handle: DeploymentHandle, name: str) -> None:
        self._handle = handle
        self._stream_handle = handle.options(stream=True)
        self.name = name
        self._traceparent: str | None = None
        self._salt: dict[str, str] = {}  # {CACHE_SALT: ...} when scoped
        # keyword arguments of every call: priority="batch" (interactive: the default), affinity
        self._extra: dict[str, Any] = {}

    def traced(self, trace: TraceContext | None) -> ModelServerClient:
        """A view of this client whose calls are spans in ``trace`` (the runtime gives each
        handler call its own view, so ``ctx.llm`` calls join the handler's trace)."""
        view = copy.copy(self)
        view._traceparent = trace.traceparent if trace is not None else None
        return view

    def scoped(self, cache_salt: str | None) -> ModelServerClient:
        """A view of this client whose requests reuse vLLM's prefix cache only with requests of
        the same ``cache_salt`` (the gateway passes the caller's cache scope, its tenant); None:
        unscoped, as a plain client."""
        view = copy.copy(self)
        view._salt = {CACHE_SALT: cache_salt} if cache_salt is not None else {}
        return view

    def prioritized(self, priority: str) -> ModelServerClient:
        """A view of this client whose calls have ``priority`` (``interactive`` or ``batch``)
        when the model is at capacity: batch requests are refused first (``admission``)."""
        return self._with("priority", priority if priority != "interactive" else None)

    def affine(self, session: str | None) -> ModelServerClient:
        """A view of this client whose calls belong to conversation ``session`` (see
        :data:`AFFINITY`); None: named by their opening messages."""
        return self._with(AFFINITY, session or None)

    def _with(self, name: str, value: str | None) -> ModelServerClient:
        """A view whose calls pass keyword ``name=value`` (None: leave it out, the default)."""
        view = copy.copy(self)
        view._extra = {k: v for k, v in self._extra.items() if k != name}
        if value is not None:
            view._extra[name] = value
        return view

    @classmethod
    def for_model(cls, name: str, *, app_name: str) -> ModelServerClient:
        """A client of model ``name`` deployed in Serve application ``app_name``."""
        return cls(serve.get_deployment_handle(deployment_name(name), app_name=app_name), name)

    async def chat(self, messages: Sequence[ChatMessage], **params: Any) -> ModelReply:
        """Answer a chat. Keyword arguments are :class:`~agents.model.SamplingParams` fields."""
        SamplingParams(**_known(params))  # fail fast, before a network hop
        params = {**_plain(params), **self._salt}
        call = self._handle.chat.remote(list(messages), params, self._traceparent, **self._extra)
        return await self._call(call)

    async def complete(self, prompt: str, **params: Any) -> ModelReply:
        """Continue a raw prompt."""
        if not isinstance(prompt, str):
            raise InvalidParameter("prompt", prompt, "a string (use chat() for turns)")
        SamplingParams(**_known(params))
        params = {**_plain(params), **self._salt}
        call = self._handle.complete.remote(prompt, params, self._traceparent, **self._extra)
        return await self._call(call)

    def stream(self, prompt: Prompt, **params: Any) -> TextStream:
        """Text deltas (choice 0) as they are generated, then the whole answer as the stream's
        ``reply`` (with its ``tool_calls``); closing early aborts. Nothing is generated until it
        is read, so a handler may yield it unread, for its caller to run
        (:class:`~agents.model.Handoff`)."""
        turns = prompt if isinstance(prompt, str) else list(prompt)
        params = _plain(params)
        handoff = Handoff(self.name, turns, params, self._traceparent)
        return TextStream(self._text(prompt, params), handoff)

    async def _text(
        self, prompt: Prompt, params: dict[str, Any]
    ) -> AsyncGenerator[str | ModelReply, None]:
        texts: list[str] = []
        pieces: list[ToolCallDelta] = []  # tool calls come whole, on the reply
        model, reason, usage = self.name, None, Usage()
        async for delta in self.stream_deltas(prompt, **params):
            model = delta.model or model
            usage = delta.usage or usage
            if delta.index == 0:
                reason = delta.finish_reason or reason
                pieces += delta.tool_calls
                if delta.text:
                    texts.append(delta.text)
                    yield delta.text
        calls = join_tool_calls(pieces)
        yield ModelReply("".join(texts), model, reason or "stop", usage, tool_calls=calls)

    async def stream_deltas(
        self, prompt: Prompt, **params: Any
    ) -> AsyncGenerator[ModelDelta, None]:
        """Like :meth:`stream` but yields :class:`ModelDelta` (every choice, finish reason,
        usage on the last one, and which model answered)."""
        SamplingParams(**_known(params))
        if not isinstance(prompt, str):
            prompt = list(prompt)
        params = {**_plain(params), **self._salt}
        gen = self._stream_handle.stream.remote(prompt, params, self._traceparent, **self._extra)
        done = False
        try:
            async for delta in gen:
                yield delta
            done = True
        except RAY_ERRORS as exc:
            done = True
            raise_sdk_error(exc, self.name, "model")
        finally:
            if not done:  # closed early or cancelled: stop the generation in the engine
                if hasattr(gen, "aclose"):
                    await gen.aclose()  # an engine in this process (LocalModel)
                else:
                    gen.cancel()

    async def _call(self, response: Any) -> ModelReply:
        try:
            return await response
        except asyncio.CancelledError:
            if hasattr(response, "cancel"):  # a Serve response (a local call is already done)
                response.cancel()
            raise
        except RAY_ERRORS as exc:
            raise_sdk_error(exc, self.name, "model")


def _known(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without names SamplingParams does not take; the server rejects those with a
    message naming the field, so the client does not need a second copy of that check."""
    from dataclasses import fields

    names = {f.name for f in fields(SamplingParams)}
    return {k: v for k, v in params.items() if k in names}


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as plain values that cross Ray and the codec: an :class:`agents.tools.Tool`
    in ``tools`` becomes its definition (its function stays in the agent's process)."""
    tools = params.get("tools")
    if not tools or isinstance(tools, (str, dict)):
        return dict(params)
    return {**params, "tools": [getattr(t, "openai_tool", t) for t in tools]}
