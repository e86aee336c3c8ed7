"""Chat and text completions, one request top to bottom: route, ask, cache, call, format, record.

One pipeline for ``/v1/chat/completions`` and ``/v1/completions``, whatever ``model`` names.
FastAPI has parsed and validated the body against the schema (:mod:`runtime.gateway.schema`,
a 422 naming the field otherwise); :meth:`Completions.answer` then runs these steps, in order:

1. **route** (:mod:`runtime.gateway.targets`): the model, ``agent:<name>`` or variant arm that
   answers (404 otherwise);
2. **ask**: the sampling parameters checked against the limits (400 naming the field) and the
   prompt, with the arm's system prompt first;
3. **cache** (:class:`~runtime.cache.ResponseCache`): may this request read, or store, and
   under which key (scoped to the tenant unless the target is shared);
4. **call** (:mod:`runtime.gateway.calls`): the answer from the cache, from an identical
   request already in flight (single flight), or from the target -- whole, or as deltas;
5. **format** (:mod:`runtime.gateway.openai_format`): OpenAI's JSON, or its SSE chunks for
   ``stream: true``; only a whole answer (every choice stopped or hit its token limit) is
   stored: never an error, a cancelled or a cut-off stream;
6. **record**: the request's metrics (status, target, variant, time) and its server span.

Errors before the first byte are HTTP errors (:mod:`runtime.gateway.errors`); once a stream has
started, an error is an SSE error event followed by ``[DONE]``. A name with shadow arms copies
the request to them once the client's answer is done (:mod:`runtime.gateway.shadows`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from agents.errors import AgentError
from agents.model import SamplingParams
from agents.tracing import TraceContext
from runtime.cache import CacheDecision, ResponseCache, cache_key, cache_scope
from runtime.cluster.client import ClusterClient
from runtime.config import RaygentConfig
from runtime.gateway.calls import Accumulator, Backends, TargetCall
from runtime.gateway.errors import ApiError, from_agent_error
from runtime.gateway.openai_format import Completed, Kind, StreamFormat, done_event, error_event
from runtime.gateway.openai_format import render as render_json
from runtime.gateway.schema import ChatCompletionRequest, CompletionRequest
from runtime.gateway.shadows import Shadows
from runtime.gateway.targets import Target, Targets, with_system_prompt
from runtime.gateway.variants import VARIANT_HEADER
from runtime.models import ModelDelta, ModelServerClient, Priority
from runtime.observability.metrics import CacheResult, Metrics
from runtime.observability.telemetry import Telemetry

__all__ = ["CACHE_HEADER", "Completions"]

CACHE_HEADER = "x-raygent-cache"


@dataclass(frozen=True)
class _Ask:
    """Step 2: what the request asks, checked against the limits."""

    kind: Kind
    prompt: Any  # the chat's turns or the text, with the arm's system prompt first
    client_prompt: Any  # as the client sent it (what shadow arms get)
    sp: SamplingParams


@dataclass(frozen=True)
class _CachePlan:
    """Step 3: what the cache may do for the request, and its key."""

    decision: CacheDecision
    key: str
    shared: bool  # one entry for every tenant (``cache.shared``)
    salt: str | None  # vLLM's prefix-cache scope: the same as the response cache's


@dataclass
class _Outcome:
    """Step 6: what the request's metrics record of how it ended (500 until known)."""

    status: int = 500
    variant: str = ""


