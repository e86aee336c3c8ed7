"""The gateway's real HTTP app -- its routes, middleware, parser and error handlers -- on
FastAPI's ``TestClient``, without Ray.

``gateway_deployment(config)`` defines the ``Gateway`` class exactly as ``serve run`` does, and
Serve's ``@serve.ingress`` turns its methods into routes of the app ``build_http`` made, whose
``self`` is a FastAPI dependency (the replica Serve runs). Here that dependency is overridden
with a replica built in this process: the real ``Completions``, an in-process response cache,
metrics, the agents of the default config, and a real ``ClusterClient`` over an in-process task
queue. Only what needs Ray is a stand-in of its real interface: the model (a handle-shaped
scripted model, as ``LocalModel`` is a handle-shaped engine), the agents' deployment handles
(each replies with the message it was sent) and the registry (it keeps shared-state writes).

So these tests cover everything a request meets before and after the engine or an agent; the
serve integration tests (``tests/integration/serve``) cover the same routes on real Serve, vLLM
and agents.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agents import Agent, codec
from agents.model import ModelReply, Usage
from runtime.cache import ResponseCache
from runtime.cluster.client import ClusterClient
from runtime.config import RaygentConfig, load_config
from runtime.gateway import service
from runtime.gateway.app import app_spec
from runtime.gateway.completions import Completions
from runtime.models import ModelDelta, ModelServerClient
from runtime.observability.metrics import Metrics
from runtime.observability.telemetry import Telemetry
from runtime.queues import InProcessTaskQueue

API_KEY = "sk-unit-test"
MAX_BODY_BYTES = 16 * 1024
WORDS = ("Hello", " from", " a", " scripted", " model", ".")


class _Method:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class ScriptedModelHandle:
    """A model deployment's handle, as ``ModelServerClient`` calls it (``chat.remote``,
    ``complete.remote``, ``stream.remote``, ``options``): answers ``WORDS``, cut at
    ``max_tokens``, once per choice."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.chat = _Method(self._whole)
        self.complete = _Method(self._whole)
        self.stream = _Method(self._stream)

    def options(self, **_: Any) -> ScriptedModelHandle:
        return self

    def _words(self, params: dict[str, Any]) -> tuple[list[str], str]:
        limit = int(params.get("max_tokens") or len(WORDS))
        words = list(WORDS[:limit])
        return words, "length" if limit < len(WORDS) else "stop"

    async def _whole(
        self, prompt: Any, params: dict[str, Any], traceparent: Any = None, **_: Any
    ) -> Any:
        words, reason = self._words(params)
        n = int(params.get("n") or 1)
        text = "".join(words)
        return ModelReply(text, self.name, reason, Usage(7, len(words) * n), (text,) * n)

    async def _stream(
        self, prompt: Any, params: dict[str, Any], traceparent: Any = None, **_: Any
    ) -> AsyncIterator[ModelDelta]:
        words, reason = self._words(params)
        n = int(params.get("n") or 1)
        for i in range(n):
            for word in words:
                yield ModelDelta(word, i, self.name)
            last = i == n - 1
            usage = Usage(7, len(words) * n) if last else None
            yield ModelDelta("", i, self.name, reason, usage)  # type: ignore[arg-type]


class StateRegistry:
    """The registry's handle as a replica writes shared state through it (``put_state``):
    keeps the updates (this replica has already applied its own write)."""

    def __init__(self) -> None:
        self.updates: list[Any] = []
        self.put_state = _Method(self._put)

    async def _put(self, updates: list[Any]) -> None:
        self.updates.extend(updates)


class EchoAgentHandle:
    """An agent deployment's handle, as ``ClusterClient`` calls it under Serve: every message
    is answered with itself -- as the list of one item when the agent's handler for it
    streams (what ``send`` gets of a stream), as one batch of it when streamed."""

    def __init__(self, agent: type[Agent]) -> None:
        self.agent = agent
        self.deliver = _Method(self._deliver)
        self.deliver_stream = _Method(self._deliver_stream)

    def options(self, **_: Any) -> EchoAgentHandle:
        return self

    async def _deliver(self, payload: bytes, *_: Any) -> bytes:
        msg = codec.decode(payload)
        streams = self.agent.routes().find("direct", None, msg).streams
        return codec.encode([msg]) if streams else payload

    async def _deliver_stream(self, payload: bytes, *_: Any) -> AsyncIterator[list[bytes]]:
        yield [payload]


