"""The HTTP gateway of ``serve run serve_app:app``: an OpenAI-compatible API, agent endpoints,
durable tasks, the response cache, auth, limits and telemetry, on Ray Serve.

* :func:`build_app` -- the whole Serve application (gateway, agents, models, registry) from a
  config (:mod:`runtime.gateway.app`);
* the routes live in :mod:`runtime.gateway.service`, the completion logic in
  :mod:`runtime.gateway.completions`, auth and the body limit in :mod:`runtime.gateway.edge`,
  the error mapping in :mod:`runtime.gateway.errors`.
"""

from runtime.gateway.app import app_spec, build_app

__all__ = ["app_spec", "build_app"]
