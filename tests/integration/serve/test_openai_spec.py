"""Every answer of the real application against OpenAI's official schemas (extracted into
``tests/data/openai/schemas.json``): real Serve (HAProxy ingress), real vLLM (``builtin:tiny``),
agents as Serve deployments.

Each route is called with requests that succeed -- their JSON bodies and every SSE chunk are
validated against ``CreateChatCompletionResponse``, ``CreateChatCompletionStreamResponse``,
``CreateCompletionResponse``, ``ListModelsResponse`` and ``Model`` -- and with bad requests,
whose bodies must be ``ErrorResponse`` with the right status and ``param``. Agent and task
successes are raygent's own shapes (not in the spec); only their errors are checked. Values
that pass validation but are extreme (a huge ``top_k``, the largest ``seed``, a tiny or huge
``temperature``) reach the engine, and must not make it fail either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
CHAT_CHUNK = "CreateChatCompletionStreamResponse"
TURNS = '[{"role": "user", "content": "Hi"}]'


@pytest.fixture
def http(gateway_url, auth) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, headers=auth, timeout=60) as c:
        yield c


def _events(r: httpx.Response) -> list[dict[str, Any]]:
    """The JSON of every SSE event, checking that the stream ends with ``[DONE]``."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]", r.text[-300:]
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


def _error(openai_spec, r: httpx.Response, status: int, param: Any = ...) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    openai_spec.check("ErrorResponse", r.json())
    if param is not ...:
        assert r.json()["error"]["param"] == param, r.json()
    return r.json()["error"]


def _raw(http: httpx.Client, path: str, body: bytes | str, **headers: str) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return http.post(path, content=data, headers={"content-type": "application/json", **headers})


def _unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"  # a prompt the cache has not seen


# -- successes: bodies and chunks in the spec's schemas --------------------------------------------


def test_models(http, openai_spec):
    r = http.get("/v1/models")
    assert r.status_code == 200
    openai_spec.check("ListModelsResponse", r.json())
    for model in r.json()["data"]:
        openai_spec.check("Model", model)


@pytest.mark.parametrize("model", ["default", "agent:assistant", "agent:words"])
def test_chat(http, openai_spec, model):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": _unique("Say a few words")}],
        "max_tokens": 4,
        "temperature": 0.8,
        "ignore_eos": True,
    }
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    openai_spec.check("CreateChatCompletionResponse", r.json())
    assert r.json()["choices"][0]["message"]["refusal"] is None
    for include_usage in (False, True):
        stream = {**body, "stream": True, "stream_options": {"include_usage": include_usage}}
        chunks = _events(http.post(CHAT, json=stream))
        assert chunks
        for chunk in chunks:
            openai_spec.check(CHAT_CHUNK, chunk)
        assert ("usage" in chunks[-1] and chunks[-1]["usage"] is not None) == include_usage


def test_chat_with_several_choices(http, openai_spec):
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "Two answers"}],
        "max_tokens": 3,
        "n": 2,
        "temperature": 1.0,
    }
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    openai_spec.check("CreateChatCompletionResponse", r.json())
    assert len(r.json()["choices"]) == 2
    for chunk in _events(http.post(CHAT, json={**body, "stream": True})):
        openai_spec.check(CHAT_CHUNK, chunk)


