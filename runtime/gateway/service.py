"""The ``Gateway`` deployment: the HTTP ingress of ``serve run serve_app:app``.

Routes (OpenAI-compatible where OpenAI has an equivalent):

==========================================  ===================================================
``POST /v1/chat/completions``               chat with a model or ``agent:<name>``; SSE streams
``POST /v1/completions``                    text completion; SSE streams
``GET  /v1/models``                         models and agents, OpenAI's list schema
``GET  /v1/agents``                         agents: message types, topics, queues
``POST /v1/agents/{name}/invoke``           JSON message in, JSON reply out (SSE if it streams)
``POST /v1/tasks/{queue}``                  submit a durable task (202 + id)
``GET  /v1/tasks/{id}``                     a task's state and result
``GET  /healthz`` / ``GET /readyz``         alive / warm models and agents registered
``GET  /metrics``                           Prometheus text
``GET  /openapi.json``, ``/docs``           the OpenAPI document
==========================================  ===================================================

Each replica holds a :class:`~runtime.cluster.client.ClusterClient` (what agents' ``ctx`` is), so
the gateway reaches agents exactly as agents reach each other: a send through the agent
deployment's Serve handle, tasks on the shared queue, the shared state's feed. Replicas are
stateless apart from their in-process cache; Serve's proxy spreads requests over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from agents import codec
from agents.errors import AgentError, UnknownModel
from agents.tracing import TraceContext
from runtime.cache import ResponseCache
from runtime.cluster.client import AppSpec, ClusterClient
from runtime.cluster.registry import ActorTaskQueue
from runtime.config import RaygentConfig
from runtime.core.local import encode_checked
from runtime.core.streaming import decoded
from runtime.errors import ConfigError
from runtime.gateway.agent_streams import invoke_events
from runtime.gateway.calls import agent_priority
from runtime.gateway.completions import Completions
from runtime.gateway.edge import Edge
from runtime.gateway.errors import (
    ApiError,
    from_agent_error,
    from_http_exception,
    from_validation_error,
    internal_error,
)
from runtime.gateway.json_body import StrictJsonRoute
from runtime.gateway.messages import from_json, to_json
from runtime.gateway.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    InvokeRequest,
    TaskRequest,
    VariantWeightsRequest,
)
from runtime.gateway.variants import SESSION_HEADER, VARIANT_HEADER, VariantRouter
from runtime.models import (
    LocalModel,
    ModelAt,
    ModelDelta,
    ModelHost,
    ModelServerClient,
    Priority,
    health_options,
    warm_first_router,
)
from runtime.observability.metrics import Metrics
from runtime.observability.telemetry import Telemetry
from runtime.queues import make_task_queue
from runtime.serve.engine_procs import ENABLE_ENV
from runtime.serve.options import (
    GATEWAY,
    HA_PROXY_ENV,
    actor_options,
    engine_host_runtime_env,
    gateway_replicas,
    keep_cluster_off_engine_cores,
    scaling_options,
    serve_at_node_priority,
)

__all__ = ["gateway_deployment", "hosted_models"]

log = logging.getLogger(__name__)

_READY_TTL_S = 1.0  # /readyz answers from a result at most this old (probes come often)


def describe_agents(spec: AppSpec) -> list[dict[str, Any]]:
    """What ``GET /v1/agents`` lists."""
    out = []
    for name, cls in spec.classes.items():
        routes = cls.routes()
        settings = spec.settings[name]
        out.append(
            {
                "name": name,
                "import_path": settings.import_path,
                "model": settings.model or cls.model,
                "accepts": routes.direct_types(),
                "streams": [t.__name__ for t in routes.types("direct") if routes.streams(t)],
                "topics": routes.keys("topic"),
                "queues": routes.keys("queue"),
                "replicas": settings.replicas,
            }
        )
    return out


def _trace(request: Request) -> TraceContext | None:
    """The caller's position in a trace (its ``traceparent``), or None: a new trace starts."""
    header = request.headers.get("traceparent")
    if header:
        with contextlib.suppress(ValueError):
            return TraceContext.parse(header)
    return None


