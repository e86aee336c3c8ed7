"""vLLM's prefix cache is scoped as the response cache is: the gateway gives each model request
its tenant's cache scope as ``cache_salt``, and it reaches vLLM's tokens prompt.

The path, each hop with a fake of the next one's real interface: ``Completions`` (gateway) ->
``ModelServerClient.scoped`` (the salt travels in ``params``, so every handle shape carries it)
-> ``ModelHost`` (takes it out before checking the sampling parameters) -> ``ModelEngine._run``
-> ``tokens_input(ids, prompt=text, cache_salt=...)``.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from agents.errors import InvalidParameter
from agents.model import ModelReply, SamplingParams, Usage
from runtime.cache import ResponseCache, cache_scope
from runtime.config import CacheConfig, LimitsConfig, RaygentConfig, TelemetryConfig
from runtime.gateway.completions import Completions
from runtime.gateway.schema import ChatCompletionRequest, CompletionRequest
from runtime.models import ModelDelta, ModelServerClient
from runtime.models.client import CACHE_SALT
from runtime.observability.metrics import Metrics
from runtime.observability.telemetry import Telemetry

TENANT = "key:0123456789abcdef01234567"


class RecordingHandle:
    """A model deployment's handle as ``ModelServerClient`` calls it; records each ``params``."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.chat = types.SimpleNamespace(remote=self._whole)
        self.complete = types.SimpleNamespace(remote=self._whole)
        self.stream = types.SimpleNamespace(remote=self._stream)

    def options(self, **_: Any) -> RecordingHandle:
        return self

    async def _whole(self, prompt: Any, params: dict[str, Any], traceparent: Any = None) -> Any:
        self.params.append(dict(params))
        return ModelReply("hi", "default", "stop", Usage(3, 1))

    async def _stream(self, prompt: Any, params: dict[str, Any], traceparent: Any = None):
        self.params.append(dict(params))
        yield ModelDelta("hi", 0, "default", "stop", Usage(3, 1))


def test_scope_is_the_tenant_unless_the_target_is_shared():
    assert cache_scope(TENANT, shared=False) == TENANT
    assert cache_scope(TENANT, shared=True) is None


async def test_a_scoped_client_sends_the_salt_and_a_plain_one_does_not():
    handle = RecordingHandle()
    plain = ModelServerClient(handle, "default")
    await plain.chat([{"role": "user", "content": "x"}], max_tokens=2)
    await plain.scoped(TENANT).chat([{"role": "user", "content": "x"}], max_tokens=2)
    await plain.scoped(TENANT).complete("x", max_tokens=2)
    _ = [d async for d in plain.scoped(TENANT).stream_deltas("x", max_tokens=2)]
    await plain.scoped(None).complete("x", max_tokens=2)
    assert [p.get(CACHE_SALT) for p in handle.params] == [None, TENANT, TENANT, TENANT, None]
    assert all(p["max_tokens"] == 2 for p in handle.params)


def completions(handle: RecordingHandle, **cache: Any) -> Completions:
    config = RaygentConfig(cache=CacheConfig(**cache))
    runtime = types.SimpleNamespace(spec=types.SimpleNamespace(classes={}))
    return Completions(
        config,
        {"default": ModelServerClient(handle, "default")},
        runtime,  # type: ignore[arg-type]
        ResponseCache(),
        Metrics(enabled=False),
        Telemetry.from_env(TelemetryConfig(traces=False), env={}, component="test"),
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("shared", [False, True])
async def test_the_gateway_salts_model_requests_with_the_tenants_scope(stream, shared):
    handle = RecordingHandle()
    gateway = completions(handle, shared=["default"] if shared else [])
    for req in (
        ChatCompletionRequest(
            model="default",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=2,
            temperature=0.7,  # not cacheable: the model is called every time
            stream=stream,
        ),
        CompletionRequest(model="default", prompt="hello", max_tokens=2, stream=stream),
    ):
        response = await gateway.answer(
            req, tenant=TENANT, cache_control=None, trace=None, route="/v1/test"
        )
        if stream:
            _ = [chunk async for chunk in response.body_iterator]
    assert len(handle.params) == 2
    assert {p.get(CACHE_SALT) for p in handle.params} == {None if shared else TENANT}


# -- the model host and the engine -----------------------------------------------------------------


def test_the_host_takes_the_salt_out_and_checks_it():
    server = pytest.importorskip("runtime.models.server")
    assert server._cache_salt({"max_tokens": 2, CACHE_SALT: TENANT}) == TENANT
    assert server._cache_salt({"max_tokens": 2}) is None
    for bad in ("", 7):
        with pytest.raises(InvalidParameter, match=CACHE_SALT):
            server._cache_salt({CACHE_SALT: bad})


class _FakeLLM:
    """What ``ModelEngine._run`` uses of vLLM's ``AsyncLLM``: ``generate`` (recorded) and
    ``abort``."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []

    async def generate(self, inputs: dict[str, Any], sp: Any, request_id: str):
        self.inputs.append(dict(inputs))
        choice = types.SimpleNamespace(index=0, text="hi", token_ids=[1], finish_reason="stop")
        yield types.SimpleNamespace(outputs=[choice], finished=True, num_cached_tokens=0)

    async def abort(self, request_id: str) -> None:
        return None


async def test_the_engine_puts_the_salt_on_the_tokens_prompt():
    engine_mod = pytest.importorskip("runtime.models.engine")  # needs vLLM
    engine = object.__new__(engine_mod.ModelEngine)
    llm = _FakeLLM()
    tokenizer = types.SimpleNamespace(encode=lambda text, add_special_tokens: [5, 6, 7])
    engine.__dict__.update(
        name="default",
        limits=LimitsConfig(),
        max_model_len=64,
        last_output_at=0.0,
        _llm=llm,
        _tokenizer=tokenizer,
        _inflight=0,
        _aborted=0,
    )
    sp = SamplingParams(max_tokens=2, temperature=0.0)
    reply = await engine.generate("hello", sp, cache_salt=TENANT)
    _ = [d async for d in engine.stream("hello", sp)]
    assert reply.text == "hi"
    assert llm.inputs[0] == {
        "type": "token",
        "prompt_token_ids": [5, 6, 7],
        "prompt": "hello",
        "cache_salt": TENANT,
    }
    assert "cache_salt" not in llm.inputs[1]  # unscoped: vLLM's default, shared
