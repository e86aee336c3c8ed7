"""Durable tasks on Redis Streams under RayRuntime: a worker killed mid-task loses no task."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest
from ray_test_agents import Job, SlowWorker

from agents import TaskState
from runtime.config import AgentConfig, QueuesConfig, RaygentConfig
from tests import polling

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def until(predicate):
    return polling.until(predicate, timeout_s=30.0)


async def test_worker_killed_mid_task_is_redelivered_and_completed_once(ray_session):
    import redis

    from runtime.cluster.ray_runtime import RayRuntime

    base = os.environ.get("REDIS_URL")
    if not base:
        pytest.skip("REDIS_URL not set: run through `make test`, which starts redis-server")
    url = base.rsplit("/", 1)[0] + "/9"  # a database of this test's own, emptied around it
    redis.Redis.from_url(url).flushdb()
    cfg = RaygentConfig(
        redis_url=url,
        agents=[
            AgentConfig(
                import_path=f"{SlowWorker.__module__}:SlowWorker", resources={"num_cpus": 0.1}
            )
        ],
        queues=QueuesConfig(visibility_timeout_s=1.0, max_attempts=3),
    )
    async with RayRuntime([SlowWorker], cfg, name=f"kill-{uuid.uuid4().hex[:6]}") as rt:
        n = int(uuid.uuid4().int % 1_000_000)
        task_id = await rt.submit("slow", Job(n))
        key = await until(
            lambda: next((k for k in rt.state if k.startswith(f"running:{n}:")), None)
        )
        first_pid = int(key.rsplit(":", 1)[1])
        os.kill(first_pid, signal.SIGKILL)  # mid-task: claimed, not acked
        await rt.state.set("fast", True)
        info = await rt.wait_task(task_id, timeout_s=60)
        assert info.state is TaskState.DONE
        assert info.attempts == 2  # the killed run counted; the second one finished
        assert info.result["n"] == n and info.result["pid"] != first_pid
        await until(lambda: rt.state.get(f"done:{n}") == 1)
        await asyncio.sleep(1.5)  # past another visibility timeout: nothing runs it again
        assert rt.state.get(f"done:{n}") == 1
    redis.Redis.from_url(url).flushdb()
