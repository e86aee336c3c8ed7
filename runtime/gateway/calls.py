"""The call step of a completion: one request's call to its target, whole or as deltas.

A model is called through its :class:`~runtime.models.ModelServerClient`, scoped to the
request (its tenant's prefix-cache salt, its priority at the model's admission, its session
for the model's router). An agent is sent a :class:`~agents.ChatRequest` through the cluster
client, as agents send to each other; a handler that yields streams back item by item
(:class:`~runtime.gateway.agent_streams.ChatFold` turns the items into model deltas), a
returning handler's reply is one delta per choice. Either way the caller sees one shape:
:class:`~runtime.models.ModelDelta` s, or the :class:`Completed` answer.

The request's timeout (``limits.request_timeout_s``) bounds the call: the wait for the first
delta, then a check per delta (a 504 either way). Each call records its span and its
generation metrics; the request's own metrics are the pipeline's
(:mod:`runtime.gateway.completions`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from agents import codec
from agents.errors import SendTimeout
from agents.model import ChatRequest, FinishReason, ModelReply, SamplingParams, Usage
from agents.runtime_api import Priority as AgentPriority
from agents.tracing import TraceContext
from runtime.cluster.client import ClusterClient
from runtime.core.streaming import decoded
from runtime.core.timeouts import within
from runtime.gateway.agent_streams import ChatFold, reply_text, run_handoffs
from runtime.gateway.errors import ApiError
from runtime.gateway.openai_format import Completed, Kind
from runtime.gateway.targets import Target
from runtime.models import (
    ModelDelta,
    ModelServerClient,
    Priority,
    ToolCallDelta,
    join_tool_calls,
    pieces_of,
)
from runtime.observability.metrics import Metrics
from runtime.observability.telemetry import Telemetry, genai_attributes

__all__ = ["Accumulator", "Backends", "TargetCall", "agent_priority", "timeout_error"]


@dataclass(frozen=True)
class Backends:
    """What a call reaches: the model clients, the cluster client (agents), and where it
    records (metrics, spans), with the request timeout."""

    models: dict[str, ModelServerClient]
    runtime: ClusterClient
    metrics: Metrics
    telemetry: Telemetry
    timeout_s: float

    def run_handoffs(self, items: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        """An agent's streamed items with each model stream it handed off run here."""
        return run_handoffs(items, self.models)


def agent_priority(priority: Priority) -> AgentPriority:
    """The agent mailbox's class for a request's priority: ``batch`` work is what a mailbox
    calls ``background`` (the SDK's name: topic messages and tasks share it)."""
    return "background" if priority == "batch" else "interactive"


def timeout_error(seconds: float) -> ApiError:
    """The 504 of a request that outlived ``limits.request_timeout_s``."""
    return ApiError(
        504,
        f"no answer within {seconds:g}s (limits.request_timeout_s)",
        type="timeout_error",
        code="upstream_timeout",
    )