class Completions:
    """The completion routes' pipeline, shared by every gateway replica.

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
        self._cache = cache
        self._metrics = metrics
        self._telemetry = telemetry
        self.targets = Targets(config, list(models), runtime)
        """The names this gateway answers, and what each resolves to (step 1)."""
        self.backends = Backends(
            models, runtime, metrics, telemetry, config.limits.request_timeout_s
        )
        """What a call reaches (step 4)."""
        self._shadows = Shadows(self.targets, self.backends)

    # -- the pipeline --------------------------------------------------------------------------

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
    ) -> Response:
        """Answer one request: a ``JSONResponse``, or an event stream (a ``StreamingResponse``;
        a whole ``Response`` when it replays a cached answer). Raises ``ApiError`` or
        ``AgentError`` for an error before the first byte (the app's handlers render them).

        ``trace`` is the caller's position (its ``traceparent``, or a new root); ``route`` the
        route template, for the server span and the metrics; ``priority`` ranks the request
        when its target is at capacity (a model's admission queue, an agent's mailbox);
        ``session`` (the session header) and ``variant`` (the override header) choose the arm
        of a name with variants."""
        with self._recorded(route, req.model) as outcome:  # 6. record, however it ends
            target = self.targets.route(  # 1. route
                req.model, tenant=tenant, user=req.user, session=session, variant=variant
            )
            ask = self._ask(req, target)  # 2. ask
            plan = self._plan(target, ask, tenant, cache_control)  # 3. cache
            # gateway -> cache -> target: one span each, the target's call a child of the cache's
            with (
                self._telemetry.span(f"POST {route}", trace, kind="server") as root,
                self._telemetry.span("raygent.cache", root.context) as cache_span,
            ):
                root.attributes.update({"http.route": route, "raygent.target": target.name})
                call = TargetCall(  # 4. call ...
                    self.backends,
                    target,
                    ask.kind,
                    ask.prompt,
                    ask.sp,
                    cache_span.context,
                    plan.salt,
                    priority,
                    session,
                )
                router = self.targets.variants.get(target.name)
                if router is not None:
                    root.attributes["raygent.variant"] = target.variant
                    call.on_answer = self._shadows.copier(
                        router, ask.kind, ask.client_prompt, ask.sp, plan.salt, cache_span.context
                    )
                with _naming(target.variant):  # ... 5. and format
                    if req.stream:
                        response = await self._stream(call, plan, req.include_usage)
                    else:
                        response = await self._plain(call, plan)
                if target.variant is not None:
                    response.headers[VARIANT_HEADER] = target.variant
                cached = response.headers.get(CACHE_HEADER, "")
                cache_span.attributes.update(
                    {"raygent.cache.status": cached, "raygent.cache.shared": plan.shared}
                )
            outcome.status = response.status_code
            outcome.variant = target.variant or ""
            return response

    @contextlib.contextmanager
    def _recorded(self, route: str, model: str) -> Iterator[_Outcome]:
        """Step 6: the request counted in flight while it runs, then its metrics -- status,
        target, variant, time -- however it ended (an error before the first byte included)."""
        started = time.monotonic()
        outcome = _Outcome()
        try:
            with self._metrics.in_flight():
                yield outcome
        except ApiError as exc:
            outcome.status, outcome.variant = exc.status, exc.headers.get(VARIANT_HEADER, "")
            raise
        except AgentError as exc:
            outcome.status = from_agent_error(exc).status
            raise
        finally:
            # Label values must be bounded: an unknown model is not a new time series.
            name = model if model in self.targets.names else "unknown"
            self._metrics.observe_request(
                route, name, str(outcome.status), time.monotonic() - started, outcome.variant
            )

    def _ask(self, req: ChatCompletionRequest | CompletionRequest, target: Target) -> _Ask:
        """Step 2: the sampling parameters within the limits (400 naming the field), the
        prompt with the arm's system prompt first."""
        sp = req.sampling(self._cfg.limits)
        if isinstance(req, ChatCompletionRequest):
            kind: Kind = "chat"
            prompt: Any = req.turns()
        else:
            kind, prompt = "text", req.text()
        ours = prompt
        if target.system_prompt is not None:
            ours = with_system_prompt(prompt, target.system_prompt)
        return _Ask(kind, ours, prompt, sp)

    def _plan(
        self, target: Target, ask: _Ask, tenant: str, cache_control: str | None
    ) -> _CachePlan:
        """Step 3: the cache policy's decision and the entry's key. vLLM's prefix cache is
        scoped as the response cache is: a tenant's prompt reuses only its own tenant's KV
        blocks (unless the target is shared)."""
        params = ask.sp.to_dict()
        decision = self._cache.decide(
            target=target.name,
            params=params,
            deterministic=ask.sp.is_deterministic,
            cache_control=cache_control,
        )
        shared = target.name in self._cfg.cache.shared
        key = cache_key(
            target=target.name,
            revision=target.revision,
            kind=ask.kind,
            prompt=ask.prompt,
            params=params,
            tenant=tenant,
            shared=shared,
        )
        return _CachePlan(decision, key, shared, cache_scope(tenant, shared=shared))

    # -- steps 4 and 5: call and format --------------------------------------------------------

    async def _plain(self, call: TargetCall, plan: _CachePlan) -> JSONResponse:
        done_here: list[Completed] = []

        async def produce() -> bytes | None:
            done = await call.whole()
            done_here.append(done)
            return done.to_bytes() if done.cacheable else None

        value, status = await self._cache.get_or_compute(plan.key, produce, plan.decision)
        done = done_here[0] if done_here else Completed.from_bytes(value or b"")
        call.answered(done)
        self._metrics.cache_event(status)
        body = render_json(done, call.target.variant)
        return JSONResponse(body, headers={CACHE_HEADER: status})

    async def _stream(self, call: TargetCall, plan: _CachePlan, include_usage: bool) -> Response:
        """A stream request: replay a cached answer, follow an identical stream in flight
        (replaying its answer when it ends), or stream live and record for the cache."""
        key, decision = plan.key, plan.decision
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
        status: CacheResult = "bypass" if flight.looked == "error" else "miss"

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

    def _replay(self, call: TargetCall, done: Completed, include_usage: bool) -> Response:
        """A cached answer as an event stream. The whole answer is here, so it is one body:
        not a ``StreamingResponse`` (a task group, a disconnect listener and an ASGI message
        per chunk, 12 % of a hit's gateway CPU under py-spy), nor a socket write per chunk --
        a hit's cost is the gateway's, and it shares the loop with live streams."""
        self._metrics.cache_event("hit")
        call.answered(done)
        fmt = StreamFormat(done.kind, done.model, include_usage, call.target.variant)
        return Response(
            b"".join(fmt.replay(done)),
            media_type="text/event-stream",
            headers={CACHE_HEADER: "hit", **_SSE_HEADERS},
        )

    async def _live(
        self,
        call: TargetCall,
        include_usage: bool,
        status: CacheResult,
        finish: Callable[[Completed | None], Awaitable[None]] | None,
    ) -> StreamingResponse:
        self._metrics.cache_event(status)
        deltas = call.deltas()
        # Errors until the first delta are still HTTP errors (nothing has been sent yet).
        first = await anext(deltas, None) or ModelDelta("", 0, call.target.name, "stop")
        fmt = StreamFormat(
            call.kind, first.model or call.target.name, include_usage, call.target.variant
        )

        async def body() -> AsyncIterator[bytes]:
            acc = Accumulator(call.kind, fmt.model)
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


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _sse(body: AsyncIterator[bytes], status: str) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={CACHE_HEADER: status, **_SSE_HEADERS}
    )