def test_text_completion(http, openai_spec):
    body = {"model": "default", "prompt": "Once upon", "max_tokens": 4, "temperature": 0.6}
    r = http.post(TEXT, json=body)
    assert r.status_code == 200, r.text
    openai_spec.check("CreateCompletionResponse", r.json())
    chunks = _events(http.post(TEXT, json={**body, "stream": True}))
    for chunk in chunks:
        openai_spec.check(openai_spec.TEXT_CHUNK, chunk)
    ended = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert ended
    for chunk in ended:  # the chunk that ends a choice is a CreateCompletionResponse proper
        openai_spec.check("CreateCompletionResponse", chunk)
    usage = _events(
        http.post(TEXT, json={**body, "stream": True, "stream_options": {"include_usage": True}})
    )
    openai_spec.check("CreateCompletionResponse", usage[-1])
    assert usage[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("path", [CHAT, TEXT])
def test_cached_answers_replay_in_the_schema(http, openai_spec, path):
    body: dict[str, Any] = {"model": "default", "max_tokens": 3, "temperature": 0}
    if path == CHAT:
        body["messages"] = [{"role": "user", "content": _unique("Cache me")}]
    else:
        body["prompt"] = _unique("Cache me")
    whole = "CreateChatCompletionResponse" if path == CHAT else "CreateCompletionResponse"
    chunk = CHAT_CHUNK if path == CHAT else openai_spec.TEXT_CHUNK
    statuses = []
    for _ in range(2):
        r = http.post(path, json=body)
        statuses.append(r.headers["x-raygent-cache"])
        openai_spec.check(whole, r.json())
        s = http.post(path, json={**body, "stream": True})
        statuses.append(s.headers["x-raygent-cache"])
        for c in _events(s):
            openai_spec.check(chunk, c)
    assert statuses[0] == "miss" and statuses[1:] == ["hit", "hit", "hit"], statuses


@pytest.mark.parametrize(
    "extra",
    [
        {"top_k": 10**12},
        {"seed": 2**63 - 1},
        {"seed": 0},
        {"temperature": 1e308},
        {"temperature": 1e-300},
        {"top_p": 1e-300},
        {"top_p": 1.0, "temperature": 2.0},
        {"stop": ["a", "b", "c", "d"] * 4},
        {"max_tokens": 1},
        {"n": 4, "temperature": 1.0},
    ],
    ids=lambda e: ",".join(f"{k}={v!r:.12}" for k, v in e.items()),
)
def test_extreme_valid_values_reach_the_engine_without_a_5xx(http, openai_spec, extra):
    body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    r = http.post(CHAT, json={**body, **extra})
    assert r.status_code < 500, r.text
    name = "CreateChatCompletionResponse" if r.status_code == 200 else "ErrorResponse"
    openai_spec.check(name, r.json())
    s = http.post(CHAT, json={**body, **extra, "stream": True})
    assert s.status_code < 500, s.text
    if s.status_code == 200:
        for c in _events(s):
            openai_spec.check("ErrorResponse" if "error" in c else CHAT_CHUNK, c)


# -- errors of the OpenAI routes -------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, TEXT])
@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1E400"])
def test_non_finite_temperature_is_400(http, openai_spec, path, number):
    prompt = f'"messages": {TURNS}' if path == CHAT else '"prompt": "Hi"'
    r = _raw(http, path, f'{{"model": "default", {prompt}, "temperature": {number}}}')
    _error(openai_spec, r, 400, "temperature")


@pytest.mark.parametrize("path", [CHAT, TEXT])
def test_repeated_keys_are_400(http, openai_spec, path):
    prompt = f'"messages": {TURNS}' if path == CHAT else '"prompt": "Hi"'
    body = f'{{"model": "default", {prompt}, "temperature": 0.5, "temperature": 1E400}}'
    _error(openai_spec, _raw(http, path, body), 400, "temperature")
    body = f'{{"model": "default", {prompt}, "temperature": 0.5, "temperature": 0.7}}'
    _error(openai_spec, _raw(http, path, body), 400, "temperature")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b'{"model": "default", "messages": [{"role": "user", "content": "\xff"}]}', 400, None),
        (b"\xfe\xff", 400, None),
        (b'{"model": "default", "messages": [', 400, None),
        (b"", 400, None),
        (b"[]", 400, None),
        (b'{"model": "default", "messages": [{"role": "user", "content": "\\udc00"}]}', 400,
         "messages.0.content"),
        (b'{"model": "default", "messages": "hi"}', 400, "messages"),
        (b'{"model": "default", "messages": [{"role": "user", "content": 1}]}', 400,
         "messages.0.content"),
        (b'{"model": "default", "messages": [], "max_tokens": 100000}', 400, "messages"),
        (b'{"model": "default", "messages": [{"role": "user", "content": "x"}], '
         b'"max_tokens": 100000}', 400, "max_tokens"),
        (b'{"model": "default", "messages": [{"role": "user", "content": "x"}], '
         b'"seed": 9223372036854775808}', 400, "seed"),
        (b'{"model": "default", "messages": [{"role": "user", "content": "x"}], '
         b'"tools": [{"type": "function"}]}', 400, "tools[0]"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
        (b'{"model": "agent:echo", "messages": [{"role": "user", "content": "x"}]}', 400,
         "model"),
    ],
)  # fmt: skip
def test_chat_errors(http, openai_spec, body, status, param):
    _error(openai_spec, _raw(http, CHAT, body), status, param)


def test_text_completion_errors(http, openai_spec):
    _error(openai_spec, _raw(http, TEXT, '{"model": "default"}'), 400, "prompt")
    body = '{"model": "default", "prompt": ["a", "b"]}'
    _error(openai_spec, _raw(http, TEXT, body), 400, "prompt")
    body = '{"model": "default", "prompt": "x", "echo": true}'
    _error(openai_spec, _raw(http, TEXT, body), 400, "echo")
    body = '{"model": "default", "prompt": "' + "word " * 5000 + '", "max_tokens": 4}'
    _error(openai_spec, _raw(http, TEXT, body), 400, "prompt")