def _child(request: Request) -> TraceContext:
    """The next hop's position: a child of the caller's, or the root of a new trace."""
    parent = _trace(request)
    return parent.child() if parent is not None else TraceContext.new_root()


PRIORITY_HEADER = "x-raygent-priority"
"""``interactive`` (the default) or ``batch``: which requests wait and which are refused first
when a model or an agent is at capacity."""


def _priority(request: Request) -> Priority:
    value = request.headers.get(PRIORITY_HEADER, "interactive").strip().lower()
    if value not in ("interactive", "batch"):
        raise ApiError(
            400,
            f"header {PRIORITY_HEADER}: {value!r} is not 'interactive' or 'batch'",
            param=PRIORITY_HEADER,
            code="invalid_header",
        )
    return value  # type: ignore[return-value]


def build_http(config: RaygentConfig) -> FastAPI:
    """The FastAPI app with the edge middleware and the error handlers (routes are added by
    the deployment class, which Serve needs to own them).

    Every answer that is not a success has OpenAI's error body, whoever produced it: the edge
    (401, 413), the body's parser (400: not UTF-8, not JSON, a non-finite number, a repeated
    key), FastAPI's validation (400 naming the field), Starlette's routing (404, 405), a route
    (:class:`ApiError`, SDK errors), or a bug (500, logged). JSON bodies are parsed strictly
    (:class:`~runtime.gateway.json_body.StrictJsonRoute`, set before any route is added).
    """
    http = FastAPI(title="raygent", version="0.1.0")
    http.router.route_class = StrictJsonRoute
    http.add_middleware(
        Edge,
        keys=config.auth.api_keys,
        max_body_bytes=config.limits.max_body_bytes,
        admin_keys=config.auth.admin_keys,
    )

    @http.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return exc.response()

    @http.exception_handler(AgentError)
    async def _agent_error(_: Request, exc: AgentError) -> Response:
        return from_agent_error(exc).response()

    @http.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return from_validation_error(exc).response()

    @http.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return from_http_exception(request, exc).response()

    @http.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        return internal_error(request, exc).response()

    return http


def hosted_models(config: RaygentConfig) -> list[str]:
    """The models each gateway replica holds (``placement: gateway``), fallbacks first (so a
    host's fallback exists when the host is built)."""
    order: list[str] = []

    def visit(name: str) -> None:
        model = config.models[name]
        if model.fallback and model.fallback not in order:
            visit(model.fallback)
        if name not in order:
            order.append(name)

    for name in config.models:
        visit(name)
    return [n for n in order if config.models[n].placement == "gateway"]


