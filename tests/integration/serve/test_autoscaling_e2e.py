"""Queue-depth autoscaling and the interactive/batch share of an agent, on real Serve.

The ``crawler`` agent (``ray_test_agents.Crawler``) runs one turn at a time and autoscales
between 1 and 2 replicas on its depth (``runtime.serve.autoscaling``: upscale at once, downscale
after 4 s, a 2 s window).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from runtime.models.client import deployment_name
from runtime.serve.autoscaling import BACKLOG, LOAD
from runtime.serve.options import agent_deployment_name

from .conftest import APP, AUTO, PAIR

pytestmark = pytest.mark.integration

CRAWLER = agent_deployment_name("crawler")


def running_replicas(deployment: str = CRAWLER) -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def wait_for_replicas(n: int, timeout_s: float, deployment: str = CRAWLER) -> float:
    """Seconds until ``deployment`` runs ``n`` replicas (fails the test after ``timeout_s``)."""
    start = time.monotonic()
    while (now := running_replicas(deployment)) != n:
        assert time.monotonic() - start < timeout_s, f"{deployment}: {now} replicas, not {n}"
        time.sleep(0.5)
    return time.monotonic() - start


def test_a_task_backlog_scales_the_agent_out_and_back_in(gateway_url, auth):
    """Tasks are claimed from the queue, never sent through Serve, so Serve's own policy sees
    no ongoing request at all; the backlog the replicas report is what adds the second."""
    wait_for_replicas(1, 60)
    submitted = time.monotonic()
    ids = []
    for i in range(64):
        r = httpx.post(
            f"{gateway_url}/v1/tasks/crawl",
            json={"task": {"tag": f"t{i}", "work_s": 0.25}},
            headers=auth,
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    scaled_out_s = wait_for_replicas(2, 60)
    pids = set()
    for task_id in ids:
        r = httpx.get(f"{gateway_url}/v1/tasks/{task_id}?wait_s=60", headers=auth, timeout=70)
        assert r.json()["state"] == "done", r.text
        pids.add(r.json()["result"]["pid"])
    drained_s = time.monotonic() - submitted
    assert len(pids) == 2  # the new replica took its part of the shared backlog
    scaled_in_s = wait_for_replicas(1, 90)
    print(
        f"64 tasks of 0.25 s (16 s on one replica) done in {drained_s:.1f} s; "
        f"scaled out after {scaled_out_s:.1f} s, back in {scaled_in_s:.1f} s after the last"
    )


def test_interactive_and_batch_calls_share_the_agent_by_the_configured_share(gateway_url, auth):
    """8 interactive and 8 batch callers, each in a closed loop, keep both classes waiting in
    the crawler's mailbox; while both wait, interactive turns get ~0.7 of its one worker
    (``interactive_share``) and batch turns the rest -- neither class starves."""

    async def caller(tag: str, headers: dict[str, str]) -> list[dict]:
        replies = []
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(10):
                r = await client.post(
                    f"{gateway_url}/v1/agents/crawler/invoke",
                    json={"message": {"tag": tag, "work_s": 0.03}, "type": "Turn"},
                    headers=headers,
                )
                assert r.status_code == 200, r.text
                replies.append(r.json()["reply"])
        return replies

    async def run() -> list[dict]:
        batch = auth | {"x-raygent-priority": "batch"}
        callers = [caller("i", auth) for _ in range(8)] + [caller("b", batch) for _ in range(8)]
        return [reply for replies in await asyncio.gather(*callers) for reply in replies]

    replies = asyncio.run(run())
    interactive = contested = 0
    for pid in {r["pid"] for r in replies}:
        order = [r["tag"] for r in sorted(replies, key=lambda r: r["seq"]) if r["pid"] == pid]
        # contested: until one class has had its last turn on this replica
        end = min(max(i for i, t in enumerate(order) if t == tag) for tag in set(order))
        window = order[: end + 1] if len(set(order)) == 2 else []
        interactive += window.count("i")
        contested += len(window)
    share = interactive / contested
    print(f"interactive share of {contested} contested turns: {share:.2f} (configured 0.70)")
    assert contested >= 60
    assert 0.55 <= share <= 0.85, share


def test_replicas_report_their_depth_through_serves_hook(gateway_url):
    """What Serve's controller collects from each replica for the policy: an agent's load and
    backlog, a model deployment's demand (both idle here)."""
    from ray import serve

    agent = serve.get_deployment_handle(CRAWLER, app_name=APP)
    assert agent.record_autoscaling_stats.remote().result(timeout_s=30) == {
        LOAD: 0.0,
        BACKLOG: 0.0,
    }
    model = serve.get_deployment_handle(deployment_name(PAIR), app_name=APP)
    assert model.record_autoscaling_stats.remote().result(timeout_s=30) == {LOAD: 0.0}


def test_a_model_that_sheds_load_scales_out_on_the_demand_it_refused(gateway_url, auth):
    """tiny-auto takes two requests at a time and queues none: Serve's own count never
    passes 2 per replica (under its target of 4), but the refusals count as demand, so a
    second replica starts; once it is warm both answer, and it goes when the load does."""
    from ray import serve

    deployment = deployment_name(AUTO)
    wait_for_replicas(1, 60, deployment)
    outcomes: dict[int, int] = {}

    async def caller(n: int, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            i = 0
            while not stop.is_set():
                i += 1
                r = await client.post(
                    f"{gateway_url}/v1/chat/completions",
                    json={
                        "model": AUTO,
                        "messages": [{"role": "user", "content": f"caller {n} turn {i}"}],
                        "max_tokens": 32,
                    },
                    headers=auth | {"cache-control": "no-store"},
                )
                outcomes[r.status_code] = outcomes.get(r.status_code, 0) + 1
                assert r.status_code in (200, 429), r.text
                if r.status_code == 429:
                    await asyncio.sleep(0.05)

    async def load_until_scaled() -> float:
        stop = asyncio.Event()
        callers = [asyncio.create_task(caller(n, stop)) for n in range(8)]
        start = time.monotonic()
        while running_replicas(deployment) < 2:
            assert time.monotonic() - start < 120, f"not scaled out: {outcomes}"
            await asyncio.sleep(0.5)
        scaled = time.monotonic() - start
        await asyncio.sleep(5)  # both replicas answer for a while
        stop.set()
        await asyncio.gather(*callers)
        return scaled

    scaled_out_s = asyncio.run(load_until_scaled())
    handle = serve.get_deployment_handle(deployment, app_name=APP)
    served = {}
    for _ in range(20):  # each call reaches one replica; 20 reach both
        stats = handle.stats.remote().result(timeout_s=30)
        served[stats["replica"]] = stats["counts"].get("requests", 0)
    assert len(served) == 2 and all(served.values()), served
    assert outcomes.get(429, 0) > 0
    scaled_in_s = wait_for_replicas(1, 90, deployment)
    print(
        f"{AUTO}: second replica running {scaled_out_s:.1f} s into the load; answers "
        f"{outcomes}; requests per replica {sorted(served.values())}; one replica again "
        f"{scaled_in_s:.1f} s after the load stopped"
    )
