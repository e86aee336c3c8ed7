"""``RayRuntime``: the same agents, as Ray actors, on one machine or a cluster.

    async with RayRuntime(agents=[Researcher, Writer], config=cfg) as rt:   # starts or joins Ray
        reply = await rt.send("researcher", Question("..."))

What it starts, per application::

    Registry actor          membership + shared-state feeds (runtime/cluster/registry.py)
    TaskQueueActor          only without Redis: the shared in-process task queue
    AgentHost actors        replicas (runtime/cluster/host.py), placed by Ray with the agent's
                            resources; restarted by Ray up to agents[].max_restarts

The driver holds a :class:`~runtime.cluster.client.ClusterClient` like every replica, so
``rt.send/publish/submit/state`` behave as ``ctx.*`` do inside agents.

Under Ray Serve (``serve_app``), the same AgentHost logic runs as Serve deployments so Serve's
router, autoscaler and health checks do what this class does by hand for standalone use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import ray

from agents import Agent
from agents.errors import RuntimeClosed
from agents.model import ModelClient
from agents.runtime_api import Priority, TaskInfo
from agents.tracing import TraceContext
from runtime.cluster.client import AppSpec, ClusterClient, ClusterState
from runtime.cluster.host import AgentHost
from runtime.cluster.registry import ActorTaskQueue, Registry, TaskQueueActor
from runtime.cluster.shipping import ship_by_value
from runtime.config import RaygentConfig
from runtime.core.local import settings_for
from runtime.queues import make_task_queue

__all__ = ["RayRuntime"]

log = logging.getLogger(__name__)


class RayRuntime:
    """Run agents as Ray actors. Use as ``async with RayRuntime(...) as rt:``.

    Args:
        agents: agent classes; names must be unique. Classes and message types defined in
            ``__main__`` (a script, a notebook) work too: they are shipped to the replicas by
            value (``runtime.cluster.shipping``).
        config: replicas, resources, mailbox and queue settings; default: defaults.
        models: model clients by name, shipped to every replica (``ctx.llm``).
        address: Ray cluster to join (None: the current one, or a new local one).
        name: application name (namespaces the actors).
        start_timeout_s: how long to wait for every replica's ``on_start``.
        ray_init: extra ``ray.init`` arguments when this runtime starts Ray.
    """

    def __init__(
        self,
        agents: Sequence[type[Agent]],
        config: RaygentConfig | None = None,
        models: Mapping[str, ModelClient] | None = None,
        *,
        address: str | None = None,
        name: str | None = None,
        start_timeout_s: float = 60.0,
        ray_init: Mapping[str, Any] | None = None,
    ) -> None:
        self._config = config or RaygentConfig(agents=[])
        classes = {c.name: c for c in agents}
        if len(classes) != len(agents):
            raise ValueError("agent names must be unique")
        self._spec = AppSpec(
            name=name or f"raygent-{uuid.uuid4().hex[:6]}",
            config=self._config,
            classes=classes,
            settings={n: settings_for(self._config, c) for n, c in classes.items()},
        )
        self._models = dict(models or {})
        self._address = address
        self._start_timeout_s = start_timeout_s
        self._ray_init = dict(ray_init or {})
        self._owns_ray = False
        self._registry: Any = None
        self._queue_actor: Any = None
        self._hosts: list[Any] = []
        self._args: tuple[Any, ...] = ()
        self._client: ClusterClient | None = None
        self._closed = False

    async def __aenter__(self) -> RayRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Start (or join) Ray, create the registry and every replica, and wait until each has
        run ``on_start`` and registered. On failure, everything started is stopped."""
        if not ray.is_initialized():
            ray.init(address=self._address, **self._ray_init)
            self._owns_ray = True
        try:
            await self._start()
        except BaseException:
            await self.shutdown(timeout_s=0)
            raise

    async def _start(self) -> None:
        cfg = self._config
        # Restarted by Ray if it dies; its clients then hand it their copies of the state.
        self._registry = (
            ray.remote(Registry)
            .options(num_cpus=0, max_concurrency=10_000, max_restarts=-1)
            .remote()
        )
        if cfg.queues_url is None:
            self._queue_actor = (
                ray.remote(TaskQueueActor)
                .options(num_cpus=0, max_concurrency=10_000)
                .remote(
                    cfg.queues.max_pending,
                    cfg.queues.max_attempts,
                    cfg.queues.visibility_timeout_s,
                )
            )
        host_cls = ray.remote(AgentHost)
        # Collected now, not in __init__: a script may define message types after building
        # the runtime. They travel in the spec's pickle, beside the agent classes.
        self._spec = dataclasses.replace(
            self._spec, message_types=ship_by_value(self._spec.classes.values())
        )
        # Constructor arguments stay referenced by this runtime for its whole life: Ray needs
        # them again to restart a crashed replica (ray-project/ray#53727).
        self._args = (ray.put(self._spec), ray.put(self._models))
        spec_ref, models_ref = self._args
        for agent, settings in self._spec.settings.items():
            res = settings.resources
            for index in range(settings.replicas):
                options: dict[str, Any] = {
                    "num_cpus": res.num_cpus,
                    "num_gpus": res.num_gpus,
                    "max_restarts": settings.max_restarts,
                    "max_task_retries": 0,  # handlers need not be idempotent: fail, do not redo
                    "max_concurrency": 10_000,  # the mailbox, not Ray, bounds concurrency
                }
                if res.memory_bytes:
                    options["memory"] = res.memory_bytes
                if res.custom:
                    options["resources"] = dict(res.custom)
                self._hosts.append(
                    host_cls.options(**options).remote(
                        spec_ref, agent, index, self._registry, self._queue_actor, models_ref
                    )
                )
        starts = [h.start.remote() for h in self._hosts]
        await asyncio.wait_for(asyncio.gather(*starts), self._start_timeout_s)
        tasks = (
            ActorTaskQueue(self._queue_actor, cfg.queues.max_pending)
            if self._queue_actor is not None
            else make_task_queue(cfg)
        )
        self._client = ClusterClient(
            self._spec,
            self._registry,
            tasks,
            writer_id=f"driver/{uuid.uuid4().hex[:8]}",
            node_id=ray.get_runtime_context().get_node_id(),
        )
        self._client.start()
        await self._client.wait_members(len(self._hosts), self._start_timeout_s)

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Drain every replica (up to ``timeout_s``, default 10 s), run ``on_stop``, remove
        the actors; stop Ray if this runtime started it. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        timeout = 10.0 if timeout_s is None else timeout_s
        if self._client is not None:
            await self._client.close()
        drains = [h.drain.remote(timeout) for h in self._hosts]
        if drains:
            done, _ = await asyncio.wait(
                [asyncio.ensure_future(d) for d in drains], timeout=timeout + 5
            )
            for d in done:
                if d.exception() is not None:
                    log.warning("a replica failed to drain: %s", d.exception())
        for actor in [*self._hosts, self._queue_actor, self._registry]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self._hosts = []
        if self._owns_ray:
            ray.shutdown()

    # -- the Runtime protocol ----------------------------------------------------------------

    @property
    def agents(self) -> list[str]:
        return sorted(self._spec.classes)

    @property
    def replicas(self) -> list[Any]:
        """The AgentHost actor handles (for tests and operations)."""
        return list(self._hosts)

    @property
    def state(self) -> ClusterState:
        return self._require().state

    async def send(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> Any:
        return await self._require().send(
            agent, msg, timeout_s=timeout_s, priority=priority, trace=trace
        )

    def stream(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> AsyncIterator[Any]:
        return self._require().stream(
            agent, msg, timeout_s=timeout_s, priority=priority, trace=trace
        )

    async def publish(self, topic: str, msg: Any, *, trace: TraceContext | None = None) -> None:
        await self._require().publish(topic, msg, trace=trace)

    async def submit(self, queue: str, task: Any, *, trace: TraceContext | None = None) -> str:
        return await self._require().submit(queue, task, trace=trace)

    async def task(self, task_id: str) -> TaskInfo:
        return await self._require().task(task_id)

    async def wait_task(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        return await self._require().wait_task(task_id, timeout_s)

    def _require(self) -> ClusterClient:
        if self._client is None or self._closed:
            raise RuntimeClosed("the RayRuntime is not running")
        return self._client
