"""Tools and structured output end to end: real Serve, the gateway's vLLM engine of
``builtin:tiny`` (random weights, Hermes chat template, ``hermes`` tool parser), the Redis
response cache -- and the official ``openai`` client.

The model's words are noise, but what the constraints promise is testable: JSON that validates
against the request's schema, a forced call of the named tool whose arguments validate against
its parameters, ``required`` calls of known tools. Schemas use enums, booleans and bounded
integers so that a random model finishes them well within ``max_tokens`` (the app's limit is
64; builtin:tiny writes compact JSON). Every body and chunk is checked against OpenAI's schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from .conftest import API_KEYS

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
CHUNK = "CreateChatCompletionStreamResponse"
MAX_TOKENS = 64
LAMP_PARAMS = {
    "type": "object",
    "properties": {"on": {"type": "boolean"}},
    "required": ["on"],
    "additionalProperties": False,
}
ROOM_PARAMS = {
    "type": "object",
    "properties": {"room": {"enum": ["hall", "kitchen"]}},
    "required": ["room"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "lamp", "parameters": LAMP_PARAMS}},
    {"type": "function", "function": {"name": "clean", "parameters": ROOM_PARAMS}},
]
PARAMS = {"lamp": LAMP_PARAMS, "clean": ROOM_PARAMS}
NAMED = {"type": "function", "function": {"name": "lamp"}}
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "level": {"type": "integer", "minimum": 0, "maximum": 9},
        "mood": {"enum": ["calm", "busy"]},
    },
    "required": ["ok", "level", "mood"],
    "additionalProperties": False,
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "status", "schema": SCHEMA}}
TURNS = [{"role": "user", "content": "Turn the lamp on"}]


@pytest.fixture
def http(gateway_url, auth) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, headers=auth, timeout=120) as c:
        yield c


def _chat(http: httpx.Client, openai_spec, **body: Any) -> dict[str, Any]:
    body = {"model": "default", "messages": TURNS, "max_tokens": MAX_TOKENS, **body}
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    openai_spec.check("CreateChatCompletionResponse", r.json())
    return r.json()


def _stream(http: httpx.Client, openai_spec, **body: Any) -> list[dict[str, Any]]:
    body = {"model": "default", "messages": TURNS, "max_tokens": MAX_TOKENS, **body}
    r = http.post(CHAT, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]", r.text[-300:]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    for c in chunks:
        assert "error" not in c, c
        openai_spec.check(CHUNK, c)
    return chunks


def _reassemble(chunks: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], str | None]:
    """A stream's content, calls and finish reason, put together as the openai client does."""
    content, calls, reason = "", {}, None
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for piece in delta.get("tool_calls") or []:
                call = calls.setdefault(piece["index"], {"id": None, "name": None, "arguments": ""})
                fn = piece.get("function") or {}
                if "id" in piece:
                    assert call["id"] is None, "a call is opened once"
                    call["id"], call["name"] = piece["id"], fn["name"]
                    assert piece["type"] == "function"
                call["arguments"] += fn.get("arguments") or ""
            reason = choice["finish_reason"] or reason
    return content, [calls[k] for k in sorted(calls)], reason


def _check_call(name: str, arguments: str) -> None:
    assert name in PARAMS, name
    jsonschema.validate(json.loads(arguments), PARAMS[name])


# -- response_format / structured_outputs ---------------------------------------------------------


def test_json_schema_answer_validates(http, openai_spec):
    body = _chat(http, openai_spec, response_format=JSON_SCHEMA, seed=3)
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop", body
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_json_schema_answer_streams_and_validates(http, openai_spec):
    content, calls, reason = _reassemble(
        _stream(http, openai_spec, response_format=JSON_SCHEMA, seed=4)
    )
    assert (calls, reason) == ([], "stop")
    jsonschema.validate(json.loads(content), SCHEMA)


def test_json_object_and_vllm_structured_outputs(http, openai_spec):
    body = _chat(http, openai_spec, response_format={"type": "json_object"}, seed=1)
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)
    body = _chat(http, openai_spec, structured_outputs={"choice": ["yes", "no"]}, seed=1)
    assert body["choices"][0]["message"]["content"] in ("yes", "no")
    r = http.post(
        "/v1/completions",
        json={"model": "default", "prompt": "Id:", "structured_outputs": {"regex": "[a-c]{3}"}},
    )
    assert r.status_code == 200, r.text
    openai_spec.check("CreateCompletionResponse", r.json())
    assert len(r.json()["choices"][0]["text"]) == 3


# -- tool_choice ----------------------------------------------------------------------------------


def test_named_tool_choice_calls_that_tool(http, openai_spec):
    body = _chat(http, openai_spec, tools=TOOLS, tool_choice=NAMED, seed=5)
    (choice,) = body["choices"]
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "lamp"
    _check_call("lamp", call["function"]["arguments"])
    assert choice["finish_reason"] == "stop"  # a forced call, as vLLM and OpenAI report it


def test_named_tool_choice_streams_arguments_incrementally(http, openai_spec):
    chunks = _stream(http, openai_spec, tools=TOOLS, tool_choice=NAMED, seed=6)
    content, calls, reason = _reassemble(chunks)
    assert content == "" and reason == "stop"
    (call,) = calls
    assert call["name"] == "lamp" and call["id"]
    _check_call("lamp", call["arguments"])
    pieces = [p for c in chunks for ch in c["choices"] for p in ch["delta"].get("tool_calls", [])]
    assert len(pieces) > 1, "the arguments come in fragments, not whole"
    assert all("id" not in p and set(p["function"]) == {"arguments"} for p in pieces[1:])