def unit_config(**limits: Any) -> RaygentConfig:
    """The default config (example agents, ``default`` model) with one API key and a small
    body limit."""
    cfg = load_config(env={"RAYGENT_API_KEYS": API_KEY})
    update = {"max_body_bytes": MAX_BODY_BYTES, **limits}
    return cfg.model_copy(update={"limits": cfg.limits.model_copy(update=update)})


def gateway_app(
    config: RaygentConfig,
    monkeypatch: pytest.MonkeyPatch,
    handles: dict[str, Any] | None = None,
) -> FastAPI:
    """The app Serve would run for ``config``, its replica built in-process (see above);
    ``handles`` replace models' scripted handles by name."""
    made: list[FastAPI] = []
    real_build_http = service.build_http

    def build_http(cfg: RaygentConfig) -> FastAPI:
        made.append(real_build_http(cfg))
        return made[-1]

    monkeypatch.setattr(service, "build_http", build_http)
    deployment = service.gateway_deployment(config)
    http = made[0]
    gateway_cls = deployment.func_or_class.__mro__[1]  # under Serve's ingress wrapper

    class Replica(gateway_cls):  # type: ignore[misc, valid-type]
        """The replica's state, set directly (its constructor needs Serve)."""

        def __init__(self, **state: Any) -> None:
            self.__dict__.update(state)

        def __del__(self) -> None:  # the real one releases what Serve started
            pass

    spec = app_spec(config)
    agents = {name: EchoAgentHandle(cls) for name, cls in spec.classes.items()}
    tasks = InProcessTaskQueue(max_pending=config.queues.max_pending)
    cluster = ClusterClient(
        spec,
        StateRegistry(),  # type: ignore[arg-type]
        tasks,
        writer_id="gateway/unit",
        node_id="unit",
        serve_handle=agents.get,
    )
    metrics = Metrics(enabled=True)
    telemetry = Telemetry(component="gateway")
    cache = ResponseCache.from_config(config.cache)  # in-process: no Redis in unit tests
    handles = {n: ScriptedModelHandle(n) for n in config.models} | (handles or {})
    models = {n: ModelServerClient(h, n) for n, h in handles.items()}
    replica = Replica(
        _spec=spec,
        _cfg=config,
        _hosts={},
        _model_handles={},
        _agent_handles=agents,
        _tasks=tasks,
        _client=cluster,
        _metrics=metrics,
        _telemetry=telemetry,
        _cache=cache,
        _completions=Completions(config, models, cluster, cache, metrics, telemetry),
        _agents=service.describe_agents(spec),
        _created=1_700_000_000,
        _ready=None,
        _placing=None,
    )
    http.dependency_overrides[_replica_dependency(http)] = lambda: replica
    return http


def _replica_dependency(http: FastAPI) -> Any:
    """The dependency Serve's ingress gives each route for ``self``."""
    for route in http.routes:
        for dep in getattr(getattr(route, "dependant", None), "dependencies", ()):
            if dep.name == "self":
                return dep.call
    raise AssertionError("no route of the app takes the replica as a dependency")


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The app of :func:`unit_config`, one per test module (building it takes a fraction of a
    second); server errors are answered (500), not raised, so a test sees what a client
    would."""
    with pytest.MonkeyPatch.context() as mp:
        app = gateway_app(unit_config(), mp)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def sse_data(text: str) -> list[Any]:
    """The JSON of each ``data:`` event of an SSE body, up to the ``[DONE]`` it must end with."""
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events and events[-1] == "data: [DONE]", text[-200:]
    out = []
    for event in events[:-1]:
        assert event.startswith("data: "), event
        out.append(json.loads(event[len("data: ") :]))
    return out
