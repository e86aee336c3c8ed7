"""Eager loading gates readiness; fallback on a failing primary; a hung engine fails the
health check and Serve replaces the replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

from agents.errors import ModelError

from .modelkit import MAIN, deploy, release, small_model, wait_until

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]
PROBE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def eager_model(serve_instance, model_env, main_model):
    """Eager load with warm-up; answers with ``main`` when it fails or is too slow."""
    cfg = small_model(
        load="eager",
        warmup={"requests": 3, "concurrency": 2, "max_tokens": 4},
        fallback=MAIN,
        request_timeout_s=4.0,
        health_check_period_s=2.0,
        health_check_timeout_s=PROBE_TIMEOUT_S,
    )
    d = deploy(serve_instance, "eager", cfg, model_env, fallback=main_model.handle)
    stopped: list[int] = []
    yield d, stopped
    release(serve_instance, d.app)
    for pid in stopped:  # a SIGSTOPped engine the replica did not get to kill
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def broken_models(serve_instance, model_env, main_model):
    """Primaries whose engine fails at load (an engine argument vLLM rejects), with and
    without a fallback."""
    bad = {"engine_args": {"max_model_len": 100_000}}  # longer than the model's 2048
    with_fb = deploy(
        serve_instance,
        "broken",
        small_model(load="lazy", fallback=MAIN, **bad),
        model_env,
        fallback=main_model.handle,
    )
    alone = deploy(serve_instance, "broken-alone", small_model(load="lazy", **bad), model_env)
    yield with_fb, alone
    release(serve_instance, with_fb.app, alone.app)


async def test_eager_replica_is_warm_before_serve_reports_it_running(eager_model):
    d, _ = eager_model
    # serve.run returned, so the replica is RUNNING; no request has been sent yet.
    stats = await d.stats()
    assert stats["state"] == "ready" and stats["counts"]["loads"] == 1
    events = [e for _, e in stats["events"]]
    assert events[:4] == ["replica_started", "load_started", "load_done", "warmup_done"]
    assert not any(e.startswith("request_") for e in events)
    assert stats["warmup_s"] > 0 and stats["load_s"] > 0


async def test_fallback_answers_when_the_primary_fails_to_load(broken_models):
    with_fb, alone = broken_models
    reply = await with_fb.client.chat(HI, max_tokens=3)
    assert reply.model == MAIN  # says who answered
    deltas = [d async for d in with_fb.client.stream_deltas(HI, max_tokens=3)]
    assert deltas and {d.model for d in deltas} == {MAIN}
    stats = await with_fb.stats()
    assert stats["state"] == "failed" and stats["counts"]["fallbacks"] == 2
    assert "max_model_len" in stats["load_error"]
    with pytest.raises(ModelError, match="failed to load") as raised:
        await alone.client.chat(HI, max_tokens=3)
    assert raised.value.retryable


async def test_hung_engine_fails_health_check_falls_back_and_is_replaced(eager_model):
    d, stopped = eager_model
    before = await d.stats()
    pid = before["engine_pids"][0]
    os.kill(pid, signal.SIGSTOP)  # alive, but makes no progress
    stopped.append(pid)

    # The health check asks for one token and gives up after its timeout. It must be probing
    # before the request below arrives: a check that finds requests in flight within
    # health_check_timeout_s of the engine's last token (a passed probe's included) takes that
    # as progress and does not probe, so with the request first it could pass (CI saw this).
    checking = asyncio.ensure_future(d.handle.check_health.remote())

    async def probing():
        return (await d.stats())["probing"]

    await wait_until(probing, PROBE_TIMEOUT_S, "the health probe to start")
    # A request in flight on the hung engine times out and the fallback answers.
    chatting = asyncio.create_task(d.client.chat(HI, max_tokens=3))
    with pytest.raises(ModelError, match="health_check_timeout_s"):
        await checking
    reply = await chatting
    assert reply.model == MAIN

    async def replaced():
        with contextlib.suppress(Exception):
            s = await d.stats()
            if s["replica"] != before["replica"] and s["state"] == "ready":
                return s
        return None

    stats = await wait_until(replaced, 240, "Serve to replace the hung replica")
    assert stats["engine_pids"] and pid not in stats["engine_pids"]
    reply = await d.client.chat(HI, max_tokens=3)
    assert reply.model == "eager"
