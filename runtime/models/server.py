"""``ModelServer``: the Ray Serve deployment that holds one vLLM engine for one configured model.

One deployment per entry of ``models`` (:func:`model_deployments`), each replica a Ray actor with
its own :class:`~runtime.models.engine.ModelEngine`. Callers use
:class:`~runtime.models.client.ModelServerClient` (``ctx.llm``).

Lifecycle of a replica
----------------------

::

    unloaded ──request / start──► loading ──► warming ──► ready ──idle_unload_s──► unloaded
        ▲                            │            │          │ (GPU: sleeping, woken on request)
        └──────── next request ◄── failed ◄───────┘          └─ dead (engine died or hung)

=========  ======================================================  =========================
state      meaning                                                 requests
=========  ======================================================  =========================
unloaded   no engine (``lazy`` before the first request; after     start a load and wait
           idle unload)
loading    building the engine (single flight: one load however    wait
           many requests wait on it)
warming    ``warmup.requests`` sample requests, ``concurrency`` at  wait
           a time, ``max_tokens`` each
ready      warm engine                                             served
sleeping   GPU only: vLLM sleep mode level 1 after idle            wake, then served
failed     the last load failed                                    retry the load
=========  ======================================================  =========================

``load`` decides when the first load starts: ``lazy`` on the first request, ``background`` in the
constructor as a task (the replica starts at once; requests wait), ``eager`` in the (async)
constructor, so Serve does not count the replica as started until it is loaded and warm.

Readiness: how "no user traffic before warm" maps onto Serve
------------------------------------------------------------
Serve (2.60) routes to a replica as soon as its constructor has returned and the first health
check has passed; it has no separate readiness probe. So:

* ``eager`` uses Serve's own gate: ``__init__`` is ``async`` and awaits load + warm-up, so the
  replica is not RUNNING -- and receives nothing -- until it is warm. Rolling updates and
  autoscaling then never route to a cold replica. The price: a deploy blocks for the load.
* ``background`` and ``lazy`` replicas are RUNNING while cold, so routing is made warm-aware: the
  replica reports ``{"ready", "on_demand"}`` through Serve's ``record_routing_stats`` hook and
  the deployment uses :class:`~runtime.models.router.WarmFirstRequestRouter` (Serve's custom
  request-router API), which sends nothing to a loading or warming replica while a ready one
  exists. With no ready replica, requests wait inside a replica until it is ready -- they are
  never served by a cold engine. Readiness reaches routers within ``routing_stats_period_s``.

The alternative of failing ``check_health`` until warm was rejected: Serve treats a failing
check as a crash (it replaces the replica after three), not as "not ready yet".

Health, failure and fallback
----------------------------
* ``check_health`` (every ``health_check_period_s``) generates one token under
  ``health_check_timeout_s`` unless the engine produced output within that window; a hung engine
  (alive, no progress -- vLLM's own health check misses it) or a dead one fails the check, and
  Serve replaces the replica. A replica whose ``background``/``eager`` load failed fails it too.
* A request that errors or exceeds ``request_timeout_s`` is answered by the ``fallback`` model's
  deployment if one is configured; ``ModelReply.model`` (or ``ModelDelta.model``) names the model
  that answered. A stream falls back only before its first delta.
* Errors leave a replica as SDK errors (``InvalidParameter``, ``ModelError``); the client
  unwraps Ray's ``RayTaskError`` around them.

Observability: ``stats()`` returns state, load/warm-up durations, counters and engine numbers;
Ray metrics ``raygent_model_load_seconds``, ``raygent_model_warmup_seconds`` (histograms),
``raygent_model_ready`` (gauge), ``raygent_model_fallbacks_total``, ``raygent_model_unloads_total``
carry the same, tagged with the model and Serve's deployment/replica tags.

Example:
    >>> from ray import serve  # doctest: +SKIP
    >>> cfg = load_config()  # doctest: +SKIP
    >>> apps = model_deployments(cfg)  # doctest: +SKIP
    >>> handle = serve.run(apps["default"], name="models", route_prefix=None)  # doctest: +SKIP
    >>> handle.stats.remote().result()["state"]  # doctest: +SKIP
    'ready'
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import importlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Gauge, Histogram

from agents.errors import AgentError, InvalidParameter, ModelError
from agents.model import ModelReply, Prompt, SamplingParams
from agents.tracing import TraceContext
from runtime.cluster.ray_errors import raise_sdk_error
from runtime.config import LimitsConfig, ModelConfig, RaygentConfig, TelemetryConfig
from runtime.core.timeouts import within
from runtime.errors import ConfigError
from runtime.models._params import check_params
from runtime.models._wire import ModelDelta, coalesce
from runtime.models.admission import AdmissionGate, Priority, default_max_inflight
from runtime.models.client import CACHE_SALT, deployment_name
from runtime.models.router import WarmFirstRequestRouter
from runtime.models.routes import ModelAt, resolve_model
from runtime.observability.telemetry import Telemetry, genai_attributes, genai_span_name
from runtime.serve.autoscaling import LOAD
from runtime.serve.options import (
    GATEWAY,
    actor_options,
    engine_host_runtime_env,
    engine_host_setup_at,
    pin_engine_loops,
    scaling_options,
    serve_at_node_priority,
    yield_cpu,
)

if TYPE_CHECKING:
    from runtime.models.engine import ModelEngine

__all__ = [
    "ModelHost",
    "ModelServer",
    "Tally",
    "health_options",
    "model_deployment",
    "model_deployments",
    "warm_first_router",
]

log = logging.getLogger(__name__)

State = Literal["unloaded", "loading", "warming", "ready", "sleeping", "failed"]
_EVENTS_KEPT = 200
# Serve's health-check RPC timeout is ours plus this margin, so our message (which names the
# setting) is what Serve logs, while a wedged replica loop still fails Serve's own timeout.
_HEALTH_RPC_MARGIN_S = 5.0
TALLY_FLUSH_S = 1.0
"""At most this long between a refusal and its count reaching Ray's metric while refusals
keep coming (:class:`Tally`); the health check hands over whatever is left."""


class Tally:
    """Increments of a Ray metrics ``Counter``, handed to Ray in sums.

    One ``Counter.inc`` costs about 0.2 ms of the caller's CPU (tags merged and validated, then
    a call into Ray's C++ metrics), and a refusal is otherwise nearly free: at three times a
    model's capacity, counting each of ~115 refusals a second took 2.7 % of the gateway's CPU
    (py-spy), on the loop every other request waits for. Serve counts its own per-request
    metrics the same way (``ReplicaMetricsManager``).

    Args:
        counter: the Ray ``Counter`` the sums go to.
        tag: the one tag key whose value each increment names.
        clock: monotonic seconds (tests inject one).
    """

    def __init__(self, counter: Any, tag: str, clock: Callable[[], float] = time.monotonic):
        self._counter = counter
        self._tag = tag
        self._clock = clock
        self._pending = collections.Counter[str]()
        self._flushed_at = clock()

    def inc(self, value: str) -> None:
        """Count one for tag ``value``; hand the sums over when :data:`TALLY_FLUSH_S` passed."""
        self._pending[value] += 1
        if self._clock() - self._flushed_at >= TALLY_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Hand every pending sum to the counter now."""
        self._flushed_at = self._clock()
        pending, self._pending = self._pending, collections.Counter[str]()
        for value, n in pending.items():
            self._counter.inc(n, tags={self._tag: value})