def gateway_deployment(config: RaygentConfig) -> Any:
    """The Gateway deployment class for ``config`` (bind it with the application's parts).

    A replica reserves its own resources plus those of the models it hosts; with hosted
    models, Serve's health checks run their engines' checks, and behind Serve's Python proxy
    agents' calls to those models go to warm replicas first
    (:class:`~runtime.models.router.WarmFirstRequestRouter`). Behind HAProxy, HAProxy picks
    the replica (after Serve's health checks) and Serve refuses a custom router on the ingress
    deployment, so none is set there.
    """
    http = build_http(config)
    gw = config.gateway
    hosted = [config.models[n] for n in hosted_models(config)]
    ray_options = actor_options(gw.resources, *(m.resources for m in hosted))
    # Serve runs user code on a second event loop by default; then every ASGI message of a
    # streamed answer crosses threads (call_soon_threadsafe + a GIL handoff per chunk). The
    # gateway never blocks its loop (engine builds, imports and Redis go through awaits or
    # threads), so it runs on Serve's own loop, as Serve's throughput-optimized mode does.
    runtime_env: dict[str, Any] = {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}
    if hosted:  # start the engine's chain (priority, vLLM's import) as the process starts
        runtime_env = engine_host_runtime_env(runtime_env)
        # ... with its processes forked from a fork server (runtime.serve.engine_procs)
        runtime_env["env_vars"].setdefault(ENABLE_ENV, os.environ.get(ENABLE_ENV, "1"))
    ray_options["runtime_env"] = runtime_env
    options = {
        "name": GATEWAY,
        "ray_actor_options": ray_options,
        "max_ongoing_requests": gw.max_ongoing_requests,
        **scaling_options(gateway_replicas(gw, hosted), gw.autoscaling, queue_depth=False),
    }
    if hosted:
        options.update(health_options(hosted))
        if os.environ.get(HA_PROXY_ENV) != "1":  # set by prepare_ray_env, or by the user
            options["request_router_config"] = warm_first_router(hosted)

    @serve.deployment(**options)
    @serve.ingress(http)
    class Gateway:
        """One gateway replica.

        Args:
            spec: the application's shape.
            registry: the registry deployment's handle.
            queue: the task queue deployment's handle, or None (Redis holds the queues).
            models: by model name, the handle of the model's deployment, or a ``ModelAt``
                this deployment (the model is hosted here).
            agents: agent deployment handles by name.
        """

        async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
            self,
            spec: AppSpec,
            registry: DeploymentHandle,
            queue: DeploymentHandle | None,
            models: dict[str, DeploymentHandle | ModelAt],
            agents: dict[str, DeploymentHandle],
        ) -> None:
            ctx = serve.get_replica_context()
            cfg = spec.config
            # This process and the ingress are the request path: not at Ray's worker niceness.
            serve_at_node_priority(ingress=True)
            self._spec = spec
            self._cfg = cfg
            self._hosts: dict[str, ModelHost] = {}
            self._placing: asyncio.Task[None] | None = None
            routes: dict[str, Any] = {n: h for n, h in models.items() if not isinstance(h, ModelAt)}
            for name in hosted_models(cfg):  # fallbacks first
                mc = cfg.models[name]
                fallback = routes.get(mc.fallback) if mc.fallback else None
                self._hosts[name] = ModelHost(name, mc, cfg.limits, fallback)
                routes[name] = LocalModel(self._hosts[name])
            self._model_handles = {
                n: h
                for n, h in models.items()
                if n not in self._hosts and not isinstance(h, ModelAt)
            }
            self._agent_handles = agents
            self._tasks = (
                ActorTaskQueue(queue, cfg.queues.max_pending)
                if queue is not None
                else make_task_queue(cfg)
            )
            self._client = ClusterClient(
                spec,
                registry,
                self._tasks,
                writer_id=f"gateway/{ctx.replica_id.unique_id}",
                node_id=ray.get_runtime_context().get_node_id(),
                serve_handle=agents.__getitem__,
            )
            self._client.start()
            self._metrics = Metrics(enabled=cfg.telemetry.metrics)
            self._telemetry = Telemetry.from_env(cfg.telemetry, component="gateway")
            self._cache = ResponseCache.from_config(cfg.cache, redis_url=cfg.redis_url)
            await self._cache.start()
            self._metrics.watch_cache(self._cache.stats)
            clients = {n: ModelServerClient(routes[n], n) for n in models}
            await asyncio.gather(*(h.start() for h in self._hosts.values()))
            if self._hosts:
                self._placing = asyncio.create_task(self._place_when_warm())
            self._completions = Completions(
                cfg, clients, self._client, self._cache, self._metrics, self._telemetry
            )
            self._agents = describe_agents(spec)
            self._created = int(time.time())
            self._ready: tuple[float, int, dict[str, Any]] | None = None

        async def __del__(self) -> None:
            # Serve awaits this on graceful shutdown: release connections, feeds and engines.
            await self._cache.close()
            await self._client.close()
            await self._tasks.close()
            if self._placing is not None:
                self._placing.cancel()
            for host in self._hosts.values():
                await asyncio.to_thread(host.shutdown)
            await asyncio.to_thread(self._telemetry.shutdown)

        # -- the models hosted here, for Serve and for handle callers (agents, fallbacks) ---------

        async def check_health(self) -> None:
            """Serve's health check: every hosted engine's (a dead or hung one fails it, and
            Serve replaces the replica)."""
            await asyncio.gather(*(h.check_health() for h in self._hosts.values()))

        def record_routing_stats(self) -> dict[str, Any]:
            """Readiness for warm-first routing: ready when every hosted model is."""
            stats = [h.record_routing_stats() for h in self._hosts.values()]
            return {
                "ready": all(s["ready"] for s in stats),
                "on_demand": any(s["on_demand"] for s in stats),
            }

        async def _place_when_warm(self) -> None:
            """Once every hosted engine is warm, move the rest of this node's Ray processes off
            the engine's cores (``keep_cluster_off_engine_cores``). A lazy model that loads on
            its first request is not waited for while others load at start: its engine binds
            the same cores (``VLLM_CPU_OMP_THREADS_BIND``), so the move holds for it too."""
            eager = [h for n, h in self._hosts.items() if self._cfg.models[n].load != "lazy"]
            for host in eager or list(self._hosts.values()):
                while True:  # a lazy model is ready only after its first request
                    with contextlib.suppress(AgentError):
                        await host.wait_for_state("ready", 3600.0)
                        break
            moved = await asyncio.to_thread(keep_cluster_off_engine_cores)
            await asyncio.to_thread(serve_at_node_priority, ingress=True)  # HAProxy reloads
            log.info("gateway: %d threads of Ray's processes moved off the engine cores", moved)

        def _host(self, model: str) -> ModelHost:
            host = self._hosts.get(model)
            if host is None:
                raise UnknownModel(model, sorted(self._hosts))
            return host

        async def model_chat(self, model: str, *args: Any, **kwargs: Any) -> Any:
            """``ModelServer.chat`` of hosted ``model`` (``RoutedModel`` calls this)."""
            return await self._host(model).chat(*args, **kwargs)

        async def model_complete(self, model: str, *args: Any, **kwargs: Any) -> Any:
            """``ModelServer.complete`` of hosted ``model``."""
            return await self._host(model).complete(*args, **kwargs)

        async def model_stream(
            self, model: str, *args: Any, **kwargs: Any
        ) -> AsyncIterator[ModelDelta]:
            """``ModelServer.stream`` of hosted ``model``: batched deltas, for a caller
            across Ray (call through ``handle.options(stream=True)``)."""
            async for delta in self._host(model).stream(*args, **kwargs):
                yield delta

        def model_stats(self, model: str) -> dict[str, Any]:
            """``ModelServer.stats`` of hosted ``model`` in this replica."""
            return self._host(model).stats()

        async def model_wait_for_state(self, model: str, *args: Any) -> dict[str, Any]:
            """``ModelServer.wait_for_state`` of hosted ``model``."""
            return await self._host(model).wait_for_state(*args)

        async def model_unload(self, model: str) -> bool:
            """``ModelServer.unload`` of hosted ``model``."""
            return await self._host(model).unload()

        # -- probes and discovery --------------------------------------------------------------

        @http.get("/healthz")
        async def healthz(self) -> dict[str, str]:
            return {"status": "ok"}

        @http.get("/readyz")
        async def readyz(self) -> JSONResponse:
            now = time.monotonic()
            if self._ready is None or now - self._ready[0] > _READY_TTL_S:
                status, body = await self._readiness()
                self._ready = (now, status, body)
            _, status, body = self._ready
            return JSONResponse(body, status_code=status)

        async def _readiness(self) -> tuple[int, dict[str, Any]]:
            models: dict[str, Any] = {}
            for name in self._cfg.models:
                if self._cfg.models[name].load == "lazy":
                    models[name] = "lazy: loads on the first request"
                elif name in self._hosts:
                    models[name] = self._hosts[name].state  # no stats dict per probe
                else:
                    try:
                        handle = self._model_handles[name]
                        stats = await asyncio.wait_for(handle.stats.remote(), 2.0)
                        models[name] = stats["state"]
                    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                        models[name] = f"unreachable: {type(exc).__name__}"
            agents = {a: len(self._client.members(a)) for a in self._spec.classes}
            waiting = [n for n, s in models.items() if s != "ready" and not s.startswith("lazy")]
            missing = [a for a, n in agents.items() if n == 0]
            ready = not waiting and not missing
            body: dict[str, Any] = {"ready": ready, "models": models, "agents": agents}
            if not ready:
                body["reason"] = "; ".join(
                    [f"model {n!r} is {models[n]}" for n in waiting]
                    + [f"agent {a!r} has no registered replica" for a in missing]
                )
            return (200 if ready else 503), body

        @http.get("/metrics")
        async def metrics(self, request: Request) -> Response:
            await self._sample_queues()
            data, content_type = self._metrics.render(request.headers.get("accept"))
            return Response(data, media_type=content_type)

        async def _sample_queues(self) -> None:
            """Mailbox depth of one replica per agent (a cheap, approximate gauge)."""

            async def one(name: str, handle: DeploymentHandle) -> None:
                with contextlib.suppress(Exception):
                    load = await asyncio.wait_for(handle.load.remote(), 0.5)
                    self._metrics.set_queue_depth("mailbox", name, load["mailbox"])

            await asyncio.gather(*(one(n, h) for n, h in self._agent_handles.items()))

        @http.get("/v1/models")
        async def list_models(self) -> dict[str, Any]:
            data = [
                {"id": name, "object": "model", "created": self._created, "owned_by": "raygent"}
                for name in self._completions.targets.names
            ]
            return {"object": "list", "data": data}

        @http.get("/v1/agents")
        async def list_agents(self) -> dict[str, Any]:
            return {"object": "list", "data": self._agents}

        # -- completions -----------------------------------------------------------------------

        @http.post("/v1/chat/completions")
        async def chat(self, body: ChatCompletionRequest, request: Request) -> Any:
            return await self._answer(body, request, "/v1/chat/completions")

        @http.post("/v1/completions")
        async def completions(self, body: CompletionRequest, request: Request) -> Any:
            return await self._answer(body, request, "/v1/completions")

        async def _answer(self, body: Any, request: Request, route: str) -> Any:
            return await self._completions.answer(
                body,
                tenant=request.state.tenant,
                cache_control=request.headers.get("cache-control"),
                trace=_trace(request),
                route=route,
                priority=_priority(request),
                session=request.headers.get(SESSION_HEADER),
                variant=request.headers.get(VARIANT_HEADER),
            )

        # -- variant weights (admin key only: see Edge) -----------------------------------------

        def reconfigure(self, user_config: dict[str, Any]) -> None:
            """Serve's ``user_config`` of this deployment, set in the Serve config file
            (``serve deploy``): Serve calls this on every replica when it changes, and on each
            new replica, without a restart. ``variant_weights``: weights per name with
            variants (``Completions.set_serve_weights``)."""
            unknown = sorted(set(user_config) - {"variant_weights"})
            if unknown:
                raise ConfigError(f"user_config: unknown keys {unknown}; known: variant_weights")
            self._completions.targets.set_serve_weights(user_config.get("variant_weights") or {})

        @http.get("/admin/variants")
        async def list_variants(self) -> dict[str, Any]:
            """Every name with variants: its arms, their current and configured weights."""
            names = self._completions.targets.variants
            return {"object": "list", "data": [self._variant_entry(n) for n in names]}

        @http.put("/admin/variants/{name}")
        async def set_variant_weights(self, name: str, body: VariantWeightsRequest) -> Any:
            """New weights for ``name``'s arms (those left out keep theirs), on every gateway
            replica without a redeploy, until cleared or the application is redeployed."""
            router = self._variant_router(name)
            weights = router.weights(router.check_weights(body.weights))
            await self._completions.targets.set_weights(name, weights)
            return self._variant_entry(name)

        @http.delete("/admin/variants/{name}")
        async def clear_variant_weights(self, name: str) -> Any:
            """Back to the configured weights."""
            self._variant_router(name)
            await self._completions.targets.set_weights(name, None)
            return self._variant_entry(name)

        def _variant_router(self, name: str) -> VariantRouter:
            router = self._completions.targets.variants.get(name)
            if router is None:
                raise ApiError(
                    404,
                    f"{name!r} has no variants; names with variants: "
                    f"{sorted(self._completions.targets.variants)}",
                    param="name",
                    code="variants_not_found",
                )
            return router

        def _variant_entry(self, name: str) -> dict[str, Any]:
            router = self._completions.targets.variants[name]
            set_ = self._completions.targets.weights_set(name)
            current = router.weights(set_)
            arms = {
                n: {
                    "target": a.target,
                    "weight": current[n],
                    "configured_weight": a.weight,
                    "shadow": a.shadow,
                }
                for n, a in router.arms.items()
            }
            source = self._completions.targets.weights_source(name)
            return {"name": name, "sticky": router.sticky, "weights_from": source, "arms": arms}

        # -- agents and tasks ------------------------------------------------------------------

        @http.post("/v1/agents/{name}/invoke")
        async def invoke(self, name: str, body: InvokeRequest, request: Request) -> Any:
            cls = self._spec.classes.get(name)
            if cls is None:
                raise ApiError(
                    404,
                    f"unknown agent {name!r}; known: {sorted(self._spec.classes)}",
                    param="name",
                    code="agent_not_found",
                )
            msg = from_json(
                cls.routes().types("direct"), body.message, body.type, f"agent {name!r}"
            )
            what = f"message {type(msg).__name__} to {name!r}"
            payload = encode_checked(msg, what, self._cfg.limits.max_message_bytes)
            timeout = min(
                body.timeout_s or self._cfg.limits.request_timeout_s,
                self._cfg.limits.request_timeout_s,
            )
            streams = cls.routes().find("direct", None, msg).streams
            if body.stream if body.stream is not None else streams:
                return await self._invoke_stream(name, payload, request, timeout, msg)
            raw = await self._client.send_encoded(
                name,
                payload,
                _child(request).traceparent,
                agent_priority(_priority(request)),
                timeout,
                type(msg).__name__,
            )
            reply = codec.decode(raw)
            return {"agent": name, "type": type(reply).__name__, "reply": to_json(reply)}

        async def _invoke_stream(
            self, name: str, payload: bytes, request: Request, timeout: float, msg: Any
        ) -> StreamingResponse:
            """SSE: one event per item the handler yields. The first item is awaited here, so
            errors before it are still HTTP errors."""
            batches = self._client.stream_encoded(
                name,
                payload,
                _child(request).traceparent,
                agent_priority(_priority(request)),
                accepts_handoff=True,
            )
            items = self._completions.backends.run_handoffs(
                decoded(batches, name, type(msg).__name__, timeout)
            )
            try:
                head = [await anext(items)]
            except StopAsyncIteration:
                head = []
            except BaseException:
                await items.aclose()
                raise
            return StreamingResponse(
                invoke_events(head, items),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        @http.post("/v1/tasks/{queue}", status_code=202)
        async def submit(self, queue: str, body: TaskRequest, request: Request) -> Any:
            workers = self._spec.queues.get(queue)
            if not workers:
                raise ApiError(
                    404,
                    f"unknown queue {queue!r}; known: {sorted(self._spec.queues)}",
                    param="queue",
                    code="queue_not_found",
                )
            types = {
                t for w in workers for t in self._spec.classes[w].routes().types("queue", queue)
            }
            task = from_json(
                sorted(types, key=lambda t: t.__name__),
                body.task,
                body.type,
                f"queue {queue!r}",
                field="task",
            )
            task_id = await self._client.submit(queue, task, trace=_child(request))
            return {"id": task_id, "queue": queue, "state": "pending"}

        @http.get("/v1/tasks/{task_id}")
        async def task(self, task_id: str, wait_s: float = 0.0) -> Any:
            """A task's state; ``?wait_s=N`` waits up to N seconds for it to finish."""
            if not 0 <= wait_s <= self._cfg.limits.request_timeout_s:  # NaN fails it too
                raise ApiError(
                    400,
                    f"wait_s must be between 0 and {self._cfg.limits.request_timeout_s:g}",
                    param="wait_s",
                )
            if wait_s:
                try:
                    info = await self._client.wait_task(task_id, wait_s)
                except TimeoutError:
                    info = await self._client.task(task_id)
            else:
                info = await self._client.task(task_id)
            return {
                "id": info.id,
                "queue": info.queue,
                "state": str(getattr(info.state, "value", info.state)),
                "attempts": info.attempts,
                "result": to_json(info.result),
                "error": info.error,
            }

    return Gateway
