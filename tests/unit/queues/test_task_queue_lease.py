"""The shared in-process queue (``TaskQueueActor``) leases claims: a worker that died holding a
task (or whose claim outlived it) does not lose the task."""

from __future__ import annotations

import asyncio

import pytest

from agents import codec
from agents.runtime_api import TaskState
from agents.tracing import TraceContext
from runtime.cluster.registry import TaskQueueActor


@pytest.fixture
async def queues():
    made = []

    def make(**kw):
        made.append(TaskQueueActor(max_pending=10, **kw))
        return made[-1]

    yield make
    for q in made:
        await q.close()


async def test_an_unacked_claim_goes_back_to_the_queue_after_the_lease(queues):
    q = queues(max_attempts=3, visibility_timeout_s=0.2)
    task_id = await q.put("jobs", b"payload", TraceContext.new_root().traceparent)
    first = await q.claim("jobs", "dead-worker")
    assert first[0] == task_id and first[3] == 1
    again = await asyncio.wait_for(q.claim("jobs", "new-worker"), 5)  # redelivered
    assert again[0] == task_id and again[3] == 2
    await q.ack(
        first[0], codec.encode("late"), first[3]
    )  # the old lease is gone: a late ack is ignored ...
    assert (await q.info(task_id)).state == TaskState.RUNNING
    await q.ack(again[0], codec.encode("done"), again[3])  # ... but not the current holder's
    info = await q.info(task_id)
    assert info.state == TaskState.DONE and info.attempts == 2 and info.result == "done"


async def test_a_task_whose_workers_keep_dying_ends_dead(queues):
    q = queues(max_attempts=2, visibility_timeout_s=0.1)
    task_id = await q.put("jobs", b"x", TraceContext.new_root().traceparent)
    await q.claim("jobs", "w1")
    await asyncio.wait_for(q.claim("jobs", "w2"), 5)
    info = await asyncio.wait_for(q.wait(task_id, None), 5)
    assert info.state == TaskState.DEAD and "lease" in (info.error or "")
