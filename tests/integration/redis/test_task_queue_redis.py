"""Redis Streams task queue against a real Redis: worker death, claim renewal, stale workers,
cancellation, Redis down, and the example pipeline on LocalRuntime.

Worker processes are real child processes (``python -c``) that claim a task and are then
SIGKILLed or SIGSTOPped before they ack, so nothing in this process can renew their claims.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

from agents import TaskState, codec
from agents.errors import QueueUnavailable
from agents.testing import ScriptedModel
from agents.tracing import TraceContext
from runtime.config import QueuesConfig, RaygentConfig

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("REDIS_URL")
if not REDIS_URL:
    pytest.skip(
        "REDIS_URL not set: run through `make test`, which starts redis-server",
        allow_module_level=True,
    )

import redis.asyncio as aioredis  # noqa: E402 - only with a Redis to talk to

from runtime.queues.redis_streams import (  # noqa: E402
    GROUP,
    RedisStreamsTaskQueue,
    dlq_key,
    stream_key,
    task_key,
)

REPO = Path(__file__).resolve().parents[3]
VT_S = 0.5  # visibility timeout of these tests: a lost claim is taken over after half a second
BOUND_S = 15.0  # only there so that a bug fails the test instead of hanging it

# A worker in another process: claim one task of "jobs", say so, then wait for a line on stdin
# and settle the task as told ("ack" or "fail") — unless it is killed or stopped first.
CHILD = """
import asyncio, sys
from agents import codec
from runtime.config import QueuesConfig
from runtime.queues.redis_streams import RedisStreamsTaskQueue

