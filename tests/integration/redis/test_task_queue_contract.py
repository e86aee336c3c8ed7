"""One contract for every task queue backend: the in-process queue, Redis Streams on one
server, and Redis Streams on a Redis Cluster.

The Redis cases need a real Redis server at ``$REDIS_URL`` (``make test`` starts one); the
cluster cases start a local cluster of 3 masters and 3 replicas (``tests.rediscluster``). Each
test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from agents import codec
from agents.errors import TaskNotFound
from agents.runtime_api import TaskState
from agents.tracing import TraceContext
from runtime.config import QueuesConfig
from runtime.queues import InProcessTaskQueue, QueueFull, TaskQueue

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("REDIS_URL")
NO_REDIS = "REDIS_URL not set: run through `make test`, which starts redis-server"
BOUND_S = 10.0  # a claim or wait that should return at once; only there so a bug cannot hang


class Backend:
    """Builds queues of one backend and cleans up after the test."""

    def __init__(self, kind: str, url: str | None = None) -> None:
        self.kind = kind
        self.url = url
        self.prefix = f"raygent-test-{uuid.uuid4().hex[:12]}"
        self.made: list[TaskQueue] = []

    def make(self, **settings: object) -> TaskQueue:
        cfg = QueuesConfig(**settings)
        if self.url is None:
            q: TaskQueue = InProcessTaskQueue(
                max_pending=cfg.max_pending, max_attempts=cfg.max_attempts
            )
        else:
            from runtime.queues.redis_streams import RedisStreamsTaskQueue

            q = RedisStreamsTaskQueue(self.url, cfg, key_prefix=self.prefix)
        self.made.append(q)
        return q

    async def dead_letters(self, queue: str) -> list[dict[str, str]]:
        """The dead-letter stream's entries (Redis only)."""
        from runtime.queues.redis_streams import dlq_key
        from runtime.redis_client import connect

        assert self.url is not None
        client = connect(self.url, decode_responses=True)
        try:
            return [fields for _, fields in await client.xrange(dlq_key(self.prefix, queue))]
        finally:
            await client.aclose()

    async def cleanup(self) -> None:
        for q in self.made:
            await q.close()
        if self.url is not None:
            from runtime.redis_client import connect

            client = connect(self.url)
            try:  # a cluster client scans every master and deletes key by key
                keys = [k async for k in client.scan_iter(match=f"{self.prefix}:*")]
                for k in keys:
                    await client.delete(k)
            finally:
                await client.aclose()


@pytest.fixture(params=["in-process", "redis", "redis-cluster"])
async def backend(request):
    if request.param == "redis" and not REDIS_URL:
        pytest.skip(NO_REDIS)
    if request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster").url
    else:
        url = REDIS_URL if request.param == "redis" else None
    b = Backend(request.param, url)
    yield b
    await b.cleanup()


async def claim(q: TaskQueue, queue: str = "jobs"):
    return await asyncio.wait_for(q.claim(queue, "tester"), BOUND_S)


async def test_put_claim_ack_gives_done_with_result(backend):
    q = backend.make()
    trace = TraceContext.new_root()
    task_id = await q.put("jobs", codec.encode({"n": 1}), trace)
    info = await q.info(task_id)
    assert (info.id, info.queue, info.state, info.attempts) == (task_id, "jobs", "pending", 0)

    rec = await claim(q)
    assert (rec.id, rec.queue, rec.attempts, rec.trace) == (task_id, "jobs", 1, trace)
    assert codec.decode(rec.payload) == {"n": 1}
    assert (await q.info(task_id)).state is TaskState.RUNNING

    await q.ack(rec, codec.encode(["ok", 2]))
    info = await q.wait(task_id, timeout_s=BOUND_S)
    assert (info.state, info.attempts, info.result, info.error) == (
        TaskState.DONE,
        1,
        ["ok", 2],
        None,
    )
    assert await q.info(task_id) == info


async def test_tasks_come_out_in_order_per_queue(backend):
    q = backend.make()
    trace = TraceContext.new_root()
    ids = [await q.put("jobs", codec.encode(i), trace) for i in range(3)]
    other = await q.put("other", codec.encode("x"), trace)
    got = [await claim(q) for _ in ids]
    assert [r.id for r in got] == ids
    assert (await claim(q, "other")).id == other


