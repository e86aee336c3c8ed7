"""Chat and text completions: a model or an agent answers, the response cache in front.

One path for ``/v1/chat/completions`` and ``/v1/completions``, whatever ``model`` names:

1. resolve the target: a configured model, ``agent:<name>``, or a name with variants -- then
   the caller's arm (:mod:`runtime.gateway.variants`) -- (404 otherwise);
2. validate sampling parameters against the limits (400 naming the field);
3. ask the cache policy (:meth:`ResponseCache.decide`): may this request read, or store?
4. answer — from the cache, from an identical request already in flight (single-flight), or
   from the target — as JSON, or as SSE for ``stream: true``;
5. store only a whole answer (every choice stopped or hit its token limit): never an error, a
   cancelled or a cut-off stream.

An agent answers a chat as a :class:`~agents.ChatRequest` message; its reply (a ``str`` or a
:class:`~agents.ModelReply`) comes back in the same schema as a model's. An agent whose handler
streams (yields text deltas) streams to the client as a model does, chunk by chunk
(:mod:`runtime.gateway.agent_streams`); a returning handler's reply is one content chunk.

Errors before the first byte are HTTP errors (:mod:`runtime.gateway.errors`); once a stream has
started, an error is an SSE error event followed by ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from agents import codec
from agents.errors import AgentError, SendTimeout, UnknownModel
from agents.model import ChatRequest, ModelReply, SamplingParams, Usage
from agents.runtime_api import Priority as AgentPriority
from agents.tracing import TraceContext
from runtime.cache import CacheDecision, ResponseCache, cache_key, cache_scope
from runtime.cluster.client import ClusterClient
from runtime.config import RaygentConfig
from runtime.core.streaming import decoded
from runtime.errors import ConfigError
from runtime.gateway.agent_streams import ChatFold, reply_text, run_handoffs
from runtime.gateway.edge import ANONYMOUS
from runtime.gateway.errors import ApiError, from_agent_error
from runtime.gateway.openai_format import Completed, Kind, StreamFormat, done_event, error_event
from runtime.gateway.openai_format import render as render_json
from runtime.gateway.schema import ChatCompletionRequest, CompletionRequest
from runtime.gateway.variants import VARIANT_HEADER, WEIGHTS_KEY, Arm, VariantRouter
from runtime.models import (
    ModelDelta,
    ModelServerClient,
    Priority,
    ToolCallDelta,
    join_tool_calls,
    pieces_of,
)
from runtime.observability.metrics import Metrics, ShadowOutcome
from runtime.observability.telemetry import Telemetry, genai_attributes

__all__ = ["AGENT_PREFIX", "CACHE_HEADER", "Completions", "Target", "agent_priority"]

log = logging.getLogger(__name__)

AGENT_PREFIX = "agent:"
"""``model`` values naming an agent: ``agent:<name>``."""

CACHE_HEADER = "x-raygent-cache"


@dataclass(frozen=True)
class Target:
    """What answers a request: a model, or an agent."""

    name: str  # as the client wrote it: "default" or "agent:assistant"
    model: str | None = None
    agent: str | None = None
    revision: str | None = None
    variant: str | None = None  # the arm, when ``name`` has variants
    system_prompt: str | None = None  # the arm's prompt, sent before the client's


def agent_priority(priority: Priority) -> AgentPriority:
    """The agent mailbox's class for a request's priority: ``batch`` work is what a mailbox
    calls ``background`` (the SDK's name: topic messages and tasks share it)."""
    return "background" if priority == "batch" else "interactive"


class Completions:
    """The completion routes' logic, shared by every gateway replica.

    Args:
        config: the application config.
        models: model clients by name.
        runtime: the gateway's cluster client (reaches agents).
        cache: the response cache.
        metrics: request metrics.
        telemetry: span export.
    """

    def __init__(
        self,
        config: RaygentConfig,
        models: dict[str, ModelServerClient],
        runtime: ClusterClient,
        cache: ResponseCache,
        metrics: Metrics,
        telemetry: Telemetry,
    ) -> None:
        self._cfg = config
        self._models = models
        self._runtime = runtime
        self._cache = cache
        self._metrics = metrics
        self._telemetry = telemetry
        self._timeout = config.limits.request_timeout_s
        self._variants = {n: VariantRouter(n, v) for n, v in config.variants.items()}
        self._serve_weights: dict[str, dict[str, float]] = {}
        self._shadow_inflight = dict.fromkeys(self._variants, 0)
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self.names: tuple[str, ...] = tuple(
            dict.fromkeys(
                [*models, *(AGENT_PREFIX + a for a in runtime.spec.classes), *self._variants]
            )
        )
        """Every ``model`` value this gateway answers (fixed for the app's life)."""
        for router in self._variants.values():
            for arm in router.arms.values():
                if arm.target not in self.names:
                    raise ConfigError(
                        f"variants.{router.name}.arms.{arm.name}.target = {arm.target!r} is "
                        f"not a model or agent of this application; known: {list(self.names)}"
                    )

    def run_handoffs(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """An agent's streamed items with each model stream it handed off run here."""
        return run_handoffs(items, self._models)  # type: ignore[arg-type]

    # -- targets -------------------------------------------------------------------------------

    def resolve(self, name: str, *, key: str | None = None, variant: str | None = None) -> Target:
        """The target ``name`` denotes; 404 (``UnknownModel``) if nothing does. A name with
        variants resolves to the arm of the caller's sticky ``key`` under the current weights,
        or to the arm ``variant`` (the request's override header) names."""
        router = self._variants.get(name)
        if router is not None:
            return self._arm(router, router.pick(key, variant, self.weights_set(name)))
        if variant is not None:
            raise ApiError(
                400,
                f"header {VARIANT_HEADER}: {name!r} has no variants "
                f"(names with variants: {sorted(self._variants)})",
                param=VARIANT_HEADER,
                code="invalid_header",
            )
        return self._direct(name)

    @property
    def variants(self) -> dict[str, VariantRouter]:
        """The routers of the names with variants."""
        return self._variants

    def weights_set(self, name: str) -> dict[str, float] | None:
        """The weights in force for ``name`` other than the app config's, or None: those the
        admin route set (replicated shared state; a local read), else the Serve config's
        (:meth:`set_serve_weights`)."""
        value = self._runtime.state.get(WEIGHTS_KEY.format(name=name))
        return value if isinstance(value, dict) else self._serve_weights.get(name)

    def weights_source(self, name: str) -> str:
        """Where ``name``'s weights come from: ``admin``, ``serve_config`` or ``config``."""
        if isinstance(self._runtime.state.get(WEIGHTS_KEY.format(name=name)), dict):
            return "admin"
        return "serve_config" if name in self._serve_weights else "config"

    def set_serve_weights(self, by_name: Mapping[str, Any]) -> None:
        """Weights from the Serve config: the Gateway deployment's ``user_config``
        ``variant_weights``, which Serve hands to every replica (and to each replacement)
        when it changes, without restarting any. They replace the app config's weights; an
        admin override still wins until it is cleared. A name left out goes back to the app
        config's weights.

        Raises:
            ConfigError: a name without variants, or weights the admin route would refuse
                (Serve then reports the update as failed and keeps the replica's weights).
        """
        checked: dict[str, dict[str, float]] = {}
        for name, weights in by_name.items():
            router = self._variants.get(name)
            if router is None:
                raise ConfigError(
                    f"user_config.variant_weights: {name!r} has no variants; names with "
                    f"variants: {sorted(self._variants)}"
                )
            try:
                checked[name] = router.weights(router.check_weights(weights))
            except ApiError as exc:
                raise ConfigError(f"user_config.variant_weights.{name}: {exc.message}") from None
        self._serve_weights = checked

    async def set_weights(self, name: str, weights: dict[str, float] | None) -> None:
        """Set (None: clear) ``name``'s weights on every gateway replica: written to the
        shared state, which the registry's feed brings to every replica within a poll."""
        key = WEIGHTS_KEY.format(name=name)
        if weights is None:
            await self._runtime.state.delete(key)
        else:
            await self._runtime.state.set(key, weights)

    def _arm(self, router: VariantRouter, arm: Arm) -> Target:
        base = self._direct(arm.target)
        return Target(
            router.name,
            model=base.model,
            agent=base.agent,
            revision=f"{base.revision}#{arm.name}",
            variant=arm.name,
            system_prompt=arm.system_prompt,
        )

    def _direct(self, name: str) -> Target:
        if name.startswith(AGENT_PREFIX):
            agent = name[len(AGENT_PREFIX) :]
            cls = self._runtime.spec.classes.get(agent)
            if cls is None:
                raise UnknownModel(name, list(self.names))
            return Target(name, agent=agent, revision=f"{cls.__module__}:{cls.__qualname__}")
        cfg = self._cfg.models.get(name)
        if cfg is None or name not in self._models:
            raise UnknownModel(name, list(self.names))
        return Target(name, model=name, revision=f"{cfg.source}@{cfg.revision or ''}")

    # -- the route -----------------------------------------------------------------------------

    async def answer(
        self,
        req: ChatCompletionRequest | CompletionRequest,
        *,
        tenant: str,
        cache_control: str | None,
        trace: TraceContext | None,
        route: str,
        priority: Priority = "interactive",
        session: str | None = None,
        variant: str | None = None,
    ) -> Any:
        """Answer one request: a ``JSONResponse``, or an event stream (a ``StreamingResponse``;
        a whole ``Response`` when it replays a cached answer).

        ``trace`` is the caller's position (its ``traceparent``, or a new root); ``route`` the
        route template, for the server span; ``priority`` ranks the request when its target is
        at capacity (a model's admission queue, an agent's mailbox); ``session`` (the session
        header) and ``variant`` (the override header) choose the arm of a name with
        variants."""
        kind: Kind = "chat" if isinstance(req, ChatCompletionRequest) else "text"
        router = self._variants.get(req.model)
        key = None
        if router is not None:  # the caller's sticky key: its session, user, else tenant
            named = tenant if tenant != ANONYMOUS else None
            key = router.sticky_key(session=session, user=req.user, tenant=named)
        target = self.resolve(req.model, key=key, variant=variant)
        sp = req.sampling(self._cfg.limits)
        prompt: Any = req.turns() if isinstance(req, ChatCompletionRequest) else req.text()
        client_prompt = prompt
        if target.system_prompt is not None:
            prompt = _with_system_prompt(prompt, target.system_prompt)
        params = sp.to_dict()
        decision = self._cache.decide(
            target=target.name,
            params=params,
            deterministic=sp.is_deterministic,
            cache_control=cache_control,
        )
        shared = target.name in self._cfg.cache.shared
        key = cache_key(
            target=target.name,
            revision=target.revision,
            kind=kind,
            prompt=prompt,
            params=params,
            tenant=tenant,
            shared=shared,
        )
        # vLLM's prefix cache is scoped as the response cache is: a tenant's prompt reuses only
        # its own tenant's KV blocks (unless the target is shared)
        salt = cache_scope(tenant, shared=shared)
        # gateway -> cache -> target: one span each, the target's call a child of the cache's
        with self._telemetry.span(f"POST {route}", trace, kind="server") as root:
            root.attributes.update({"http.route": route, "raygent.target": target.name})
            if target.variant is not None:
                root.attributes["raygent.variant"] = target.variant
            with self._telemetry.span("raygent.cache", root.context) as cache_span:
                call = _Call(
                    self, target, kind, prompt, sp, cache_span.context, salt, priority, session
                )
                shadows = router.shadows() if router is not None else []
                if router is not None and shadows:
                    call.on_answer = self._copier(
                        router, shadows, kind, client_prompt, sp, salt, cache_span.context
                    )
                with _naming(target.variant):
                    if req.stream:
                        response = await self._stream(call, key, decision, req.include_usage)
                    else:
                        response = await self._plain(call, key, decision)
                status = response.headers.get(CACHE_HEADER, "")
                if target.variant is not None:
                    response.headers[VARIANT_HEADER] = target.variant
                cache_span.attributes.update(
                    {"raygent.cache.status": status, "raygent.cache.shared": shared}
                )
            return response

    async def _plain(self, call: _Call, key: str, decision: CacheDecision) -> JSONResponse:
        done_here: list[Completed] = []

        async def produce() -> bytes | None:
            done = await call.whole()
            done_here.append(done)
            return done.to_bytes() if done.cacheable else None

        value, status = await self._cache.get_or_compute(key, produce, decision)
        done = done_here[0] if done_here else Completed.from_bytes(value or b"")
        call.answered(done)
        self._cache_metric(status)
        body = render_json(done, call.target.variant)
        return JSONResponse(body, headers={CACHE_HEADER: status})

    async def _stream(
        self, call: _Call, key: str, decision: CacheDecision, include_usage: bool
    ) -> Response:
        """A stream request: replay a cached answer, follow an identical stream in flight
        (replaying its answer when it ends), or stream live and record for the cache."""
        if not decision.lookup:  # no-store / no-cache / policy: live, stored only if allowed
            put = self._put_after(key) if decision.store else None
            return await self._live(call, include_usage, "bypass", put)
        stack = contextlib.AsyncExitStack()
        try:
            # the cache read and the flight in one: a stored answer, an identical request in
            # flight here (no Redis call), or the lead (value and lock in one round trip)
            flight = await stack.enter_async_context(
                self._cache.flight(key, store=decision.store, lookup=True)
            )
            if not flight.leader:
                value = await asyncio.wait_for(flight.wait(), call.left())
                await stack.aclose()
                if value is not None:
                    return self._replay(call, Completed.from_bytes(value), include_usage)
                healthy = flight.looked != "error"  # Redis failed: do not wait on it again
                put = self._put_after(key) if decision.store and healthy else None
                return await self._live(call, include_usage, "miss" if healthy else "bypass", put)
        except BaseException:
            await stack.aclose()
            raise
        status = "bypass" if flight.looked == "error" else "miss"

        async def lead(done: Completed | None) -> None:
            try:
                flight.publish(done.to_bytes() if done is not None and done.cacheable else None)
            finally:
                await stack.aclose()  # ends the flight: stores the published value

        try:
            return await self._live(call, include_usage, status, lead)
        except BaseException:
            await lead(None)
            raise

    def _put_after(self, key: str) -> Callable[[Completed | None], Awaitable[None]]:
        async def put(done: Completed | None) -> None:
            if done is not None and done.cacheable:
                await self._cache.put(key, done.to_bytes())

        return put

    def _replay(self, call: _Call, done: Completed, include_usage: bool) -> Response:
        """A cached answer as an event stream. The whole answer is here, so it is one body:
        not a ``StreamingResponse`` (a task group, a disconnect listener and an ASGI message
        per chunk, 12 % of a hit's gateway CPU under py-spy), nor a socket write per chunk --
        a hit's cost is the gateway's, and it shares the loop with live streams."""
        self._cache_metric("hit")
        call.answered(done)
        fmt = StreamFormat(done.kind, done.model, include_usage, call.target.variant)
        return Response(
            b"".join(fmt.replay(done)),
            media_type="text/event-stream",
            headers={CACHE_HEADER: "hit", **_SSE_HEADERS},
        )

    async def _live(
        self,
        call: _Call,
        include_usage: bool,
        status: str,
        finish: Callable[[Completed | None], Awaitable[None]] | None,
    ) -> StreamingResponse:
        self._cache_metric(status)
        deltas = call.deltas()
        # Errors until the first delta are still HTTP errors (nothing has been sent yet).
        first = await anext(deltas, None) or ModelDelta("", 0, call.target.name, "stop")
        fmt = StreamFormat(
            call.kind, first.model or call.target.name, include_usage, call.target.variant
        )

        async def body() -> AsyncIterator[bytes]:
            acc = _Accumulator(call.kind, fmt.model)
            try:
                delta: ModelDelta | None = first
                while delta is not None:
                    acc.add(delta)
                    if delta.text or delta.finish_reason or delta.tool_calls:
                        calls = [c.to_openai() for c in delta.tool_calls]
                        yield fmt.delta(delta.index, delta.text, delta.finish_reason, calls)
                    delta = await anext(deltas, None)
                if include_usage:
                    yield fmt.usage(acc.usage)
                yield done_event()
                acc.complete = True
            except (AgentError, ApiError) as exc:  # mid-stream: an error event, then [DONE]
                err = exc if isinstance(exc, ApiError) else from_agent_error(exc)
                yield error_event(err.body())
                yield done_event()
            finally:
                await deltas.aclose()
                call.finished(acc)
                call.answered(acc.result())
                if finish is not None:
                    await finish(acc.result())

        return _sse(body(), status)

    def _cache_metric(self, status: str) -> None:
        self._metrics.cache_event(status)

    # -- shadow variants -----------------------------------------------------------------------

    def _copier(
        self,
        router: VariantRouter,
        arms: list[Arm],
        kind: Kind,
        prompt: Any,
        sp: SamplingParams,
        salt: str | None,
        trace: TraceContext,
    ) -> Callable[[Completed | None], None]:
        """What copies this request to its shadow arms once its answer is done: a task per
        copy, started only while fewer than ``shadow_max_inflight`` of the name's copies run
        (else counted as dropped), so the client's answer never waits on a shadow."""

        def copy(primary: Completed | None) -> None:
            for arm in arms:
                if self._shadow_inflight[router.name] >= router.shadow_max_inflight:
                    self._metrics.observe_shadow(router.name, arm.name, "dropped")
                    continue
                self._shadow_inflight[router.name] += 1
                task = asyncio.create_task(
                    self._shadow(router, arm, kind, prompt, sp, salt, trace, primary)
                )
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)

        return copy

    async def _shadow(
        self,
        router: VariantRouter,
        arm: Arm,
        kind: Kind,
        prompt: Any,
        sp: SamplingParams,
        salt: str | None,
        trace: TraceContext,
        primary: Completed | None,
    ) -> None:
        """One copy: the shadow arm answers as a ``batch`` request (a model's admission sheds
        it before any client's), uncached; its outcome and time are recorded."""
        started = time.monotonic()
        outcome: ShadowOutcome
        try:
            if arm.system_prompt is not None:
                prompt = _with_system_prompt(prompt, arm.system_prompt)
            call = _Call(self, self._arm(router, arm), kind, prompt, sp, trace, salt, "batch")
            done = await call.whole()
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is its outcome
            log.debug("shadow %s/%s failed: %r", router.name, arm.name, exc)
            outcome = "error"
        else:
            same = primary is not None and done.texts == primary.texts
            outcome = "same" if same else "different"
        finally:
            self._shadow_inflight[router.name] -= 1
        self._metrics.observe_shadow(router.name, arm.name, outcome, time.monotonic() - started)


class _Accumulator:
    """Collects a live stream into the :class:`Completed` that may be cached."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind = kind
        self.model = model
        self.texts: dict[int, list[str]] = {}
        self.calls: dict[int, list[ToolCallDelta]] = {}
        self.reasons: dict[int, str] = {}
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


class _Call:
    """One request's call to its target, with its span and metrics."""

    def __init__(
        self,
        owner: Completions,
        target: Target,
        kind: Kind,
        prompt: Any,
        sp: SamplingParams,
        trace: TraceContext,
        cache_salt: str | None = None,
        priority: Priority = "interactive",
        session: str | None = None,
    ) -> None:
        self.owner = owner
        self.target = target
        self.kind = kind
        self.prompt = prompt
        self.sp = sp
        self.trace = trace
        self.cache_salt = cache_salt  # vLLM's prefix-cache scope (models only, not agents)
        self.priority = priority
        self.session = session  # names the conversation for the model's router (affinity)
        self.started = time.monotonic()
        self._deadline = self.started + owner._timeout
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
            raise _timeout(self.owner._timeout)
        return left

    async def whole(self, stream: bool = False) -> Completed:
        """The whole answer of the target (``stream``: for a caller that streams it)."""
        with self.owner._telemetry.span(self._span_name(), self.trace) as span:
            try:
                if self.target.agent is not None:
                    done = await self._agent(span.context, stream)
                else:
                    done = await asyncio.wait_for(self._model(span.context), self.left())
            except asyncio.TimeoutError:
                raise _timeout(self.owner._timeout) from None
            span.attributes.update(self._attributes(done))
        elapsed = time.monotonic() - self.started
        self.owner._metrics.observe_generation(
            self.target.name, done.usage.completion_tokens, elapsed, self.target.variant or ""
        )
        return done

    def _llm(self) -> ModelServerClient:
        """The target model's client for this request: its tenant's prefix-cache scope, its
        priority at the model's admission, its conversation for the model's router."""
        llm = self.owner._models[self.target.model or ""]
        return llm.scoped(self.cache_salt).prioritized(self.priority).affine(self.session)

    async def _model(self, trace: TraceContext) -> Completed:
        llm = self._llm().traced(trace)
        params = self.sp.to_dict()
        if self.kind == "chat":
            reply = await llm.chat(self.prompt, **params)
        else:
            reply = await llm.complete(self.prompt, **params)
        return Completed.from_reply(self.kind, reply)

    def _agent_request(self, stream: bool) -> tuple[bytes, bool]:
        """The encoded ``ChatRequest`` for the target agent, and whether its handler streams."""
        turns = self.prompt if self.kind == "chat" else [{"role": "user", "content": self.prompt}]
        msg = ChatRequest(turns, _explicit(self.sp), stream=stream)
        routes = self.owner._runtime.spec.classes[self.target.agent or ""].routes()
        return codec.encode(msg), routes.find("direct", None, msg).streams

    async def _agent(self, trace: TraceContext, stream: bool) -> Completed:
        payload, streams = self._agent_request(stream)
        agent = self.target.agent or ""
        runtime = self.owner._runtime
        raw = await runtime.send_encoded(
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
        acc = _Accumulator(self.kind, self.target.name)  # a streaming handler's items, all
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

    async def deltas(self) -> AsyncIterator[ModelDelta]:
        """The answer as deltas: a model streams, and so does an agent whose handler yields;
        a returning agent's whole reply is one delta per choice. The wait for a model's first
        delta is bounded by what is left of the request's timeout; after it, the deadline is
        checked per delta (a timer per token costs a task per token, and a model that stalls
        mid-stream fails its health check: the engine is restarted and the stream errors)."""
        if self.target.agent is not None:
            if self.owner._runtime.spec.classes[self.target.agent].routes().streams(ChatRequest):
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
                first = await asyncio.wait_for(anext(gen), self.left())
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise _timeout(self.owner._timeout) from None
            yield first
            async for delta in gen:
                yield delta
                self.left()  # raises 504 once the deadline has passed
        finally:
            await gen.aclose()

    async def _agent_stream(self) -> AsyncIterator[ModelDelta]:
        agent = self.target.agent or ""
        payload, _ = self._agent_request(stream=True)
        self.streamed_agent = True
        with self.owner._telemetry.span(self._span_name(), self.trace) as span:
            batches = self.owner._runtime.stream_encoded(
                agent,
                payload,
                span.context.traceparent,
                agent_priority(self.priority),
                accepts_handoff=True,
            )
            items = self.owner.run_handoffs(decoded(batches, agent, "ChatRequest", self.left()))
            fold = ChatFold(self.target.name)
            try:
                async for item in items:
                    for delta in fold.deltas(item):
                        yield delta
            except SendTimeout:
                raise _timeout(self.owner._timeout) from None
            finally:
                await items.aclose()
            for delta in fold.end():
                yield delta

    def finished(self, acc: _Accumulator) -> None:
        """Metrics and the span of a streamed answer."""
        m = self.owner._metrics
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
            with self.owner._telemetry.span(self._span_name(), self.trace) as span:
                done = acc.result()
                if done is not None:
                    span.attributes.update(self._attributes(done))

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


@contextlib.contextmanager
def _naming(variant: str | None) -> Iterator[None]:
    """An error of a variant's answer names the variant too (its ``x-raygent-variant``
    header), so clients and metrics count errors per variant."""
    try:
        yield
    except ApiError as exc:
        if variant is not None:
            exc.headers[VARIANT_HEADER] = variant
        raise
    except AgentError as exc:
        if variant is None:
            raise
        err = from_agent_error(exc)
        err.headers[VARIANT_HEADER] = variant
        raise err from exc


def _with_system_prompt(prompt: Any, system: str) -> Any:
    """A prompt variant's prompt before the client's: a system message first in a chat, a
    first paragraph of a text completion's prompt."""
    if isinstance(prompt, str):
        return f"{system}\n\n{prompt}"
    return [{"role": "system", "content": system}, *prompt]


def _explicit(sp: SamplingParams) -> dict[str, Any]:
    """The parameters that differ from the SDK defaults (what an agent passes on)."""
    return {k: v for k, v in sp.to_dict().items() if v != _DEFAULTS[k] or k == "max_tokens"}


def _timeout(seconds: float) -> ApiError:
    return ApiError(
        504,
        f"no answer within {seconds:g}s (limits.request_timeout_s)",
        type="timeout_error",
        code="upstream_timeout",
    )


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _sse(body: AsyncIterator[bytes], status: str) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={CACHE_HEADER: status, **_SSE_HEADERS}
    )