async def main(url, prefix, vt, then):
    q = RedisStreamsTaskQueue(url, QueuesConfig(visibility_timeout_s=float(vt)), key_prefix=prefix)
    rec = await q.claim("jobs", "child")
    print("claimed", rec.id, rec.attempts, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if then == "ack":
        await q.ack(rec, codec.encode("from the stale worker"))
    else:
        await q.fail(rec, "RuntimeError: from the stale worker")
    print("settled", flush=True)
    await q.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
async def redis_env():
    """A key prefix of its own, a raw client to inspect keys, and cleanup of both."""
    prefix = f"raygent-test-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    queues: list[RedisStreamsTaskQueue] = []

    def make(**settings: object) -> RedisStreamsTaskQueue:
        settings.setdefault("visibility_timeout_s", VT_S)
        q = RedisStreamsTaskQueue(REDIS_URL, QueuesConfig(**settings), key_prefix=prefix)
        queues.append(q)
        return q

    env = type("RedisEnv", (), {})()
    env.prefix, env.client, env.make = prefix, client, make
    yield env
    for q in queues:
        await q.close()
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def start_child(prefix: str, then: str = "ack") -> tuple[asyncio.subprocess.Process, str]:
    """A worker process holding a claim on the next task of "jobs"; returns it and the id."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        REDIS_URL,
        prefix,
        str(VT_S),
        then,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line.startswith(b"claimed"):
        proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(f"worker process failed: {line!r} {err.decode()}")
    _, task_id, attempts = line.decode().split()
    assert attempts == "1"
    return proc, task_id


def put_from_another_thread(prefix: str) -> str:
    """Put a task on "jobs" while blocking this thread's event loop until it is stored."""
    out: list[str] = []

    async def put() -> None:
        q = RedisStreamsTaskQueue(REDIS_URL, QueuesConfig(), key_prefix=prefix)
        try:
            out.append(await q.put("jobs", codec.encode("t"), TraceContext.new_root()))
        finally:
            await q.close()

    thread = threading.Thread(target=asyncio.run, args=(put(),))
    thread.start()
    thread.join()
    return out[0]


async def stream_is_empty(env, queue: str = "jobs") -> bool:
    stream = stream_key(env.prefix, queue)
    pending = await env.client.xpending(stream, GROUP)
    return await env.client.xlen(stream) == 0 and pending["pending"] == 0


async def test_a_worker_killed_mid_task_loses_no_task(redis_env):
    q = redis_env.make()
    task_id = await q.put("jobs", codec.encode("work"), TraceContext.new_root())
    proc, claimed = await start_child(redis_env.prefix)
    assert claimed == task_id
    assert (await q.info(task_id)).state is TaskState.RUNNING
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL

    # Its claim stops being renewed; after the visibility timeout this worker takes it over.
    rec = await asyncio.wait_for(q.claim("jobs", "survivor"), BOUND_S)
    assert (rec.id, rec.attempts, codec.decode(rec.payload)) == (task_id, 2, "work")
    assert (await q.info(task_id)).error.startswith("WorkerLost: consumer child@")
    await q.ack(rec, codec.encode("done once"))

    info = await q.wait(task_id, timeout_s=BOUND_S)
    assert (info.state, info.attempts, info.result, info.error) == (
        TaskState.DONE,
        2,
        "done once",
        None,
    )
    assert await stream_is_empty(redis_env)
    assert await redis_env.client.xlen(dlq_key(redis_env.prefix, "jobs")) == 0
    ttl = await redis_env.client.ttl(task_key(redis_env.prefix, task_id))
    assert ttl > 0  # a finished task expires after finished_ttl_s


@pytest.mark.parametrize("late", ["ack", "fail"])
async def test_a_worker_whose_claim_expired_cannot_overwrite_the_outcome(redis_env, late):
    q = redis_env.make()
    task_id = await q.put("jobs", codec.encode("work"), TraceContext.new_root())
    proc, _ = await start_child(redis_env.prefix, then=late)
    proc.send_signal(signal.SIGSTOP)  # paused (GC, swap, partition): alive but not renewing
    try:
        rec = await asyncio.wait_for(q.claim("jobs", "survivor"), BOUND_S)
        assert rec.attempts == 2
        await q.ack(rec, codec.encode("from the live worker"))
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = await asyncio.wait_for(proc.communicate(b"go\n"), BOUND_S)
    assert proc.returncode == 0, err.decode()
    assert out.endswith(b"settled\n")

    info = await q.info(task_id)
    assert (info.state, info.attempts, info.result, info.error) == (
        TaskState.DONE,
        2,
        "from the live worker",
        None,
    )
    assert await stream_is_empty(redis_env)


async def test_the_first_run_to_finish_wins_and_a_later_ack_changes_nothing(redis_env):
    q = redis_env.make()
    task_id = await q.put("jobs", codec.encode("work"), TraceContext.new_root())
    proc, _ = await start_child(redis_env.prefix, then="ack")
    proc.send_signal(signal.SIGSTOP)
    try:
        rec = await asyncio.wait_for(q.claim("jobs", "survivor"), BOUND_S)
    finally:
        proc.send_signal(signal.SIGCONT)
    # The stale worker finishes first: its result stands, the newer run's ack is a no-op.
    await asyncio.wait_for(proc.communicate(b"go\n"), BOUND_S)
    assert proc.returncode == 0
    await q.ack(rec, codec.encode("from the live worker"))
    info = await q.info(task_id)
    assert (info.state, info.result) == (TaskState.DONE, "from the stale worker")
    assert await stream_is_empty(redis_env)


async def test_a_claim_lost_on_the_last_attempt_is_dead_lettered(redis_env):
    crashed = redis_env.make(max_attempts=1)
    task_id = await crashed.put("jobs", codec.encode("work"), TraceContext.new_root())
    await asyncio.wait_for(crashed.claim("jobs", "doomed"), BOUND_S)
    await crashed.close()  # stops renewing without settling: as good as dead

    q = redis_env.make(max_attempts=1)
    worker = asyncio.create_task(q.claim("jobs", "survivor"))
    try:
        info = await q.wait(task_id, timeout_s=BOUND_S)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert worker.cancelled()  # the dead task was never handed out again
    assert (info.state, info.attempts) == (TaskState.DEAD, 1)
    assert info.error.startswith("WorkerLost: consumer doomed@")
    letters = await redis_env.client.xrange(dlq_key(redis_env.prefix, "jobs"))
    assert [f["task"] for _, f in letters] == [task_id]
    assert await stream_is_empty(redis_env)


async def test_claims_are_renewed_while_a_handler_runs_longer_than_the_timeout(redis_env):
    vt_s = 1.0  # renewed every third of it: leaves room for a busy test machine
    holder, other = (redis_env.make(visibility_timeout_s=vt_s) for _ in range(2))
    task_id = await holder.put("jobs", codec.encode("slow"), TraceContext.new_root())
    rec = await asyncio.wait_for(holder.claim("jobs", "slow"), BOUND_S)
    # For three visibility timeouts another worker finds nothing to take over.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(other.claim("jobs", "eager"), 3 * vt_s)
    assert await holder.renew() == 1
    await holder.ack(rec, codec.encode("finally"))
    info = await holder.info(task_id)
    assert (info.state, info.attempts, info.result) == (TaskState.DONE, 1, "finally")


async def test_cancelling_a_waiting_claim_strands_nothing(redis_env):
    q = redis_env.make(visibility_timeout_s=60.0)  # a stranded entry would stay a minute
    waiting = asyncio.create_task(q.claim("jobs", "w"))
    name = f"{redis_env.prefix}:queue"
    while not any(  # noqa: ASYNC110 - polls Redis, which has no event to await
        c["name"] == name and c["cmd"] == "xread" for c in await redis_env.client.client_list()
    ):
        await asyncio.sleep(0.01)  # until the claim is blocked in Redis
    # The task arrives while the claim waits, and the claim is cancelled before it can read
    # Redis' answer (this loop is blocked meanwhile): the wake-up must not have handed the task
    # to the cancelled claim.
    task_id = put_from_another_thread(redis_env.prefix)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()

    rec = await asyncio.wait_for(q.claim("jobs", "w2"), BOUND_S)
    assert (rec.id, rec.attempts) == (task_id, 1)
    await q.ack(rec, codec.encode(None))
    assert await stream_is_empty(redis_env)


async def test_a_cancelled_claim_or_wait_always_stops(redis_env):
    # redis-py loses a cancel that lands while it sends a command (asyncio.wait_for before
    # Python 3.12); without the queue's guard about half of these cancels were lost and the
    # claim went on forever. Cancel at random points early in each call.
    q = redis_env.make()
    task_id = await q.put("other", codec.encode("t"), TraceContext.new_root())
    rng = random.Random(4)
    for call in [lambda: q.claim("jobs", "w"), lambda: q.wait(task_id)] * 60:
        running = asyncio.create_task(call())
        await asyncio.sleep(rng.random() * 0.002)
        running.cancel()
        done, _ = await asyncio.wait({running}, timeout=BOUND_S)
        assert done and running.cancelled()


async def test_wait_in_another_process_wakes_when_the_task_finishes(redis_env):
    submitter, worker = redis_env.make(), redis_env.make()
    task_id = await submitter.put("jobs", codec.encode("t"), TraceContext.new_root())
    waiter = asyncio.create_task(submitter.wait(task_id, timeout_s=BOUND_S))
    rec = await asyncio.wait_for(worker.claim("jobs", "w"), BOUND_S)
    await worker.ack(rec, codec.encode("seen elsewhere"))
    info = await waiter
    assert (info.state, info.result) == (TaskState.DONE, "seen elsewhere")


async def test_redis_down_gives_a_typed_retryable_error_not_a_hang():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q = RedisStreamsTaskQueue(
        f"redis://127.0.0.1:{port}/0", QueuesConfig(socket_timeout_s=0.2), key_prefix="down"
    )
    try:
        with pytest.raises(QueueUnavailable) as caught:
            await asyncio.wait_for(q.put("jobs", b"\x00", TraceContext.new_root()), BOUND_S)
        assert caught.value.retryable and caught.value.queue == "jobs"
        assert isinstance(caught.value.__cause__, Exception)
        with pytest.raises(QueueUnavailable):
            await asyncio.wait_for(q.info(uuid.uuid4().hex), BOUND_S)
        # A worker loop does not die with Redis: claim keeps trying until cancelled.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.claim("jobs", "w"), 0.5)
    finally:
        await q.close()


async def test_the_example_pipeline_runs_on_local_runtime_with_redis_queues(redis_env):
    from examples.research import (
        Archivist,
        Critic,
        Report,
        Researcher,
        ResearchRequest,
        Writer,
    )
    from runtime import LocalRuntime

    model = ScriptedModel(["Draft on rings.", "Too short.", "Draft on queues.", "Fine."])
    queue = redis_env.make()
    cfg = RaygentConfig(agents=[])
    async with LocalRuntime(
        [Researcher, Writer, Critic, Archivist], {"default": model}, config=cfg, task_queue=queue
    ) as rt:
        first = await rt.send("researcher", ResearchRequest("rings", max_tokens=16))
        assert first == Report("rings", "Draft on rings.", "Too short.", first.archive_task)
        second = await rt.send("researcher", ResearchRequest("queues"))
        task = await rt.wait_task(first.archive_task, timeout_s=BOUND_S)
        assert (task.state, task.queue, task.attempts, task.result) == (
            TaskState.DONE,
            "archive",
            1,
            "archive:rings",
        )
        task = await rt.wait_task(second.archive_task, timeout_s=BOUND_S)
        assert task.result == "archive:queues"
        await rt.shutdown()
        assert rt.state["archive:rings"] == {"draft": "Draft on rings.", "review": "Too short."}
        assert rt.state["reports_written"] == 2
    assert await stream_is_empty(redis_env, "archive")
    consumers = await redis_env.client.xinfo_consumers(
        stream_key(redis_env.prefix, "archive"), GROUP
    )
    assert consumers == []  # closing the queue removed its consumers
