"""Variant weights from the Serve config: ``serve deploy`` with a new ``user_config`` on the
Gateway moves traffic without restarting a replica (Serve's lightweight update).

The application is deployed the way ``serve deploy deploy/serve.yaml`` does it (a declarative
config with ``import_path: serve_app:app``), here a thin one: no model, one agent behind a name
with two arms, so it starts in seconds.
"""

from __future__ import annotations

import os
import time
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest
import yaml

from bench.harness.servers import free_port
from tests.servekit import shutdown_serve

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not find_spec("ray"), reason="needs ray[serve]"),
]

APP = "cfg-weights"
TEST_AGENTS = Path(__file__).parent / "ray"  # ray_test_agents, for the app's workers
ADMIN = {"Authorization": "Bearer sk-cfg-admin"}


@pytest.fixture(scope="module")
def serve_client(ray_session):
    """Serve with its ingress on a free loopback port; shut down only if started here."""
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        pytest.skip("Serve is already running here (its ingress port is not this module's)")
    except ValueError:
        pass
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield serve.context._get_global_client(), f"http://127.0.0.1:{port}"
    finally:
        shutdown_serve()


def deploy(client, config_path: str, weights: dict) -> None:
    from ray.serve.schema import ServeDeploySchema

    env = {
        "RAYGENT_CONFIG": config_path,
        "RAYGENT_ADMIN_KEYS": ADMIN["Authorization"].split()[1],
        "PYTHONPATH": os.pathsep.join([str(TEST_AGENTS), os.environ.get("PYTHONPATH", "")]),
    }
    app = {
        "name": APP,
        "route_prefix": "/",
        "import_path": "serve_app:app",
        "runtime_env": {"env_vars": env},
        "deployments": [{"name": "Gateway", "user_config": {"variant_weights": weights}}],
    }
    client.deploy_apps(ServeDeploySchema.parse_obj({"applications": [app]}), _blocking=True)


def gateway_actors() -> set[str]:
    """The names of the Gateway's replica actors (each replica's is new)."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return {a["name"] for a in names if f"{APP}#Gateway#" in a["name"]}


def weights(url: str) -> tuple[str, dict[str, float]]:
    (entry,) = httpx.get(f"{url}/admin/variants", headers=ADMIN, timeout=10).json()["data"]
    return entry["weights_from"], {arm: a["weight"] for arm, a in entry["arms"].items()}


def until(check, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_serve_deploy_moves_weight_without_restarting_the_gateway(serve_client, tmp_path):
    client, url = serve_client
    config = tmp_path / "raygent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {},
                "agents": [
                    {"import_path": "ray_test_agents:Crawler", "resources": {"num_cpus": 0}}
                ],
                "variants": {
                    "turns": {
                        "arms": {
                            "a": {"target": "agent:crawler"},
                            "b": {"target": "agent:crawler", "system_prompt": "b"},
                        }
                    }
                },
            }
        )
    )
    deploy(client, str(config), {"turns": {"a": 0}})
    assert until(lambda: weights(url) == ("serve_config", {"a": 0.0, "b": 1.0}))
    replicas = gateway_actors()
    assert replicas

    deploy(client, str(config), {"turns": {"a": 3, "b": 1}})
    assert until(lambda: weights(url) == ("serve_config", {"a": 3.0, "b": 1.0}))
    assert gateway_actors() == replicas  # reconfigured in place: no replica restarted

    deploy(client, str(config), {})
    assert until(lambda: weights(url) == ("config", {"a": 1.0, "b": 1.0}))
    assert gateway_actors() == replicas
