"""Agents on Serve stop cleanly when their whole application goes (``serve run`` Ctrl-C,
``serve shutdown``, a redeploy without them): each replica's drain reaches ``on_stop`` even
though the registry it unregisters from is being stopped at the same moment."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from ray_test_agents import STOP_MARKS, Ping, Stopper

from agents import codec
from runtime.config import AgentConfig, RaygentConfig
from runtime.gateway.app import app_spec
from runtime.serve.agents import agent_deployment, queue_deployment, registry
from runtime.serve.options import agent_deployment_name
from tests import polling

pytestmark = [pytest.mark.integration]

APP = "shutdown-test"


def _front(agent):
    """The application's ingress, as the gateway is in ``serve_app``. (With Serve's HAProxy
    ingress an ingress replica stays up ~30 s after a delete -- its direct-ingress drain
    period, so load balancers can deregister it -- which the test does not wait for.)"""
    from ray import serve

    @serve.deployment(name="Front", ray_actor_options={"num_cpus": 0})
    class Front:
        def __init__(self, agent) -> None:
            self.agent = agent

    return Front.bind(agent)


def test_deleting_the_app_runs_every_agents_on_stop(gateway_url):
    """A second application beside the package's (whose fixture owns Serve's HTTP options)."""
    from ray import serve

    shutil.rmtree(STOP_MARKS, ignore_errors=True)
    config = RaygentConfig(
        agents=[AgentConfig(import_path=f"{Stopper.__module__}:Stopper", replicas=2)]
    )
    spec = app_spec(config, name=APP)
    (name,) = spec.classes
    reg = registry()
    q = config.queues
    queue = queue_deployment(q.max_pending, q.max_attempts, q.visibility_timeout_s)
    app = _front(agent_deployment(spec, name, reg, queue, {}))
    serve.run(app, name=APP, route_prefix=None)
    try:
        handle = serve.get_deployment_handle(agent_deployment_name(name), app_name=APP)
        reply = handle.deliver.remote(codec.encode(Ping(7)), None, "interactive").result(
            timeout_s=60
        )
        assert codec.decode(reply) == 7
        assert not STOP_MARKS.exists()
    finally:
        # the registry and the task queue go at the same time as the agents
        serve.delete(APP, _blocking=False)

    def marks() -> list[str]:
        return sorted(p.name for p in STOP_MARKS.iterdir()) if STOP_MARKS.exists() else []

    # Serve force-kills an agent replica 15 s after asking it to stop (its graceful shutdown
    # timeout): a drain that hangs never writes its mark
    asyncio.run(polling.until(lambda: len(marks()) >= 2, timeout_s=30, poll_s=0.2))
    assert len(marks()) == 2, marks()