class ModelHost:
    """One model's engine and everything around it, inside whichever process holds it: a
    :class:`ModelServer` replica, or a gateway replica that serves the model's routes itself
    (``placement: gateway``). Construct it on a running event loop, then ``await start()``.

    Args:
        name: the model's configured name (``models.<name>``); replies carry it.
        config: the model's settings (a ``ModelConfig`` or its dict form).
        limits: request limits (``max_tokens``, ``max_n``, ``max_prompt_tokens``), likewise.
        fallback: what answers when this model fails: a handle to the fallback's deployment, a
            :class:`~runtime.models.routes.ModelAt` naming where it is hosted, a
            :class:`~runtime.models.routes.LocalModel` in this process, or None.
    """

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        limits: LimitsConfig,
        fallback: Any = None,
    ) -> None:
        # A Serve config file (``serve deploy``) passes plain dicts; validate them the same way.
        config = ModelConfig.model_validate(config)
        limits = LimitsConfig.model_validate(limits)
        fallback = resolve_model(fallback)
        self._closed = True  # until built: shutdown() after a failed constructor is a no-op
        self._idle_task: asyncio.Task[None] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._engine: ModelEngine | None = None
        self._name = name
        self._cfg = config
        self._limits = limits
        self._fallback = fallback
        self._fallback_stream = fallback.options(stream=True) if fallback is not None else None
        self._state: State = "unloaded"
        self._changed = asyncio.Condition()
        self._unload_task: asyncio.Task[None] | None = None
        self._load_error: BaseException | None = None
        self._inflight = 0
        self._probing = 0
        self._last_request_at = time.monotonic()
        self._events: collections.deque[tuple[float, str]] = collections.deque(maxlen=_EVENTS_KEPT)
        self._counts = collections.Counter[str]()
        self._last_load_s: float | None = None
        self._last_warmup_s: float | None = None
        self._admitted = 0
        tags = {"model": name}
        self._m_load = Histogram(
            "raygent_model_load_seconds",
            description="Seconds to build a model's vLLM engine.",
            boundaries=[1, 2, 5, 10, 20, 30, 45, 60, 120, 300],
            tag_keys=("model",),
        )
        self._m_warm = Histogram(
            "raygent_model_warmup_seconds",
            description="Seconds a model replica spent warming up after a load.",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
            tag_keys=("model",),
        )
        self._m_ready = Gauge(
            "raygent_model_ready",
            description="1 when the replica's engine is loaded and warm.",
            tag_keys=("model",),
        )
        self._m_fallbacks = Counter(
            "raygent_model_fallbacks_total",
            description="Requests answered by the fallback model.",
            tag_keys=("model",),
        )
        self._m_unloads = Counter(
            "raygent_model_unloads_total",
            description="Engines freed after idle_unload_s.",
            tag_keys=("model",),
        )
        self._m_refused = Counter(
            "raygent_model_refused_total",
            description="Requests refused (429) because the engine was at capacity.",
            tag_keys=("model", "priority"),
        )
        metrics = (self._m_load, self._m_warm, self._m_ready, self._m_fallbacks, self._m_unloads)
        for m in (*metrics, self._m_refused):
            m.set_default_tags(dict(tags))  # Serve adds its tags to the dict it is given
        admission = config.admission
        self._refusals = Tally(self._m_refused, "priority")
        self._gate = AdmissionGate(  # its limit is the engine's once one is built
            name,
            admission.max_inflight or default_max_inflight(1 << 16, _cpu_cores()),
            admission.max_queue_wait_s,
            admission.batch_queue_share,
            admission.interactive_share,
            on_refuse=self._refusals.inc,  # the tally's method: no cycle through self
        )
        self._m_ready.set(0)
        self._idle_task = (
            asyncio.create_task(_idle_watch(weakref.ref(self), config.idle_unload_s))
            if config.idle_unload_s is not None
            else None
        )
        self._telemetry = Telemetry.from_env(TelemetryConfig(), component="model")
        self._closed = False
        self._event("replica_started")

    async def start(self) -> None:
        """Begin as ``load`` says: ``background`` starts the load as a task, ``eager`` returns
        once the engine is loaded and warm, ``lazy`` waits for the first request."""
        if self._cfg.load == "background":
            self._start_load()
        elif self._cfg.load == "eager":
            await self._ensure_engine()

    # ---- public methods (called through the deployment handle) ----------------------------

    async def chat(
        self,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
        priority: Priority = "interactive",
        affinity: str | None = None,
    ):
        """Answer a chat; ``params`` are SamplingParams fields. Returns a ModelReply.
        ``traceparent`` places the call's span in the caller's trace; ``priority`` orders it
        against other requests when the engine is at capacity (``admission``); ``affinity``
        names the conversation for Serve's router (:data:`~runtime.models.client.AFFINITY`),
        which has used it by the time the call arrives here."""
        with self._span("chat", traceparent, params) as span:
            reply = await self._answer("chat", list(messages), dict(params or {}), priority)
            self._record(span, "chat", reply.usage, [reply.finish_reason], reply.model)
            return reply

    async def complete(
        self,
        prompt: str,
        params: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
        priority: Priority = "interactive",
        affinity: str | None = None,
    ):
        """Continue a raw prompt. Returns a ModelReply."""
        if not isinstance(prompt, str):
            raise InvalidParameter("prompt", prompt, "a string (use chat for turns)")
        with self._span("text_completion", traceparent, params) as span:
            reply = await self._answer("complete", prompt, dict(params or {}), priority)
            self._record(span, "text_completion", reply.usage, [reply.finish_reason], reply.model)
            return reply

    async def stream(
        self,
        prompt: Prompt,
        params: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
        batch: bool = True,
        priority: Priority = "interactive",
        affinity: str | None = None,
    ) -> AsyncIterator[ModelDelta]:
        """Yield ModelDelta items; call through ``handle.options(stream=True)``.

        A list of turns is a chat, a string a completion. Cancelling the call aborts the
        generation in the engine. ``batch`` merges deltas that pile up while the consumer is
        busy (:func:`~runtime.models._wire.coalesce`): worth it when each item crosses Ray; for
        a caller in this process it would only add a task per stream.
        """
        operation = "text_completion" if isinstance(prompt, str) else "chat"
        deltas = self._stream(prompt, dict(params or {}), priority)
        with self._span(operation, traceparent, params) as span:
            reasons: list[str] = []
            async for delta in coalesce(deltas) if batch else deltas:
                if delta.finish_reason is not None:
                    reasons.append(delta.finish_reason)
                if delta.usage is not None:
                    self._record(span, operation, delta.usage, reasons, delta.model)
                yield delta

    def _span(self, operation: str, traceparent: str | None, params: Mapping[str, Any] | None):
        parent = None
        if traceparent:
            with contextlib.suppress(ValueError):
                parent = TraceContext.parse(traceparent)
        p = dict(params or {})
        attributes = genai_attributes(
            self._name,
            operation,  # type: ignore[arg-type]
            max_tokens=p.get("max_tokens"),
            temperature=p.get("temperature"),
            top_p=p.get("top_p"),
        )
        name = genai_span_name(operation, self._name)  # type: ignore[arg-type]
        return self._telemetry.span(name, parent, attributes, kind="client")

    def _record(
        self, span: Any, operation: str, usage: Any, reasons: list[str], model: str
    ) -> None:
        span.attributes.update(
            genai_attributes(
                self._name,
                operation,  # type: ignore[arg-type]
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                finish_reasons=reasons,
                response_model=model,
            )
        )

    async def check_health(self) -> None:
        """Serve's health check: raises when the engine is dead or hung, or a required load
        failed, so Serve replaces the replica."""
        if self._closed:
            return
        self._refusals.flush()
        engine = self._engine
        if engine is None:
            if self._state == "failed" and self._cfg.load != "lazy":
                raise ModelError(
                    f"model {self._name!r} failed to load: {self._load_error}"
                ) from self._load_error
            return  # unloaded or loading: nothing to probe yet
        if engine.dead:  # a probe or a request found it so: say what they found
            raise ModelError(f"model {self._name!r}: {engine.death or 'the engine is dead'}")
        if self._state != "ready":
            return
        timeout = self._cfg.health_check_timeout_s
        if engine.inflight and time.monotonic() - engine.last_output_at < timeout:
            return  # requests are producing tokens: that is progress
        self._probing += 1
        try:
            await engine.probe(timeout)
        except AgentError:
            self._event("health_check_failed")
            self._set_ready_gauge()
            raise
        finally:
            self._probing -= 1

    @property
    def state(self) -> State:
        """Where the engine is in its lifecycle (the table above)."""
        return self._state

    def record_routing_stats(self) -> dict[str, Any]:
        """Readiness for :class:`~runtime.models.router.WarmFirstRequestRouter`."""
        on_demand = self._state in ("unloaded", "failed", "sleeping")  # waits for a request
        return {"ready": self._is_ready(), "on_demand": on_demand}

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom-metrics hook: the engine's demand, for the queue-depth policy
        (``runtime.serve.autoscaling``; refused requests count, as they would have run)."""
        return {LOAD: self._gate.demand()}

    def stats(self) -> dict[str, Any]:
        """State, durations, counters and engine numbers of this replica."""
        self._refusals.flush()
        ctx = None
        with contextlib.suppress(Exception):
            ctx = serve.get_replica_context()
        engine = self._engine
        out: dict[str, Any] = {
            "model": self._name,
            "replica": ctx.replica_id.unique_id if ctx is not None else None,
            "pid": os.getpid(),
            "state": self._state,
            "ready": self._is_ready(),
            "load_mode": self._cfg.load,
            "load_s": self._last_load_s,
            "engine_build_s": engine.load_s if engine is not None else None,
            "warmup_s": self._last_warmup_s,
            "inflight": self._inflight,
            "probing": self._probing,  # health probes running now (Serve's and explicit ones)
            "admission": self._gate.stats(),
            "load_error": str(self._load_error) if self._load_error else None,
            "counts": dict(self._counts),
            "events": list(self._events),
            # when this process began vLLM's import ahead of the replica (None: it did not)
            "engine_host_setup_at": engine_host_setup_at(),
        }
        if engine is not None:
            out.update(engine.stats())
        return out

    async def wait_for_state(self, state: State, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until the replica reaches ``state``, then return :meth:`stats`.

        Raises:
            ModelError: not reached within ``timeout_s``.
        """

        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self._state == state)

        try:
            await asyncio.wait_for(reached(), timeout_s)
        except asyncio.TimeoutError:
            raise ModelError(
                f"model {self._name!r} did not reach state {state!r} within {timeout_s:g}s "
                f"(it is {self._state!r})"
            ) from None
        return self.stats()

    async def unload(self) -> bool:
        """Free the engine now (as an idle timeout would). Returns whether it did."""
        return await self._unload("requested")

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown; Python may call it on a half-built object.
        self.shutdown()

    def shutdown(self) -> None:
        """Stop background tasks and the engine. Safe to call twice or after a failed
        constructor. A dead (possibly hung) engine is killed rather than asked to stop."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for task in (self._idle_task, self._load_task):
            if task is not None and not task.done():
                task.cancel()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown(kill=engine.dead)
        self._telemetry.shutdown()

    # ---- requests ---------------------------------------------------------------------------

    async def _answer(
        self, kind: str, prompt: Prompt, params: dict[str, Any], priority: Priority
    ) -> ModelReply:
        salt = _cache_salt(params)
        sp = check_params({k: v for k, v in params.items() if k != CACHE_SALT}, self._limits)
        self._begin()
        try:
            try:
                return await within(
                    self._generate(prompt, sp, priority, salt), self._cfg.request_timeout_s
                )
            except InvalidParameter:
                raise
            except asyncio.TimeoutError as exc:
                error: ModelError = self._timeout_error()
                error.__cause__ = exc
            except ModelError as exc:
                error = exc
            if self._fallback is None:
                raise error
            self._use_fallback(error)
            try:
                return await getattr(self._fallback, kind).remote(prompt, params)
            except Exception as exc:
                raise_sdk_error(exc, self._cfg.fallback or "fallback", "model")
        finally:
            self._end()

    async def _generate(
        self, prompt: Prompt, sp: SamplingParams, priority: Priority, cache_salt: str | None
    ) -> ModelReply:
        engine = await self._ensure_engine()
        async with self._gate.slot(priority):  # Overloaded: refused, no fallback (429)
            self._admit()
            return await engine.generate(prompt, sp, cache_salt=cache_salt)

    def _admit(self) -> None:
        self._admitted += 1
        if self._admitted <= 8:
            self._event("request_admitted")

    async def _stream(
        self, prompt: Prompt, params: dict[str, Any], priority: Priority
    ) -> AsyncIterator[ModelDelta]:
        salt = _cache_salt(params)
        sp = check_params({k: v for k, v in params.items() if k != CACHE_SALT}, self._limits)
        self._begin()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.request_timeout_s
        started = False
        try:
            try:
                engine = await within(self._ensure_engine(), deadline - loop.time())
                async with self._gate.slot(priority, deadline - loop.time()):  # no fallback
                    self._admit()
                    deltas = engine.stream(prompt, sp, cache_salt=salt)
                    try:
                        # Until the first delta, a slow engine may still hand over to the
                        # fallback, so the wait is bounded; after it, the deadline is checked
                        # per delta (a timer per token would cost more than the tokens) and a
                        # stall is the health check's business.
                        first = await within(deltas.__anext__(), deadline - loop.time())
                        started = True
                        yield first
                        async for delta in deltas:
                            yield delta
                            if loop.time() > deadline:
                                raise self._timeout_error()
                    finally:
                        await deltas.aclose()
                return
            except StopAsyncIteration:
                return
            except InvalidParameter:
                raise
            except asyncio.TimeoutError as exc:
                error: ModelError = self._timeout_error()
                error.__cause__ = exc
            except ModelError as exc:
                error = exc
            if started or self._fallback_stream is None:
                raise error
            self._use_fallback(error)
            try:
                async for delta in self._fallback_stream.stream.remote(prompt, params):
                    yield delta
            except Exception as exc:
                raise_sdk_error(exc, self._cfg.fallback or "fallback", "model")
        finally:
            self._end()

    def _timeout_error(self) -> ModelError:
        return ModelError(
            f"model {self._name!r} did not answer within {self._cfg.request_timeout_s:g}s "
            f"(models.{self._name}.request_timeout_s)"
        )

    def _use_fallback(self, error: BaseException) -> None:
        log.warning(
            "model %r failed (%s); answering with fallback %r",
            self._name,
            error,
            self._cfg.fallback,
        )
        self._counts["fallbacks"] += 1
        self._event("fallback")
        self._m_fallbacks.inc()

    def _begin(self) -> None:
        self._inflight += 1
        self._counts["requests"] += 1
        self._last_request_at = time.monotonic()
        if self._counts["requests"] <= 8:
            self._event(f"request_arrived:{self._state}")

    def _end(self) -> None:
        self._inflight -= 1
        self._last_request_at = time.monotonic()

    # ---- loading ------------------------------------------------------------------------------

    async def _ensure_engine(self) -> ModelEngine:
        """The warm engine, loading (or waking) it first if needed; concurrent callers share
        one load."""
        while True:
            engine = self._engine
            if engine is not None and self._state == "ready":
                if engine.dead:
                    raise ModelError(
                        f"model {self._name!r}: the engine died; the replica will be replaced"
                    )
                return engine
            task = self._start_load()
            # shield: a waiter that times out or is cancelled must not cancel the shared load
            await asyncio.shield(task)

    def _start_load(self) -> asyncio.Task[None]:
        if self._closed:
            raise ModelError(f"model {self._name!r}: the replica is shutting down")
        task = self._load_task
        if task is None or task.done():
            task = self._load_task = asyncio.create_task(self._load())
            task.add_done_callback(_retrieve_exception)
        return task

    async def _load(self) -> None:
        if self._unload_task is not None:
            await self._unload_task  # never hold two engines at once
        try:
            if self._engine is not None and self._state == "sleeping":
                await self._wake()
                return
            self._event("load_started")
            await self._set_state("loading")
            log.info("model %r: loading from %r", self._name, self._cfg.source)
            t0 = time.perf_counter()
            # vLLM is imported here, in the replica, on a thread: the import takes seconds and
            # the event loop must keep answering health checks and routing-stats calls.
            module = await asyncio.to_thread(importlib.import_module, "runtime.models.engine")
            engine = await module.ModelEngine.start(self._name, self._cfg, self._limits)
            if self._cfg.engine_niceness is not None:  # before its warm-up's threads start
                await asyncio.to_thread(yield_cpu, engine.pids, self._cfg.engine_niceness)
            self._last_load_s = time.perf_counter() - t0
            self._m_load.observe(self._last_load_s)
            self._counts["loads"] += 1
            self._event("load_done")
            await self._set_state("warming")
            try:
                warm_s = await self._warm_up(engine)
            except BaseException:
                await asyncio.to_thread(engine.shutdown)
                raise
            self._last_warmup_s = warm_s
            self._m_warm.observe(warm_s)
            await asyncio.to_thread(pin_engine_loops, engine.pids)
            self._engine = engine
            self._gate.max_inflight = self._cfg.admission.max_inflight or default_max_inflight(
                engine.max_num_seqs, _cpu_cores() if engine.on_cpu else None
            )
            self._load_error = None
            _freeze_startup_heap()
            self._last_request_at = time.monotonic()  # the idle clock starts when ready
            self._event("ready")
            log.info(
                "model %r: ready; load %.2fs (engine build %.2fs), warm-up %.2fs (%d requests)",
                self._name,
                self._last_load_s,
                engine.load_s,
                warm_s,
                self._cfg.warmup.requests,
            )
            await self._set_state("ready")
        except asyncio.CancelledError:
            await self._set_state("unloaded")
            raise
        except BaseException as exc:
            self._load_error = exc
            self._counts["load_failures"] += 1
            self._event("load_failed")
            log.error("model %r: load failed: %s", self._name, exc)
            await self._set_state("failed")
            if isinstance(exc, AgentError):
                raise
            raise ModelError(f"model {self._name!r} failed to load: {exc}") from exc

    async def _warm_up(self, engine: ModelEngine) -> float:
        """Serve ``warmup.requests`` sample chats to ``engine``; returns the seconds it took."""
        warm = self._cfg.warmup
        t0 = time.perf_counter()
        if warm.requests == 0 or not warm.prompts:
            return 0.0
        limit = asyncio.Semaphore(warm.concurrency)
        max_tokens = min(warm.max_tokens, self._limits.max_tokens)

        async def one(i: int) -> None:
            prompt = [{"role": "user", "content": warm.prompts[i % len(warm.prompts)]}]
            async with limit:
                await engine.generate(prompt, SamplingParams(max_tokens=max_tokens, seed=i))

        try:
            await asyncio.gather(*(one(i) for i in range(warm.requests)))
        except AgentError as exc:
            raise ModelError(f"model {self._name!r}: warm-up failed: {exc}") from exc
        self._event("warmup_done")
        return time.perf_counter() - t0

    async def _wake(self) -> None:
        assert self._engine is not None
        await self._set_state("loading")
        t0 = time.perf_counter()
        await self._engine.wake_up()
        self._event("woken")
        log.info("model %r: woken from sleep in %.2fs", self._name, time.perf_counter() - t0)
        await self._set_state("ready")

    async def _unload(self, reason: str) -> bool:
        if self._state != "ready" or self._inflight or self._probing or self._engine is None:
            return False
        engine = self._engine
        self._counts["unloads"] += 1
        self._m_unloads.inc()
        if engine.can_sleep:
            self._event(f"sleep:{reason}")
            await self._set_state("sleeping")
            await engine.sleep()
            log.info("model %r: engine put to sleep (%s)", self._name, reason)
            return True
        self._engine = None
        self._event(f"unload:{reason}")
        await self._set_state("unloaded")
        self._unload_task = asyncio.create_task(asyncio.to_thread(engine.shutdown))
        try:
            await self._unload_task
        finally:
            self._unload_task = None
        log.info("model %r: engine unloaded (%s)", self._name, reason)
        return True

    # ---- state --------------------------------------------------------------------------------

    def _is_ready(self) -> bool:
        engine = self._engine
        return self._state == "ready" and engine is not None and not engine.dead

    async def _set_state(self, state: State) -> None:
        async with self._changed:
            self._state = state
            self._changed.notify_all()
        self._set_ready_gauge()

    def _set_ready_gauge(self) -> None:
        self._m_ready.set(1 if self._is_ready() else 0)

    def _event(self, what: str) -> None:
        self._events.append((time.monotonic(), what))


class ModelServer(ModelHost):
    """One replica of a model's own deployment (``placement: deployment``). Built by
    :func:`model_deployment`, not directly; arguments as :class:`ModelHost`. Serve awaits the
    constructor, so an ``eager`` replica counts as started only once it is warm."""

    async def __init__(
        self,
        name: str,
        config: ModelConfig,
        limits: LimitsConfig,
        fallback: Any = None,
    ) -> None:
        # The engine core and its workers are spawned from this process and inherit its CPU
        # priority: in a Ray worker, Ray's worker niceness unless raised (the setup hook did
        # it for the threads that existed then; Ray's own threads came before it).
        serve_at_node_priority()
        super().__init__(name, config, limits, fallback)
        await self.start()


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process, when its first engine is warm: collect, then ``gc.freeze()`` what
    remains -- the imported modules of vLLM, torch, transformers, Ray and Serve -- so that the
    collector stops walking it, as vLLM's own API server does after start-up
    (``vllm.utils.gc_utils.freeze_gc_heap``). Without it every oldest-generation collection
    walks that whole heap while holding the GIL: under a 3x overload the gateway stalled
    ~0.5 s at a time, which was the p99 of its 429s (522 ms against a p50 of 5 ms). Objects
    allocated later (requests, later engines) are collected as usual."""
    global _heap_frozen
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect()
    gc.freeze()


