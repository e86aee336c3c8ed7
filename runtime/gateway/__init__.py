"""The HTTP gateway of ``serve run serve_app:app``: an OpenAI-compatible API, agent endpoints,
durable tasks, the response cache, auth, limits and telemetry, on Ray Serve.

* :func:`build_app` -- the whole Serve application (gateway, agents, models, registry) from a
  config (:mod:`runtime.gateway.app`);
* the routes live in :mod:`runtime.gateway.service`; auth and the body limit in
  :mod:`runtime.gateway.edge`; the error mapping in :mod:`runtime.gateway.errors`;
* a completion runs one pipeline, :mod:`runtime.gateway.completions` (route -> ask -> cache ->
  call -> format -> record), whose steps live in :mod:`~runtime.gateway.targets` (route),
  :mod:`~runtime.gateway.calls` (call), :mod:`~runtime.gateway.openai_format` (format) and
  :mod:`~runtime.gateway.shadows` (copies to shadow arms).
"""

from runtime.gateway.app import app_spec, build_app

__all__ = ["app_spec", "build_app"]
