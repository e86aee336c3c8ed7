"""Names of raygent's Serve deployments, handles to them, and the options they share.

Kept apart from the deployments themselves so that the runtime's clients (which only need to
*reach* deployments) do not import the classes that define them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from runtime.config import AutoscalingConfig, GatewayConfig, ResourcesConfig

__all__ = [
    "GATEWAY",
    "REGISTRY",
    "TASK_QUEUE",
    "actor_options",
    "agent_deployment_name",
    "prepare_ray_env",
    "scaling_options",
    "serve_handles",
]

HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
"""Serve's switch for its HAProxy ingress; read by every Ray process when it starts."""

GATEWAY = "Gateway"
"""The application's HTTP ingress; it also hosts the models with ``placement: gateway``."""

REGISTRY = "Registry"
"""The application's registry (membership and shared state feeds)."""

TASK_QUEUE = "TaskQueue"
"""The in-process task queue, deployed only when no Redis is configured."""


def agent_deployment_name(agent: str) -> str:
    """The Serve deployment that hosts the replicas of ``agent``."""
    return f"Agent-{agent}"


def serve_handles(app_name: str) -> Callable[[str], Any]:
    """A function from agent name to that agent's ``DeploymentHandle`` in ``app_name``; each
    handle is made once (a handle owns a router: making one per call would cost a lookup and
    lose the router's queue-length cache)."""
    from ray import serve

    @functools.cache
    def handle(agent: str) -> Any:
        return serve.get_deployment_handle(agent_deployment_name(agent), app_name=app_name)

    return handle


def actor_options(resources: ResourcesConfig, *more: ResourcesConfig) -> dict[str, Any]:
    """Serve's ``ray_actor_options`` for a replica with ``resources`` (plus ``more``: a gateway
    replica reserves its own and those of the models it hosts)."""
    every = (resources, *more)
    out: dict[str, Any] = {
        "num_cpus": sum(r.num_cpus for r in every),
        "num_gpus": sum(r.num_gpus for r in every),
    }
    memory = [r.memory_bytes for r in every if r.memory_bytes is not None]
    if memory:
        out["memory"] = sum(memory)
    custom: dict[str, float] = {}
    for r in every:
        for k, v in r.custom.items():
            custom[k] = custom.get(k, 0.0) + v
    if custom:
        out["resources"] = custom
    return out


def scaling_options(replicas: int, autoscaling: AutoscalingConfig | None) -> dict[str, Any]:
    """``num_replicas``, or Serve's ``autoscaling_config`` when the config asks for it."""
    if autoscaling is None:
        return {"num_replicas": replicas}
    return {
        "autoscaling_config": {
            "min_replicas": autoscaling.min_replicas,
            "max_replicas": autoscaling.max_replicas,
            "target_ongoing_requests": autoscaling.target_ongoing_requests,
        }
    }


def prepare_ray_env(gateway: GatewayConfig) -> bool:
    """Set up the environment of the Ray cluster this process is about to start.

    ``serve run serve_app:app`` imports the application *before* it calls ``ray.init``, and the
    processes Ray starts inherit this process's environment; so this is the one moment at which
    the application can pick Serve's ingress (``gateway.ingress``). A variable the user set
    already wins, and a process already connected to Ray (a test, ``serve deploy`` against a
    running cluster) is left alone: its cluster's ingress was chosen when it started.

    The listen host does not change: Serve forces all interfaces only when the variable is set
    before ``ray.serve`` is imported, which is not the case here, so ``http_options.host``
    keeps its loopback default.

    Returns:
        Whether the environment was changed.
    """
    import ray

    if ray.is_initialized() or HA_PROXY_ENV in os.environ:
        return False
    os.environ[HA_PROXY_ENV] = "1" if gateway.ingress == "haproxy" else "0"
    return True
