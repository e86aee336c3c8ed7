"""Lazy loading: single-flight first load, idle unload and lazy reload, and a dead engine."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from agents.errors import ModelError

from .modelkit import alive, deploy, release, small_model, wait_until

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]
IDLE_S = 3.0


@pytest.fixture(scope="module")
def lazy_model(serve_instance, model_env):
    # The first requests wait for the whole load: allow for a busy machine.
    cfg = small_model(load="lazy", idle_unload_s=IDLE_S, request_timeout_s=180.0)
    d = deploy(serve_instance, "lazy", cfg, model_env)
    yield d
    release(serve_instance, d.app)


async def test_lazy_replica_loads_once_for_concurrent_first_requests(lazy_model):
    stats = await lazy_model.stats()
    assert stats["state"] == "unloaded" and stats["counts"].get("loads", 0) == 0
    assert "engine_pids" not in stats  # no engine until a request arrives
    routing = await lazy_model.handle.record_routing_stats.remote()
    assert routing == {"ready": False, "on_demand": True}

    replies = await asyncio.gather(
        *(lazy_model.client.chat(HI, max_tokens=3, seed=i) for i in range(4))
    )
    assert [r.model for r in replies] == ["lazy"] * 4
    stats = await lazy_model.stats()
    assert stats["counts"]["loads"] == 1  # four first requests, one load
    arrived = [e for _, e in stats["events"] if e.startswith("request_arrived:")]
    assert len(arrived) == 4 and "request_arrived:ready" not in arrived


async def test_engine_host_setup_ran_before_the_replica_was_built(lazy_model):
    # Ray ran engine_host_setup as the worker process started: priority and vLLM's import
    # begin before Serve builds the replica, not after its constructor.
    stats = await lazy_model.stats()
    started = next(t for t, e in stats["events"] if e == "replica_started")
    assert stats["engine_host_setup_at"] is not None
    assert stats["engine_host_setup_at"] <= started


async def test_idle_engine_is_unloaded_then_reloaded_on_demand(lazy_model):
    await lazy_model.client.chat(HI, max_tokens=2)  # loaded (by this or the previous test)
    pids = (await lazy_model.stats())["engine_pids"]
    assert pids
    stats = await lazy_model.handle.wait_for_state.remote("unloaded", 60)
    assert stats["counts"]["unloads"] >= 1 and "engine_pids" not in stats
    loads = stats["counts"]["loads"]

    async def engine_gone():
        return not any(alive(p) for p in pids)

    await wait_until(engine_gone, 60, f"engine processes {pids} to exit after unload")

    reply = await lazy_model.client.chat(HI, max_tokens=2)
    assert reply.model == "lazy"
    stats = await lazy_model.stats()
    assert stats["counts"]["loads"] == loads + 1 and stats["state"] == "ready"
    assert stats["engine_pids"] and set(stats["engine_pids"]).isdisjoint(pids)


async def test_dead_engine_fails_requests_retryably_and_fails_the_health_check(lazy_model):
    await lazy_model.client.chat(HI, max_tokens=2)
    pid = (await lazy_model.stats())["engine_pids"][0]
    os.kill(pid, signal.SIGKILL)  # the engine dies under a loaded replica

    async def chat_until_error():
        for _ in range(50):  # the engine's death shows within a request or two
            try:
                await lazy_model.client.chat(HI, max_tokens=2)
            except ModelError as exc:
                return exc
        return None

    error = await chat_until_error()
    assert isinstance(error, ModelError) and error.retryable
    assert "died" in str(error) or "dead" in str(error)
    with pytest.raises(ModelError, match="dead"):
        await lazy_model.handle.check_health.remote()
