"""The Serve application of ``serve_app``: every deployment, bound from one config.

::

    HTTP ─► Gateway [engines of the models with placement: gateway, in-process]
       │        ▲ ctx.llm of agents                    └─► ModelServer-<model> (placement:
       │        │                                          deployment; one Serve hop)
       ├──► Agent-<name> (one deployment per agent)
       │        │   ▲ co-located replicas: shm rings
       │        ▼   │
       └──► Registry (membership, shared state)   TaskQueue (only without Redis)

A request for a gateway-hosted model crosses the ingress and one gateway replica, which holds
the vLLM engine (as plain vLLM's API server does): no Ray call, no copy of a delta between
processes. Agents reach such a model through the gateway deployment's handle (``ModelAt``).

Binding the parts as the gateway's (and agents') constructor arguments puts them in one Serve
application, so ``serve run``/``serve deploy`` start them together and ``serve shutdown`` stops
them together. Agent classes are imported here, so a bad ``import_path`` fails the deploy rather
than the first request.
"""

from __future__ import annotations

from ray.serve.deployment import Application

from runtime.cluster.client import AppSpec
from runtime.config import RaygentConfig, import_agent
from runtime.core.local import settings_for
from runtime.errors import ConfigError
from runtime.gateway.service import gateway_deployment
from runtime.models import model_deployments
from runtime.serve.agents import agent_deployment, queue_deployment, registry
from runtime.serve.options import prepare_ray_env

__all__ = ["build_app"]


def app_spec(config: RaygentConfig, name: str = "raygent") -> AppSpec:
    """The application's shape: agent classes by name and their settings."""
    classes = {}
    for entry in config.agents:
        cls = import_agent(entry.import_path)
        if cls.name in classes:
            raise ConfigError(f"agents: two entries define an agent named {cls.name!r}")
        classes[cls.name] = cls
    settings = {n: settings_for(config, c) for n, c in classes.items()}
    return AppSpec(name=name, config=config, classes=classes, settings=settings)


def build_app(config: RaygentConfig) -> Application:
    """The whole application for ``config``.

    Raises:
        ConfigError: an agent cannot be imported, two agents share a name, an agent names an
            unknown model, or fallbacks form a cycle.
    """
    prepare_ray_env(config.gateway)
    spec = app_spec(config)
    models = model_deployments(config)
    reg = registry()
    queue = (
        queue_deployment(
            config.queues.max_pending,
            config.queues.max_attempts,
            config.queues.visibility_timeout_s,
        )
        if config.queues_url is None
        else None
    )
    agents = {}
    for name, cls in spec.classes.items():
        wanted = spec.settings[name].model or cls.model
        if wanted is not None and wanted not in config.models:
            raise ConfigError(
                f"agent {name!r} uses model {wanted!r}, which is not configured; "
                f"models: {sorted(models)}"
            )
        uses = {wanted: models[wanted]} if wanted is not None else {}
        agents[name] = agent_deployment(spec, name, reg, queue, uses)
    return gateway_deployment(config).bind(spec, reg, queue, models, agents)
