"""The HTTP ingress of ``serve run serve_app:app``, as a Ray Serve deployment.

This build serves the discovery and health routes; chat/completions, agent invocation, tasks,
the response cache and auth arrive with the serve_app issue on top of the Ray runtime and the
model servers:

* ``GET /healthz`` — the replica's process is alive;
* ``GET /readyz``  — 200 once warm model replicas can take traffic, 503 with the reason until then;
* ``GET /v1/models`` — configured models and agents (``agent:<name>``), OpenAI's list schema;
* ``GET /v1/agents`` — agents with the message types, topics and queues they handle.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.deployment import Application

from runtime.config import RaygentConfig, import_agent

__all__ = ["build_app"]


def _describe_agents(config: RaygentConfig) -> list[dict[str, Any]]:
    out = []
    for entry in config.agents:
        cls = import_agent(entry.import_path)
        routes = cls.routes()
        out.append(
            {
                "name": cls.name,
                "import_path": entry.import_path,
                "model": entry.model or cls.model,
                "accepts": routes.direct_types(),
                "topics": routes.keys("topic"),
                "queues": routes.keys("queue"),
                "replicas": entry.replicas,
            }
        )
    return out


def build_app(config: RaygentConfig) -> Application:
    """The Serve application for ``config``. Agent classes are imported here, so a bad
    ``import_path`` fails at deploy time rather than on the first request."""
    agents = _describe_agents(config)
    created = int(time.time())
    http = FastAPI(title="raygent", version="0.1.0")

    @serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(http)
    class Gateway:
        @http.get("/healthz")
        async def healthz(self) -> dict[str, str]:
            return {"status": "ok"}

        @http.get("/readyz")
        async def readyz(self) -> JSONResponse:
            return JSONResponse(
                {"ready": False, "reason": "no model server is deployed by this build yet"},
                status_code=503,
            )

        @http.get("/v1/models")
        async def models(self) -> dict[str, Any]:
            data = [
                {"id": name, "object": "model", "created": created, "owned_by": "raygent"}
                for name in config.models
            ]
            data += [
                {
                    "id": f"agent:{a['name']}",
                    "object": "model",
                    "created": created,
                    "owned_by": "raygent",
                }
                for a in agents
            ]
            return {"object": "list", "data": data}

        @http.get("/v1/agents")
        async def list_agents(self) -> dict[str, Any]:
            return {"object": "list", "data": agents}

    return Gateway.bind()