@pytest.mark.parametrize("stream", [False, True])
def test_required_tool_choice_calls_known_tools(http, openai_spec, stream):
    params = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False, "seed": 7}
    if stream:
        content, calls, reason = _reassemble(_stream(http, openai_spec, **params))
    else:
        (choice,) = _chat(http, openai_spec, **params)["choices"]
        calls = [{"id": c["id"], **c["function"]} for c in choice["message"]["tool_calls"] or []]
        reason = choice["finish_reason"]
    assert reason == "tool_calls", calls
    (call,) = calls  # parallel_tool_calls: false -> one
    assert call["id"]
    _check_call(call["name"], call["arguments"])


def test_auto_tool_choice_and_the_tool_loop_turns(http, openai_spec):
    # builtin:tiny has the hermes parser: auto is served (its noise rarely holds a call)
    body = _chat(http, openai_spec, tools=TOOLS, tool_choice="auto", max_tokens=8)
    assert body["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    loop = [
        *TURNS,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call-1",
                    "type": "function",
                    "function": {"name": "lamp", "arguments": '{"on": true}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call-1", "content": "the lamp is on"},
    ]
    body = _chat(http, openai_spec, messages=loop, tools=TOOLS, tool_choice="none", max_tokens=4)
    assert body["usage"]["prompt_tokens"] > 100  # the tools and the turns reached the template
    _stream(http, openai_spec, messages=loop, tools=TOOLS, max_tokens=4)


# -- the cache ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"tools": TOOLS, "tool_choice": NAMED},
        {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
        {"response_format": JSON_SCHEMA},
    ],
    ids=["named", "required", "json_schema"],
)
def test_a_cached_answer_replays_identically(http, openai_spec, params):
    marker = {
        "role": "system",
        "content": f"cache test {sorted(params)} {params.get('tool_choice')}",
    }
    body = {"messages": [marker, *TURNS], "temperature": 0, **params}
    first = http.post(CHAT, json={"model": "default", "max_tokens": MAX_TOKENS, **body})
    assert first.status_code == 200, first.text
    again = http.post(CHAT, json={"model": "default", "max_tokens": MAX_TOKENS, **body})
    assert again.headers["x-raygent-cache"] == "hit"
    openai_spec.check("CreateChatCompletionResponse", again.json())
    assert again.json()["choices"] == first.json()["choices"]  # call ids too
    streamed = http.post(
        CHAT, json={"model": "default", "max_tokens": MAX_TOKENS, "stream": True, **body}
    )
    assert streamed.headers["x-raygent-cache"] == "hit"
    chunks = [
        json.loads(e.removeprefix("data: "))
        for e in streamed.text.split("\n\n")
        if e.strip() and e != "data: [DONE]"
    ]
    for c in chunks:
        openai_spec.check(CHUNK, c)
    content, calls, reason = _reassemble(chunks)
    (choice,) = first.json()["choices"]
    assert reason == choice["finish_reason"]
    assert content == (choice["message"]["content"] or "")
    expected = [{"id": c["id"], **c["function"]} for c in choice["message"].get("tool_calls") or []]
    assert calls == expected


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name"),
        ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
        ({"tools": TOOLS, "n": 2}, "n"),
        ({"response_format": {"type": "json_schema",
                              "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
         "response_format.json_schema.schema"),
        ({"structured_outputs": {"regex": "(["}}, "structured_outputs.regex"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"x": {"type": "nonsense"}}}}}],
          "tool_choice": {"type": "function", "function": {"name": "f"}}},
         "tools[0].function.parameters"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
def test_bad_tools_and_formats_are_400_naming_the_field(http, openai_spec, extra, param, stream):
    body = {"model": "default", "messages": TURNS, "max_tokens": 4, "stream": stream, **extra}
    r = http.post(CHAT, json=body)
    assert r.status_code == 400, r.text
    openai_spec.check("ErrorResponse", r.json())
    assert r.json()["error"]["param"] == param, r.json()


# -- the official client ---------------------------------------------------------------------------


@pytest.fixture
def client(gateway_url):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=API_KEYS[0], timeout=120) as c:
        yield c


def test_openai_client_tools(client):
    r = client.chat.completions.create(
        model="default",
        messages=TURNS,
        tools=TOOLS,
        tool_choice=NAMED,
        max_tokens=MAX_TOKENS,
        seed=8,
    )
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "lamp"
    _check_call("lamp", call.function.arguments)
    # the answer goes back as the next turn, with the tool's result
    follow = client.chat.completions.create(
        model="default",
        messages=[
            *TURNS,
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "on"},
        ],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=MAX_TOKENS,
        seed=8,
    )
    (call,) = follow.choices[0].message.tool_calls
    _check_call(call.function.name, call.function.arguments)


def test_openai_client_streams_tools(client):
    stream = client.chat.completions.create(
        model="default",
        messages=TURNS,
        tools=TOOLS,
        tool_choice=NAMED,
        max_tokens=MAX_TOKENS,
        seed=9,
        stream=True,
    )
    args, names = "", []
    for chunk in stream:
        for piece in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            args += piece.function.arguments or ""
            if piece.function.name:
                names.append(piece.function.name)
    assert names == ["lamp"]
    _check_call("lamp", args)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_json_schema(client, stream):
    kwargs = {"model": "default", "messages": TURNS, "max_tokens": MAX_TOKENS, "seed": 10}
    if stream:
        chunks = client.chat.completions.create(response_format=JSON_SCHEMA, stream=True, **kwargs)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        r = client.chat.completions.create(response_format=JSON_SCHEMA, **kwargs)
        text = r.choices[0].message.content
    jsonschema.validate(json.loads(text), SCHEMA)