def _cpu_cores() -> int:
    """Cores this process may run on (its affinity; the machine's count where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


async def _idle_watch(ref: weakref.ref[ModelHost], idle_s: float) -> None:
    """Unload the engine of ``ref()`` after ``idle_s`` without requests. Holds the server only
    while checking, so a dropped server is collected and the loop ends."""
    period = max(0.05, min(idle_s / 4, 5.0))
    while True:
        await asyncio.sleep(period)
        server = ref()
        if server is None or server._closed:
            return
        idle = time.monotonic() - server._last_request_at
        if idle >= idle_s and server._inflight == 0:
            try:
                await server._unload("idle")
            except Exception:
                log.exception("model %r: idle unload failed", server._name)
        del server


def _cache_salt(params: Mapping[str, Any]) -> str | None:
    """The request's prefix-cache scope (:data:`~runtime.models.client.CACHE_SALT`), if any."""
    salt = params.get(CACHE_SALT)
    if salt is not None and (not isinstance(salt, str) or not salt):
        raise InvalidParameter(CACHE_SALT, salt, "a non-empty string")
    return salt


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    """Mark a load task's failure as seen (waiters get it; with none, it is logged in _load)."""
    if not task.cancelled():
        task.exception()


def model_deployment(
    name: str,
    config: ModelConfig,
    limits: LimitsConfig,
    *,
    fallback: Application | DeploymentHandle | ModelAt | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> Application:
    """The bound ModelServer deployment of model ``name`` (whatever its ``placement``: asking
    for the deployment is asking for it to run on its own).

    Args:
        name: the model's configured name.
        config: its settings; Serve options come from ``replicas``/``autoscaling``,
            ``resources``, ``max_ongoing_requests`` and the health and routing settings.
        limits: request limits.
        fallback: the fallback model's bound deployment (same application), a handle to a
            deployed one, or where it is hosted (:class:`~runtime.models.routes.ModelAt`).
        runtime_env: Ray runtime environment of the replicas (e.g. ``env_vars`` for
            ``VLLM_CACHE_ROOT`` or ``HF_HOME``).
    """
    ray_options = actor_options(config.resources)
    # Priority and vLLM's import from the moment the replica's process starts.
    ray_options["runtime_env"] = engine_host_runtime_env(runtime_env)
    options: dict[str, Any] = {
        "name": deployment_name(name),
        "ray_actor_options": ray_options,
        "max_ongoing_requests": config.max_ongoing_requests,
        **health_options([config]),
        "request_router_config": warm_first_router(
            [config], affinity=config.affinity, max_imbalance=config.affinity_max_imbalance
        ),
    }
    options.update(scaling_options(config.replicas, config.autoscaling))
    return serve.deployment(ModelServer).options(**options).bind(name, config, limits, fallback)


def health_options(models: list[ModelConfig]) -> dict[str, float]:
    """Serve's health-check options for a replica holding ``models``: checked as often as the
    most demanding asks, each check given the longest timeout any of them needs."""
    return {
        "health_check_period_s": min(m.health_check_period_s for m in models),
        "health_check_timeout_s": max(m.health_check_timeout_s for m in models)
        + _HEALTH_RPC_MARGIN_S,
    }


def warm_first_router(
    models: list[ModelConfig], *, affinity: bool = False, max_imbalance: int = 8
) -> RequestRouterConfig:
    """Serve's router config for replicas holding ``models``: warm replicas first, and with
    ``affinity`` each conversation to its own replica (only for a deployment of one model: the
    calls to a deployment hosting several start with the model's name, not the prompt)."""
    period = min(m.routing_stats_period_s for m in models)
    kwargs: dict[str, Any] = {}
    if affinity:
        kwargs = {"affinity": True, "affinity_max_imbalance": max_imbalance}
    return RequestRouterConfig(
        request_router_class=WarmFirstRequestRouter,
        request_router_kwargs=kwargs,
        request_routing_stats_period_s=period,
        request_routing_stats_timeout_s=max(5.0, 3 * period),
    )


def model_deployments(
    config: RaygentConfig, host: str = GATEWAY
) -> dict[str, Application | ModelAt]:
    """Where each configured model is served: a bound ModelServer deployment for
    ``placement: deployment`` (fallbacks wired to the fallback's deployment, or to where it is
    hosted), :class:`~runtime.models.routes.ModelAt` ``host`` for ``placement: gateway``.

    Bind them in one Serve application (e.g. as arguments of the gateway); a model that is
    another's fallback is bound once and shared.

    Raises:
        ConfigError: fallbacks form a cycle.
    """
    built: dict[str, Application | ModelAt] = {}

    def build(name: str, chain: tuple[str, ...]) -> Application | ModelAt:
        if name in built:
            return built[name]
        if name in chain:
            cycle = " -> ".join((*chain, name))
            raise ConfigError(f"models.*.fallback forms a cycle: {cycle}")
        model = config.models[name]
        fallback = build(model.fallback, (*chain, name)) if model.fallback else None
        if model.placement == "gateway":
            built[name] = ModelAt(host, name)
        else:
            built[name] = model_deployment(name, model, config.limits, fallback=fallback)
        return built[name]

    for name in config.models:
        build(name, ())
    return built
