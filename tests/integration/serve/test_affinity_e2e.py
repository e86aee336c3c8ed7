"""Session affinity and prefix-aware routing through the real application: ``tiny-pair`` is
the tiny model in a deployment of its own with two ModelServer replicas (real Serve, HAProxy
ingress, real vLLM with its prefix cache). A conversation's later turn must find its earlier
turns in the prefix cache of the replica it reaches -- what OpenAI's
``usage.prompt_tokens_details.cached_tokens`` reports -- which only the router's affinity
makes sure of: by chance, half the turns would reach the other replica.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from runtime.gateway.variants import SESSION_HEADER
from runtime.models import deployment_name

from .conftest import API_KEYS, APP, PAIR

# the first module of the package: its time includes the application's start
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHAT = "/v1/chat/completions"
BLOCK = 128  # vLLM's KV block on a CPU (its default there): only whole blocks are cached
SYSTEM = "You answer in one short sentence and never use lists."


@pytest.fixture(scope="module")
def pair(gateway_url, ray_session):
    """A function giving each ``tiny-pair`` replica's stats (``{replica id: stats}``), called
    once both replicas are warm: while only one is, the router sends everything to it."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment_name(PAIR), app_name=APP)

    def replicas() -> dict[str, dict]:
        seen: dict[str, dict] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            s = handle.stats.remote().result(timeout_s=30)
            if s["ready"]:
                seen[s["replica"]] = s
            if len(seen) == 2:
                return seen
            time.sleep(0.2)
        raise AssertionError(f"both replicas of {PAIR} did not answer ready: {seen}")

    replicas()
    return replicas


def _opening(n: int) -> str:
    """A first question of ~180 tokens (more than a KV block), unique to conversation ``n``
    from its first words (so that no other conversation's blocks match it)."""
    words = " ".join(f"w{n}x{i}" for i in range(30))
    return f"Conversation {uuid.uuid4().hex}: {words}. What do these have in common?"


def _turn(url, auth, messages, session=None, stream=False):
    headers = {**auth, **({SESSION_HEADER: session} if session else {})}
    body = {"model": PAIR, "messages": messages, "max_tokens": 4, "temperature": 0.7}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    r = httpx.post(f"{url}{CHAT}", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line[6:7] == "{"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c["choices"])
    return {"usage": events[-1]["usage"], "choices": [{"message": {"content": text}}]}


@pytest.mark.parametrize("by", ["session", "opening"])
def test_later_turns_find_the_earlier_ones_in_the_prefix_cache(gateway_url, auth, pair, by):
    """Eight two-turn conversations, named by a session header or by their opening messages:
    every second turn reports the whole first turn's prompt (its whole blocks) as cached."""
    before = {r: s["counts"].get("requests", 0) for r, s in pair().items()}
    misses = []
    for n in range(8):
        session = uuid.uuid4().hex if by == "session" else None
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": _opening(n)},
        ]
        first = _turn(gateway_url, auth, messages, session)
        prompt = first["usage"]["prompt_tokens"]
        assert prompt >= BLOCK
        messages += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "Say it again, shorter."},
        ]
        second = _turn(gateway_url, auth, messages, session, stream=n % 2 == 1)
        cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        if cached < prompt // BLOCK * BLOCK:
            misses.append((n, prompt, cached))
    assert not misses, f"second turns that missed their first turn's blocks: {misses}"
    after = {r: s["counts"].get("requests", 0) for r, s in pair().items()}
    served = {r: after[r] - before.get(r, 0) for r in after}
    # 8 conversations: both replicas have some (all on one has odds 1 in 128)
    assert all(n > 0 for n in served.values()), served


def test_a_turn_cached_under_one_tenant_is_not_reused_by_another(gateway_url, pair):
    """The prefix cache is scoped by tenant (``cache_salt``), and so is the conversation's
    name: the same messages from another API key reuse nothing of the first key's."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _opening(99)}]
    one = {"Authorization": f"Bearer {API_KEYS[0]}"}
    two = {"Authorization": f"Bearer {API_KEYS[1]}"}
    first = _turn(gateway_url, one, messages)
    again = _turn(gateway_url, one, messages)
    other = _turn(gateway_url, two, messages)
    prompt = first["usage"]["prompt_tokens"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= prompt // BLOCK * BLOCK
    assert prompt >= BLOCK
    assert other["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_a_refused_prompt_says_why_not_where_ray_raised_it(gateway_url, auth, openai_spec):
    """A deployment's replica refuses an oversized prompt: the 400 names the field and the
    limit, in OpenAI's error body, with nothing of Ray's traceback."""
    body = {"model": PAIR, "max_tokens": 4, "messages": [{"role": "user", "content": "w " * 9000}]}
    r = httpx.post(f"{gateway_url}{CHAT}", json=body, headers=auth, timeout=60)
    assert r.status_code == 400, r.text
    openai_spec.check("ErrorResponse", r.json())
    error = r.json()["error"]
    assert error["param"] == "prompt" and "max_prompt_tokens" in error["message"]
    assert "ray::" not in error["message"] and "Traceback" not in error["message"]