def test_routing_auth_and_size_errors(http, gateway_url, openai_spec):
    _error(openai_spec, http.get("/v1/nowhere"), 404)
    _error(openai_spec, http.get(CHAT), 405)
    _error(openai_spec, http.post("/v1/models", json={}), 405)
    _error(openai_spec, http.get("/v1/agents/echo/invoke"), 405)
    _error(openai_spec, http.delete("/v1/tasks/x"), 405)
    anonymous = httpx.post(f"{gateway_url}{CHAT}", json={"model": "default"})
    _error(openai_spec, anonymous, 401)
    wrong = httpx.get(f"{gateway_url}/v1/models", headers={"Authorization": "Bearer no"})
    _error(openai_spec, wrong, 401)
    big = {"model": "default", "messages": [{"role": "user", "content": "x" * 100_000}]}
    _error(openai_spec, http.post(CHAT, json=big), 413)

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    _error(openai_spec, http.post(CHAT, content=chunks()), 413)


# -- agents and tasks: raygent's own successes, OpenAI's errors ------------------------------------


def test_agent_routes(http, openai_spec):
    r = http.get("/v1/agents")
    assert r.status_code == 200 and {a["name"] for a in r.json()["data"]} >= {"echo", "worker"}
    r = http.post("/v1/agents/echo/invoke", json={"message": {"n": 2}, "type": "Ping"})
    assert r.status_code == 200 and r.json()["reply"]["n"] == 2
    events = _events(
        http.post("/v1/agents/echo/invoke", json={"message": {"n": 2}, "type": "Count"})
    )
    assert [e["item"] for e in events] == [0, 1]


def test_an_error_mid_stream_is_an_openai_error_event(http, openai_spec):
    body = {"message": {"n": 3, "fail_at": 1}, "type": "Count"}
    events = _events(http.post("/v1/agents/echo/invoke", json=body))
    assert events[0]["item"] == 0
    openai_spec.check("ErrorResponse", events[-1])
    assert events[-1]["error"]["code"] == "agent_failed"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/agents/nobody/invoke", b'{"message": 1}', 404, "name"),
        ("/v1/agents/echo/invoke", b"{}", 400, "message"),
        ("/v1/agents/echo/invoke", b'{"message": {}, "extra": 1}', 400, "extra"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": 1}, "type": "Ping", "timeout_s": 0}',
         400, "timeout_s"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": Infinity}, "type": "Ping"}', 400,
         "message.n"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": 1E400}, "type": "Ping"}', 400,
         "message.n"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": 1, "n": 2}, "type": "Ping"}', 400,
         "message.n"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": "\xff"}, "type": "Ping"}', 400, None),
        ("/v1/agents/echo/invoke", b'{"message": {"n": 1', 400, None),
        ("/v1/agents/echo/invoke", b'{"message": {"n": 1}}', 422, "type"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": "x"}, "type": "Ping"}', 422, "message.n"),
        ("/v1/agents/echo/invoke", b'{"message": {"m": 1}, "type": "Ping"}', 422, "message.m"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": 1}, "type": "Nope"}', 422, "type"),
        ("/v1/agents/echo/invoke", b'{"message": {"n": 184467440737095516160}, "type": "Ping"}',
         422, None),
        ("/v1/tasks/nowhere", b'{"task": {"n": 1}}', 404, "queue"),
        ("/v1/tasks/jobs", b"{}", 400, "task"),
        ("/v1/tasks/jobs", b"[1]", 400, None),
        ("/v1/tasks/jobs", b'{"task": {"n": NaN}}', 400, "task.n"),
        ("/v1/tasks/jobs", b'{"task": {"n": 1}, "task": {"n": 2}}', 400, "task"),
        ("/v1/tasks/jobs", b'{"task": "\xc3("}', 400, None),
        ("/v1/tasks/jobs", b'{"task": {"n": "one"}}', 422, "task.n"),
        ("/v1/tasks/jobs", b'{"task": {"n": 1, "x": 2}}', 422, "task.x"),
    ],
)  # fmt: skip
def test_agent_and_task_errors(http, openai_spec, path, body, status, param):
    _error(openai_spec, _raw(http, path, body), status, param)


def test_task_submit_get_and_errors(http, openai_spec):
    r = http.post("/v1/tasks/jobs", json={"task": {"n": 21}})
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    r = http.get(f"/v1/tasks/{task_id}", params={"wait_s": 30})
    assert r.status_code == 200 and r.json()["result"] == 42, r.text
    _error(openai_spec, http.get("/v1/tasks/no-such-task"), 404)
    for wait in ("nan", "inf", "-1", "1e400", "abc"):
        _error(openai_spec, http.get(f"/v1/tasks/{task_id}", params={"wait_s": wait}), 400)
