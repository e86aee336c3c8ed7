"""What the gateway answers on success has every field OpenAI's spec requires: rendered bodies
and stream chunks (:mod:`runtime.gateway.openai_format`), and the same through the real routes
(a live stream, a cached replay, the model list), checked against the official schemas."""

from __future__ import annotations

import json

import pytest

from agents.model import ModelReply, Usage
from runtime.gateway.openai_format import Completed, StreamFormat, render

from .conftest import WORDS, sse_data

CHAT_CHUNK = "CreateChatCompletionStreamResponse"


def _chunks(events: list[bytes]) -> list[dict]:
    out = []
    for e in events:
        assert e.startswith(b"data: ") and e.endswith(b"\n\n")
        if e != b"data: [DONE]\n\n":
            out.append(json.loads(e[len(b"data: ") :]))
    return out


@pytest.mark.parametrize("reasons", [["stop"], ["length"], ["stop", "length", "stop"]])
def test_render_chat(openai_spec, reasons):
    done = Completed("chat", "default", [f"text {i}" for i in range(len(reasons))], reasons)
    body = render(done)
    openai_spec.check("CreateChatCompletionResponse", body)
    assert all(c["message"]["refusal"] is None for c in body["choices"])


@pytest.mark.parametrize("reasons", [["stop"], ["length", "stop"]])
def test_render_text(openai_spec, reasons):
    done = Completed("text", "default", ["a"] * len(reasons), reasons, Usage(3, 4, 2))
    body = render(done)
    openai_spec.check("CreateCompletionResponse", body)
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


def test_render_from_a_model_reply(openai_spec):
    reply = ModelReply("a", "default", "length", Usage(1, 2), ("a", "b"))
    openai_spec.check("CreateChatCompletionResponse", render(Completed.from_reply("chat", reply)))
    openai_spec.check("CreateCompletionResponse", render(Completed.from_reply("text", reply)))


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_chunks(openai_spec, include_usage):
    fmt = StreamFormat("chat", "default", include_usage)
    events = [
        fmt.delta(0, "Hel"),
        fmt.delta(0, "lo"),
        fmt.delta(1, "Hi"),
        fmt.delta(0, "", "stop"),
        fmt.delta(1, "", "length"),
        fmt.usage(Usage(5, 3)),
    ]
    chunks = _chunks([e for e in events if e])
    for chunk in chunks:
        openai_spec.check(CHAT_CHUNK, chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 8
        assert all(c["usage"] is None for c in chunks[:-1])  # OpenAI's null until the last
    else:
        assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("include_usage", [False, True])
def test_text_stream_chunks(openai_spec, include_usage):
    fmt = StreamFormat("text", "default", include_usage)
    events = [fmt.delta(0, "Once"), fmt.delta(0, " upon", "length"), fmt.usage(Usage(2, 2))]
    chunks = _chunks([e for e in events if e])
    for chunk in chunks:
        openai_spec.check(openai_spec.TEXT_CHUNK, chunk)
    # the chunks that end a choice, and the usage chunk, are CreateCompletionResponse proper
    for chunk in chunks[1:]:
        openai_spec.check("CreateCompletionResponse", chunk)
    assert ("usage" in chunks[-1]) == include_usage


@pytest.mark.parametrize("kind", ["chat", "text"])
def test_replayed_stream(openai_spec, kind):
    done = Completed(kind, "default", ["one", "two"], ["stop", "length"], Usage(1, 2))
    chunks = _chunks(StreamFormat(kind, "default", True).replay(done))
    name = CHAT_CHUNK if kind == "chat" else openai_spec.TEXT_CHUNK
    for chunk in chunks:
        openai_spec.check(name, chunk)


# -- through the routes -------------------------------------------------------------------------


def test_models_list(client, auth, openai_spec):
    r = client.get("/v1/models", headers=auth)
    assert r.status_code == 200
    openai_spec.check("ListModelsResponse", r.json())
    for model in r.json()["data"]:
        openai_spec.check("Model", model)


@pytest.mark.parametrize("temperature", [0.7, 0])  # live; then cacheable (a miss, then a hit)
def test_chat_routes(client, auth, openai_spec, temperature):
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": temperature,
        "max_tokens": 4,
    }
    for _ in range(2):
        r = client.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200, r.text
        openai_spec.check("CreateChatCompletionResponse", r.json())
        assert r.json()["choices"][0]["message"]["content"] == "".join(WORDS[:4])
        stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
        r = client.post("/v1/chat/completions", json=stream, headers=auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = sse_data(r.text)
        for chunk in chunks:
            openai_spec.check(CHAT_CHUNK, chunk)
        assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_text_routes(client, auth, openai_spec):
    body = {"model": "default", "prompt": "Once", "max_tokens": 3, "n": 2, "temperature": 1}
    r = client.post("/v1/completions", json=body, headers=auth)
    assert r.status_code == 200, r.text
    openai_spec.check("CreateCompletionResponse", r.json())
    assert [c["finish_reason"] for c in r.json()["choices"]] == ["length", "length"]
    r = client.post("/v1/completions", json={**body, "stream": True}, headers=auth)
    assert r.status_code == 200
    for chunk in sse_data(r.text):
        openai_spec.check(openai_spec.TEXT_CHUNK, chunk)
