"""The OpenAI-compatible API end to end: the official ``openai`` client against real Serve,
real vLLM (``builtin:tiny``) and agents as Serve deployments."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import API_KEYS

pytestmark = pytest.mark.integration


@pytest.fixture
def client(gateway_url):
    c = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=API_KEYS[0], max_retries=0)
    yield c
    c.close()


def test_models_lists_models_and_agents(client):
    ids = {m.id for m in client.models.list()}
    assert {"default", "agent:assistant", "agent:echo"} <= ids


def test_chat_non_stream(client):
    r = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Say something."}],
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.object == "chat.completion"
    assert r.model == "default"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Stream a few words."}],
        max_tokens=6,
        temperature=0.7,  # not deterministic: streamed live, never from the cache
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finish == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_text_completion_stream_and_plain(client):
    plain = client.completions.create(
        model="default",
        prompt="Once upon a time",
        max_tokens=5,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert plain.object == "text_completion" and plain.choices[0].text
    assert plain.usage.completion_tokens == 5
    streamed = client.completions.create(
        model="default",
        prompt="Once upon a time",
        max_tokens=5,
        temperature=0.5,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    parts = [c.choices[0].text for c in streamed if c.choices]
    assert "".join(parts)


def test_agent_answers_a_chat_in_the_model_schema(client):
    r = client.chat.completions.create(
        model="agent:assistant",
        messages=[{"role": "user", "content": "Hello, assistant."}],
        max_tokens=4,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.choices[0].message.content
    assert r.usage.completion_tokens == 4  # the agent returned the model's ModelReply


def test_agent_chat_stream(client):
    stream = client.chat.completions.create(
        model="agent:assistant",
        messages=[{"role": "user", "content": "Stream, assistant."}],
        max_tokens=4,
        temperature=0.9,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(contents)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_streaming_agent_streams_chunk_by_chunk_with_its_usage(client):
    text = "one two three four five six"
    stream = client.chat.completions.create(
        model="agent:words",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"Cache-Control": "no-store"},
    )
    chunks = list(stream)
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(contents) == text
    assert len(contents) > 1  # the agent's words came as they were yielded (0.05 s apart)
    assert chunks[-1].usage.completion_tokens == 6  # from the reply the agent yielded last
    whole = client.chat.completions.create(
        model="agent:words", messages=[{"role": "user", "content": text}]
    )
    assert whole.choices[0].message.content == text and whole.usage.prompt_tokens == 6


def test_client_errors_are_typed(client, gateway_url):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "nope" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], max_tokens=100_000
        )
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], temperature=-1
        )
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], logprobs=True
        )
    assert e.value.body["param"] == "logprobs"
    bad = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    bad.close()


def test_an_agent_without_a_chat_handler_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="agent:echo", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
    assert "ChatRequest" in str(e.value)


def test_a_prompt_over_the_model_context_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="default", prompt="word " * 5000, max_tokens=4)
    assert e.value.body["param"] == "prompt"


def test_http_errors_name_the_field(gateway_url, auth):
    url = f"{gateway_url}/v1/chat/completions"
    r = httpx.post(url, content=b"{not json", headers={**auth, "content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "default", "messages": "hi"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages")
    r = httpx.post(
        url,
        json={"model": "default", "messages": [{"role": "wizard", "content": "x"}]},
        headers=auth,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.role"
    big = {"model": "default", "messages": [{"role": "user", "content": "x" * 100_000}]}
    r = httpx.post(url, json=big, headers=auth)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "default", "messages": []})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    # the gateway keeps serving after all of it
    assert httpx.get(f"{gateway_url}/healthz").status_code == 200


def test_probes_and_metrics(gateway_url, auth):
    assert httpx.get(f"{gateway_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway_url}/readyz")  # no key needed for probes
    assert ready.status_code == 200 and ready.json()["models"]["default"] == "ready"
    assert httpx.get(f"{gateway_url}/metrics").status_code == 401
    body = httpx.get(f"{gateway_url}/metrics", headers=auth).text
    for name in (
        "raygent_request_duration_seconds_bucket",
        "raygent_cache_events_total",
        "raygent_requests_in_flight",
        "raygent_queue_depth",
    ):
        assert name in body
    spec = httpx.get(f"{gateway_url}/openapi.json", headers=auth).json()
    assert "/v1/chat/completions" in spec["paths"]
