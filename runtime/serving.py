"""Names of raygent's Serve deployments, handles to them, and the options they share.

Kept apart from the deployments themselves so that the runtime's clients (which only need to
*reach* deployments) do not import the classes that define them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from runtime.config import AutoscalingConfig, ResourcesConfig

__all__ = [
    "REGISTRY",
    "TASK_QUEUE",
    "actor_options",
    "agent_deployment_name",
    "scaling_options",
    "serve_handles",
]

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


def actor_options(resources: ResourcesConfig) -> dict[str, Any]:
    """Serve's ``ray_actor_options`` for a replica with ``resources``."""
    out: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_bytes is not None:
        out["memory"] = resources.memory_bytes
    if resources.custom:
        out["resources"] = dict(resources.custom)
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