async def test_failures_retry_then_dead_letter_with_the_last_error(backend):
    q = backend.make(max_attempts=2)
    task_id = await q.put("jobs", codec.encode("t"), TraceContext.new_root())

    first = await claim(q)
    await q.fail(first, "ValueError: one")
    info = await q.info(task_id)
    assert (info.state, info.attempts, info.error) == (TaskState.PENDING, 1, "ValueError: one")

    second = await claim(q)
    assert second.id == task_id and second.attempts == 2
    await q.fail(second, "ValueError: two")
    info = await q.wait(task_id, timeout_s=BOUND_S)
    assert (info.state, info.attempts, info.error) == (TaskState.DEAD, 2, "ValueError: two")
    if backend.url is not None:
        (letter,) = await backend.dead_letters("jobs")
        assert letter == {
            "task": task_id,
            "queue": "jobs",
            "attempts": "2",
            "error": "ValueError: two",
        }


async def test_a_task_that_succeeds_on_retry_is_done(backend):
    q = backend.make(max_attempts=3)
    task_id = await q.put("jobs", codec.encode("t"), TraceContext.new_root())
    await q.fail(await claim(q), "OSError: flaky")
    await q.ack(await claim(q), codec.encode("fine"))
    info = await q.wait(task_id, timeout_s=BOUND_S)
    assert (info.state, info.attempts, info.result, info.error) == (TaskState.DONE, 2, "fine", None)


async def test_release_gives_the_task_back_without_counting_the_attempt(backend):
    q = backend.make(max_attempts=1)
    task_id = await q.put("jobs", codec.encode("t"), TraceContext.new_root())
    rec = await claim(q)
    await q.release(rec)
    info = await q.info(task_id)
    assert (info.state, info.attempts) == (TaskState.PENDING, 0)
    again = await claim(q)
    assert again.id == task_id and again.attempts == 1
    await q.ack(again, codec.encode(None))
    assert (await q.info(task_id)).state is TaskState.DONE


async def test_backlog_counts_the_tasks_no_worker_holds(backend):
    q = backend.make(max_attempts=3)
    assert await q.backlog("jobs") == 0  # a queue nobody used yet
    trace = TraceContext.new_root()
    for i in range(3):
        await q.put("jobs", codec.encode(i), trace)
    await q.put("other", codec.encode("x"), trace)
    assert (await q.backlog("jobs"), await q.backlog("other")) == (3, 1)
    first, second = await claim(q), await claim(q)
    assert await q.backlog("jobs") == 1  # claimed tasks are running, not waiting
    await q.ack(first, codec.encode(None))
    await q.fail(second, "OSError: again")  # back to pending: waiting again
    assert await q.backlog("jobs") == 2
    await q.release(await claim(q))
    assert await q.backlog("jobs") == 2


async def test_unknown_task_ids_raise_task_not_found(backend):
    q = backend.make()
    for bad in ("nope", uuid.uuid4().hex, ""):
        with pytest.raises(TaskNotFound):
            await q.info(bad)
        with pytest.raises(TaskNotFound):
            await q.wait(bad, timeout_s=BOUND_S)


async def test_put_raises_queue_full_at_max_pending(backend):
    q = backend.make(max_pending=2)
    trace = TraceContext.new_root()
    for i in range(2):
        await q.put("jobs", codec.encode(i), trace)
    with pytest.raises(QueueFull):
        await q.put("jobs", codec.encode(2), trace)
    await q.put("other", codec.encode(0), trace)  # the bound is per queue
    await q.ack(await claim(q), codec.encode(None))
    await q.put("jobs", codec.encode(3), trace)  # a finished task frees its place


async def test_wait_times_out_with_timeout_error_and_wakes_on_finish(backend):
    q = backend.make()
    task_id = await q.put("jobs", codec.encode("t"), TraceContext.new_root())
    with pytest.raises(TimeoutError):
        await q.wait(task_id, timeout_s=0.05)
    waiter = asyncio.create_task(q.wait(task_id, timeout_s=BOUND_S))
    rec = await claim(q)
    assert not waiter.done()
    await q.ack(rec, codec.encode("r"))
    info = await waiter
    assert info.state is TaskState.DONE and info.result == "r"
