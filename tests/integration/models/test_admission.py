"""Admission control on a real engine: a model at capacity refuses at once, with a Retry-After,
across the Serve hop, and serves again when a slot frees."""

from __future__ import annotations

import os
import time

import pytest

from agents.errors import Overloaded
from runtime.config import AdmissionConfig

from .modelkit import deploy, release, small_model

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tight_model(serve_instance, model_env):
    """One slot and no queue: a second request while one runs is refused."""
    cfg = small_model(load="eager", admission=AdmissionConfig(max_inflight=1, max_queue_wait_s=0))
    d = deploy(serve_instance, "tight", cfg, model_env)
    yield d
    release(serve_instance, d.app)


async def test_a_model_at_capacity_refuses_at_once_and_serves_again_after(tight_model):
    llm = tight_model.client
    running = llm.stream_deltas("The agent", max_tokens=400, temperature=0, ignore_eos=True)
    first = await running.__anext__()  # the one slot is taken now
    assert first.model == "tight"

    for call in (
        lambda: llm.chat(HI, max_tokens=2),
        lambda: llm.prioritized("batch").complete("Hi", max_tokens=2),
    ):
        t0 = time.perf_counter()
        with pytest.raises(Overloaded) as exc:
            await call()
        # Decided on arrival: no engine work, no wait for the running request.
        assert time.perf_counter() - t0 < 5.0
        assert exc.value.model == "tight" and exc.value.retry_after_s >= 1
        assert exc.value.inflight == 1

    rest = [d async for d in running]
    assert rest[-1].finish_reason == "length"
    reply = await llm.chat(HI, max_tokens=2)  # the slot is free again
    assert reply.usage.completion_tokens == 2
    stats = await tight_model.stats()
    assert stats["admission"]["rejected"] == {"interactive": 1, "batch": 1}
    assert stats["admission"]["inflight"] == 0 and stats["admission"]["max_inflight"] == 1


async def test_the_default_limit_is_the_engines_batch_capped_per_cpu_core(main_model):
    stats = await main_model.stats()
    cores = len(os.sched_getaffinity(0))
    expected = min(stats["max_num_seqs"], 16 * cores)
    assert stats["admission"]["max_inflight"] == expected
