"""The response cache through the gateway: hits, tenants, policy, replay, single-flight, and a
Redis that stops answering."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from .conftest import API_KEYS

pytestmark = pytest.mark.integration


def chat(content: str, **extra) -> dict:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 6,
        "temperature": 0,
        "ignore_eos": True,
    }
    body.update(extra)
    return body


def key(i: int) -> dict:
    return {"Authorization": f"Bearer {API_KEYS[i]}"}


def post(url, body, headers):
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def sse_text(response: httpx.Response) -> str:
    import json

    out = []
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            for c in chunk.get("choices", []):
                out.append(c["delta"].get("content") or "")
    return "".join(out)


def test_second_identical_request_is_a_hit_with_identical_content(gateway_url):
    body = chat(f"cache me {uuid.uuid4()}")
    first = post(gateway_url, body, key(0))
    second = post(gateway_url, body, key(0))
    assert first.headers["x-raygent-cache"] == "miss"
    assert second.headers["x-raygent-cache"] == "hit"
    assert first.json()["choices"] == second.json()["choices"]
    assert first.json()["usage"] == second.json()["usage"]
    assert first.json()["id"] != second.json()["id"]  # rendered afresh


def test_another_tenant_does_not_share_entries(gateway_url):
    body = chat(f"tenant {uuid.uuid4()}")
    assert post(gateway_url, body, key(0)).headers["x-raygent-cache"] == "miss"
    assert post(gateway_url, body, key(1)).headers["x-raygent-cache"] == "miss"
    assert post(gateway_url, body, key(1)).headers["x-raygent-cache"] == "hit"


def test_policy_and_cache_control(gateway_url):
    sampled = chat(f"sampled {uuid.uuid4()}", temperature=0.8)
    assert post(gateway_url, sampled, key(0)).headers["x-raygent-cache"] == "bypass"
    seeded = chat(f"seeded {uuid.uuid4()}", temperature=0.8, seed=7)
    assert post(gateway_url, seeded, key(0)).headers["x-raygent-cache"] == "miss"
    assert post(gateway_url, seeded, key(0)).headers["x-raygent-cache"] == "hit"
    body = chat(f"no-store {uuid.uuid4()}")
    no_store = {**key(0), "Cache-Control": "no-store"}
    assert post(gateway_url, body, no_store).headers["x-raygent-cache"] == "bypass"
    assert post(gateway_url, body, key(0)).headers["x-raygent-cache"] == "miss"
    # no-cache: not read, but the fresh answer is stored
    assert (
        post(gateway_url, body, {**key(0), "Cache-Control": "no-cache"}).headers["x-raygent-cache"]
        == "bypass"
    )
    assert post(gateway_url, body, key(0)).headers["x-raygent-cache"] == "hit"


def test_a_stream_request_replays_a_cached_answer_as_sse(gateway_url):
    body = chat(f"replay {uuid.uuid4()}")
    plain = post(gateway_url, body, key(0))
    assert plain.headers["x-raygent-cache"] == "miss"
    streamed = post(gateway_url, {**body, "stream": True}, key(0))
    assert streamed.headers["x-raygent-cache"] == "hit"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert sse_text(streamed) == plain.json()["choices"][0]["message"]["content"]


def test_a_streamed_miss_is_cached_for_the_next_request(gateway_url):
    body = chat(f"stream first {uuid.uuid4()}", stream=True)
    first = post(gateway_url, body, key(0))
    assert first.headers["x-raygent-cache"] == "miss"
    again = post(gateway_url, body, key(0))
    assert again.headers["x-raygent-cache"] == "hit"
    assert sse_text(again) == sse_text(first)


def test_a_streaming_agent_answer_is_cached_whole_and_replayed(gateway_url):
    text = f"words to cache {uuid.uuid4().hex[:8]}"
    body = chat(text, model="agent:words", stream=True)
    first = post(gateway_url, body, key(0))
    assert first.headers["x-raygent-cache"] == "miss" and sse_text(first) == text
    again = post(gateway_url, body, key(0))
    assert again.headers["x-raygent-cache"] == "hit" and sse_text(again) == text
    plain = post(gateway_url, {**body, "stream": False}, key(0))  # one entry serves both forms
    assert plain.headers["x-raygent-cache"] == "hit"
    assert plain.json()["choices"][0]["message"]["content"] == text
    assert plain.json()["usage"]["completion_tokens"] == len(text.split())


def test_errors_are_not_cached(gateway_url):
    body = {
        "model": "agent:flaky",
        "messages": [{"role": "user", "content": f"flaky {uuid.uuid4()}"}],
        "temperature": 0,
    }
    failed = post(gateway_url, body, key(0))
    assert failed.status_code == 502 and "not yet" in failed.json()["error"]["message"]
    # shared state reaches every replica through the registry: flip the switch via echo
    invoke = httpx.post(
        f"{gateway_url}/v1/agents/echo/invoke",
        json={"message": {"flaky_ok": True}, "type": "dict"},
        headers=key(0),
        timeout=30,
    )
    assert invoke.status_code == 200, invoke.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ok = post(gateway_url, body, key(0))
        if ok.status_code == 200:
            break
        time.sleep(0.2)
    assert ok.status_code == 200 and ok.headers["x-raygent-cache"] == "miss"
    assert post(gateway_url, body, key(0)).headers["x-raygent-cache"] == "hit"


async def test_single_flight_twenty_identical_misses_call_the_model_once(gateway_url, model_stats):
    body = chat(f"single flight {uuid.uuid4()}", max_tokens=16)
    before = (await asyncio.to_thread(model_stats))["counts"].get("requests", 0)
    async with httpx.AsyncClient(timeout=60) as c:
        rs = await asyncio.gather(
            *(
                c.post(f"{gateway_url}/v1/chat/completions", json=body, headers=key(0))
                for _ in range(20)
            )
        )
    assert all(r.status_code == 200 for r in rs)
    after = (await asyncio.to_thread(model_stats))["counts"].get("requests", 0)
    assert after - before == 1
    statuses = sorted(r.headers["x-raygent-cache"] for r in rs)
    assert statuses.count("miss") == 1 and statuses.count("hit") == 19
    assert len({r.json()["choices"][0]["message"]["content"] for r in rs}) == 1


def test_redis_hung_or_down_never_fails_a_request(gateway_url, cache_redis):
    try:
        cache_redis.pause()  # hung: connections open, nothing answers
        for i in range(4):  # the breaker opens within a few requests
            t0 = time.monotonic()
            r = post(gateway_url, chat(f"hung {i} {uuid.uuid4()}"), key(0))
            assert r.status_code == 200
            assert time.monotonic() - t0 < 10
            assert r.headers["x-raygent-cache"] in ("bypass", "miss")
        cache_redis.stop()  # down: connection refused
        r = post(gateway_url, chat(f"down {uuid.uuid4()}"), key(0))
        assert r.status_code == 200
        metrics = httpx.get(f"{gateway_url}/metrics", headers=key(0)).text
        assert "raygent_cache_backend_errors_total" in metrics
    finally:
        cache_redis.stop()
        cache_redis.start()
    # recovery: after the breaker's cool-down the cache works again
    body = chat(f"recovered {uuid.uuid4()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        post(gateway_url, body, key(0))
        if post(gateway_url, body, key(0)).headers["x-raygent-cache"] == "hit":
            break
        time.sleep(1)
    else:
        pytest.fail("the cache did not recover after Redis came back")