class Accumulator:
    """Collects a live stream into the :class:`Completed` that may be cached."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind = kind
        self.model = model
        self.texts: dict[int, list[str]] = {}
        self.calls: dict[int, list[ToolCallDelta]] = {}
        self.reasons: dict[int, FinishReason] = {}
        self.usage = Usage()
        self.complete = False
        self.first_token_at: float | None = None

    def add(self, delta: ModelDelta) -> None:
        if delta.text and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.texts.setdefault(delta.index, []).append(delta.text)
        if delta.tool_calls:
            self.calls.setdefault(delta.index, []).extend(delta.tool_calls)
        if delta.finish_reason is not None:
            self.reasons[delta.index] = delta.finish_reason
        if delta.usage is not None:
            self.usage = delta.usage

    def result(self) -> Completed | None:
        """The whole answer; None unless the stream ended and every choice finished."""
        if not self.complete or set(self.reasons) != set(self.texts):
            return None
        order = sorted(self.texts)
        return Completed(
            self.kind,
            self.model,
            ["".join(self.texts[i]) for i in order],
            [self.reasons[i] for i in order],
            self.usage,
            [[c.to_openai() for c in join_tool_calls(self.calls.get(i, ()))] for i in order],
        )


class TargetCall:
    """One request's call to its target, with its span and metrics.

    Args:
        backends: what the call reaches and where it records.
        target: the model or agent.
        kind: chat or text completion.
        prompt: the chat's turns, or the text prompt (with the arm's system prompt, if any).
        sp: the sampling parameters.
        trace: the parent of the call's span.
        cache_salt: vLLM's prefix-cache scope (models only, not agents).
        priority: the request's class at the target's admission.
        session: names the conversation for the model's router (affinity).
    """

    def __init__(
        self,
        backends: Backends,
        target: Target,
        kind: Kind,
        prompt: Any,
        sp: SamplingParams,
        trace: TraceContext,
        cache_salt: str | None = None,
        priority: Priority = "interactive",
        session: str | None = None,
    ) -> None:
        self.backends = backends
        self.target = target
        self.kind = kind
        self.prompt = prompt
        self.sp = sp
        self.trace = trace
        self.cache_salt = cache_salt
        self.priority = priority
        self.session = session
        self.started = time.monotonic()
        self._deadline = self.started + backends.timeout_s
        self.streamed_agent = False  # an agent's handler streamed this answer (not whole())
        self.on_answer: Callable[[Completed | None], None] | None = None  # shadow copies

    def answered(self, done: Completed | None) -> None:
        """The client's answer is done (None: it failed or was cut off): start what waits
        for that (the copies to shadow arms)."""
        on_answer, self.on_answer = self.on_answer, None
        if on_answer is not None:
            on_answer(done)

    def left(self) -> float:
        """Seconds left of the request's timeout (504 when none)."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise timeout_error(self.backends.timeout_s)
        return left

    async def whole(self, stream: bool = False) -> Completed:
        """The whole answer of the target (``stream``: for a caller that streams it)."""
        with self.backends.telemetry.span(self._span_name(), self.trace) as span:
            try:
                if self.target.agent is not None:
                    done = await self._agent(span.context, stream)
                else:
                    done = await within(self._model(span.context), self.left())
            except asyncio.TimeoutError:
                raise timeout_error(self.backends.timeout_s) from None
            span.attributes.update(self._attributes(done))
        elapsed = time.monotonic() - self.started
        self.backends.metrics.observe_generation(
            self.target.name, done.usage.completion_tokens, elapsed, self.target.variant or ""
        )
        return done

    async def deltas(self) -> AsyncGenerator[ModelDelta, None]:
        """The answer as deltas: a model streams, and so does an agent whose handler yields;
        a returning agent's whole reply is one delta per choice. The wait for a model's first
        delta is bounded by what is left of the request's timeout; after it, the deadline is
        checked per delta (a timer per token costs a task per token, and a model that stalls
        mid-stream fails its health check: the engine is restarted and the stream errors)."""
        if self.target.agent is not None:
            routes = self.backends.runtime.spec.classes[self.target.agent].routes()
            if routes.streams(ChatRequest):
                async for delta in self._agent_stream():
                    yield delta
                return
            done = await self.whole(stream=True)
            for i, (text, reason, calls) in enumerate(
                zip(done.texts, done.finish_reasons, done.tool_calls, strict=True)
            ):
                last = i == len(done.texts) - 1
                usage = done.usage if last else None
                yield ModelDelta(text, i, done.model, reason, usage, pieces_of(calls))
            return
        gen = self._llm().stream_deltas(self.prompt, **self.sp.to_dict())
        try:
            try:
                first = await within(anext(gen), self.left())
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise timeout_error(self.backends.timeout_s) from None
            yield first
            async for delta in gen:
                yield delta
                self.left()  # raises 504 once the deadline has passed
        finally:
            await gen.aclose()

    def finished(self, acc: Accumulator) -> None:
        """Metrics and the span of a streamed answer."""
        m = self.backends.metrics
        now = time.monotonic()
        variant = self.target.variant or ""
        if acc.first_token_at is not None:
            m.observe_ttft(self.target.name, acc.first_token_at - self.started, variant)
            if self.target.model is not None or self.streamed_agent:  # else whole() counted
                m.observe_generation(
                    self.target.name,
                    acc.usage.completion_tokens,
                    now - acc.first_token_at,
                    variant,
                )
        if self.target.model is not None:  # an agent's stream already recorded its span
            with self.backends.telemetry.span(self._span_name(), self.trace) as span:
                done = acc.result()
                if done is not None:
                    span.attributes.update(self._attributes(done))

    # -- a model -------------------------------------------------------------------------------

    def _llm(self) -> ModelServerClient:
        """The target model's client for this request: its tenant's prefix-cache scope, its
        priority at the model's admission, its conversation for the model's router."""
        llm = self.backends.models[self.target.model or ""]
        return llm.scoped(self.cache_salt).prioritized(self.priority).affine(self.session)

    async def _model(self, trace: TraceContext) -> Completed:
        llm = self._llm().traced(trace)
        params = self.sp.to_dict()
        if self.kind == "chat":
            reply = await llm.chat(self.prompt, **params)
        else:
            reply = await llm.complete(self.prompt, **params)
        return Completed.from_reply(self.kind, reply)

    # -- an agent ------------------------------------------------------------------------------

    def _agent_request(self, stream: bool) -> tuple[bytes, bool]:
        """The encoded ``ChatRequest`` for the target agent, and whether its handler streams."""
        turns = self.prompt if self.kind == "chat" else [{"role": "user", "content": self.prompt}]
        msg = ChatRequest(turns, _explicit(self.sp), stream=stream)
        routes = self.backends.runtime.spec.classes[self.target.agent or ""].routes()
        return codec.encode(msg), routes.find("direct", None, msg).streams

    async def _agent(self, trace: TraceContext, stream: bool) -> Completed:
        payload, streams = self._agent_request(stream)
        agent = self.target.agent or ""
        raw = await self.backends.runtime.send_encoded(
            agent,
            payload,
            trace.traceparent,
            agent_priority(self.priority),
            self.left(),
            "ChatRequest",
        )
        reply = codec.decode(raw)
        if not streams:
            if isinstance(reply, ModelReply):
                return Completed.from_reply(self.kind, reply)
            return Completed(self.kind, self.target.name, [reply_text(reply)], ["stop"])
        acc = Accumulator(self.kind, self.target.name)  # a streaming handler's items, all
        fold = ChatFold(self.target.name)
        for delta in (d for item in reply for d in fold.deltas(item)):
            acc.add(delta)
        for delta in fold.end():
            acc.add(delta)
        acc.complete = True
        done = acc.result()
        assert done is not None
        done.model = fold.model
        return done

    async def _agent_stream(self) -> AsyncGenerator[ModelDelta, None]:
        agent = self.target.agent or ""
        payload, _ = self._agent_request(stream=True)
        self.streamed_agent = True
        with self.backends.telemetry.span(self._span_name(), self.trace) as span:
            batches = self.backends.runtime.stream_encoded(
                agent,
                payload,
                span.context.traceparent,
                agent_priority(self.priority),
                accepts_handoff=True,
            )
            items = self.backends.run_handoffs(decoded(batches, agent, "ChatRequest", self.left()))
            fold = ChatFold(self.target.name)
            try:
                async for item in items:
                    for delta in fold.deltas(item):
                        yield delta
            except SendTimeout:
                raise timeout_error(self.backends.timeout_s) from None
            finally:
                await items.aclose()
            for delta in fold.end():
                yield delta

    # -- the span ------------------------------------------------------------------------------

    def _span_name(self) -> str:
        if self.target.agent is not None:
            return f"gateway.send {self.target.agent}"
        return f"{'chat' if self.kind == 'chat' else 'text_completion'} {self.target.model}"

    def _attributes(self, done: Completed) -> dict[str, Any]:
        return genai_attributes(
            model=self.target.name,
            operation="chat" if self.kind == "chat" else "text_completion",
            input_tokens=done.usage.prompt_tokens,
            output_tokens=done.usage.completion_tokens,
            max_tokens=self.sp.max_tokens,
            temperature=self.sp.temperature,
            top_p=self.sp.top_p,
            finish_reasons=done.finish_reasons,
            response_model=done.model,
        )


_DEFAULTS = SamplingParams().to_dict()


def _explicit(sp: SamplingParams) -> dict[str, Any]:
    """The parameters that differ from the SDK defaults (what an agent passes on)."""
    return {k: v for k, v in sp.to_dict().items() if v != _DEFAULTS[k] or k == "max_tokens"}
