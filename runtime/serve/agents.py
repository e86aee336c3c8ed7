"""Agents under Ray Serve: one deployment per agent, plus the registry and the fallback queue.

``serve_app`` runs the same :class:`~runtime.cluster.host.AgentHost` logic that
:class:`~runtime.cluster.ray_runtime.RayRuntime` runs standalone, but lets Serve do what that class
does by hand there:

=========================  ==============================  ================================
concern                    standalone (``RayRuntime``)     under Serve (this module)
=========================  ==============================  ================================
replica placement          ``ray.remote(...).options``      Serve deployment options
choosing a replica (send)  power of two choices in         Serve's router (power of two
                           ``ClusterClient``               choices on queue length)
restart after a crash      Ray ``max_restarts``            Serve health checks + replacement
graceful stop              ``RayRuntime.shutdown`` drains  Serve calls ``__del__``: drains
registry / task queue      plain Ray actors                one-replica Serve deployments
=========================  ==============================  ================================

Co-located replicas still exchange topic messages and state through their shm rings (the
registry tells them who shares their node); only calls that must cross a node, or need a
reply, go through Serve. A replica's *slot* is its Serve rank, so a replacement takes over its
predecessor's entry in the registry.

The registry and the task queue are Serve deployments rather than detached actors so that
their lifetime is the application's: ``serve shutdown`` or a redeploy removes them too.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle

from agents.errors import ReplicaUnavailable
from runtime.cluster.client import AppSpec
from runtime.cluster.host import AgentHost
from runtime.cluster.registry import Registry, TaskQueueActor
from runtime.models.client import ModelServerClient
from runtime.models.routes import ModelAt, resolve_model
from runtime.serve.options import (
    REGISTRY,
    TASK_QUEUE,
    actor_options,
    agent_deployment_name,
    scaling_options,
    serve_at_node_priority,
)

__all__ = ["DRAIN_TIMEOUT_S", "ServedAgent", "agent_deployment", "queue_deployment", "registry"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0
"""How long a stopping replica lets its mailbox empty before cancelling what is left."""

_FEEDS = 100_000
"""``max_ongoing_requests`` of the registry and queue: every replica keeps long polls open."""


class ServedAgent(AgentHost):
    """An agent replica as a Serve replica. Serve awaits the constructor, so the replica takes
    traffic only after ``on_start`` ran and it registered.

    Args:
        spec: the application's shape.
        agent: which agent this deployment runs.
        registry: the registry deployment's handle.
        queue: the task queue deployment's handle, or None when Redis holds the queues.
        models: the models this agent may use, by name: the handle of a model's deployment,
            or where it is hosted (``ModelAt`` the gateway, resolved here: binding the gateway
            into the agents it binds would be a cycle).
    """

    async def __init__(
        self,
        spec: AppSpec,
        agent: str,
        registry: DeploymentHandle,
        queue: DeploymentHandle | None,
        models: dict[str, DeploymentHandle | ModelAt],
    ) -> None:
        ctx = serve.get_replica_context()
        rank = getattr(ctx, "rank", None)
        index = getattr(rank, "rank", rank) if rank is not None else 0
        clients = {
            name: ModelServerClient(resolve_model(h, ctx.app_name), name)
            for name, h in models.items()
        }
        super().__init__(spec, agent, int(index), registry, queue, clients, serve_app=ctx.app_name)
        await self.start()
        # An agent's requests cross this replica: once started it serves at the node's CPU
        # priority, as the engine does (its start-up stays behind the engines' cold start).
        serve_at_node_priority()

    async def check_health(self) -> None:
        """Serve's health check: a replica whose executor has stopped is replaced."""
        ex = self._executor
        if ex is None or not ex.healthy():
            raise ReplicaUnavailable(self._agent, "the replica's workers are not running")

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom-metrics hook: this replica's depth, for the queue-depth policy."""
        return await self.autoscaling_stats()

    async def __del__(self) -> None:
        # Serve awaits this on graceful shutdown (scale-down, redeploy, ``serve shutdown``).
        await self.drain(DRAIN_TIMEOUT_S)


class ServedTaskQueue(TaskQueueActor):
    """The task queue as a Serve replica: Serve awaits ``__del__`` on shutdown. (Only here:
    an ``async __del__`` on a plain object would be a coroutine nobody awaits at GC.)"""

    async def __del__(self) -> None:
        await self.close()


def _singleton(cls: type, name: str) -> Any:
    """A one-replica, CPU-free deployment of ``cls`` that keeps every long poll open.

    Its stop does not wait for its calls to end: most are long polls (a feed's 10 s window,
    a claim's wait) that would hold every redeploy and delete of the application for their
    whole window -- 11 s of a 19 s app delete, measured -- and what it holds is in memory,
    gone with the replica either way. A cut poll is a failed call its caller retries (the
    feeds with backoff, onto the new replica)."""
    return serve.deployment(cls).options(
        name=name,
        num_replicas=1,
        max_ongoing_requests=_FEEDS,
        ray_actor_options={"num_cpus": 0},
        graceful_shutdown_wait_loop_s=0.2,
        graceful_shutdown_timeout_s=1.0,
    )


def registry() -> Application:
    """The bound registry deployment."""
    return _singleton(Registry, REGISTRY).bind()


def queue_deployment(
    max_pending: int, max_attempts: int, visibility_timeout_s: float
) -> Application:
    """The bound in-process task queue deployment (used when no Redis is configured; it is
    not durable across its replica's death, as the config's docs say)."""
    return _singleton(ServedTaskQueue, TASK_QUEUE).bind(
        max_pending, max_attempts, visibility_timeout_s
    )


def agent_deployment(
    spec: AppSpec,
    agent: str,
    registry_app: Application,
    queue_app: Application | None,
    models: dict[str, Application | ModelAt],
) -> Application:
    """The bound deployment of ``agent``.

    Serve admits at most ``mailbox_size + max_concurrency`` calls per replica, so the
    replica's own mailbox (which knows priorities) is what refuses work with
    ``Backpressure``; Serve queues at most ``mailbox_size`` more per caller, then refuses too.
    """
    settings = spec.settings[agent]
    options: dict[str, Any] = {
        "name": agent_deployment_name(agent),
        "ray_actor_options": actor_options(settings.resources),
        "max_ongoing_requests": settings.mailbox_size + settings.max_concurrency,
        "max_queued_requests": settings.mailbox_size,
        "graceful_shutdown_timeout_s": DRAIN_TIMEOUT_S + 5.0,
    }
    options.update(scaling_options(settings.replicas, settings.autoscaling))
    return (
        serve.deployment(ServedAgent)
        .options(**options)
        .bind(spec, agent, registry_app, queue_app, models)
    )
