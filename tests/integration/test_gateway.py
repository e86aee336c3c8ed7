"""The Serve application of ``serve_app`` on real Ray Serve: discovery and health routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

PORT = 18631


@pytest.fixture(scope="module")
def gateway(ray_session):
    from runtime.config import load_config
    from runtime.gateway import build_app

    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        serve.run(build_app(load_config(env={})), name="raygent", route_prefix="/")
        yield f"http://127.0.0.1:{PORT}"
    finally:
        serve.shutdown()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_and_readiness(gateway):
    assert get(f"{gateway}/healthz") == (200, {"status": "ok"})
    status, body = get(f"{gateway}/readyz")
    assert status == 503 and body["ready"] is False and body["reason"]


def test_models_and_agents_are_listed_from_the_default_config(gateway):
    status, body = get(f"{gateway}/v1/models")
    assert status == 200 and body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["default", "agent:researcher", "agent:writer", "agent:critic", "agent:archivist"]
    status, body = get(f"{gateway}/v1/agents")
    agents = {a["name"]: a for a in body["data"]}
    assert agents["researcher"]["accepts"] == ["ResearchRequest"]
    assert agents["archivist"]["queues"] == ["archive"]
    assert agents["archivist"]["topics"] == ["reports"]
    assert agents["writer"]["model"] == "default"
