"""The response cache and the durable task queues on a real Redis Cluster (3 masters, each with
a replica; ``tests.rediscluster``): keys that must live together share a slot, work spreads over
the masters, a slot that moves between masters mid-use (``ASK``, then ``MOVED``) and a master
killed under load (its replica promoted) cost retries but lose nothing that was accepted.

The queue contract itself runs on the cluster too (``test_task_queue_contract.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid

import pytest

from agents import TaskState, codec
from agents.errors import QueueUnavailable
from agents.tracing import TraceContext
from runtime.cache import CacheDecision, ResponseCache, cache_key, lock_key, value_key
from runtime.config import QueuesConfig
from runtime.core.loops import Loops
from runtime.queues.redis_streams import RedisStreamsTaskQueue, dlq_key, stream_key, task_key
from tests.polling import until
from tests.rediscluster import LocalCluster, SlotMove

pytestmark = pytest.mark.integration

BOUND_S = 30.0  # only there so that a bug fails a test instead of hanging it
VT_S = 1.0  # a claim whose ack was lost to a dead master is taken over after a second
CACHEABLE = CacheDecision(lookup=True, store=True, reason="cacheable")
QUEUES = [f"jobs-{i}" for i in range(12)]


def key(prompt: str) -> str:
    return cache_key(
        target="default",
        revision=None,
        kind="chat",
        prompt=[{"role": "user", "content": prompt}],
        params={"temperature": 0, "max_tokens": 8},
        tenant="tenant-a",
    )


@contextlib.asynccontextmanager
async def queue(url: str, prefix: str, **settings: object):
    q = RedisStreamsTaskQueue(url, QueuesConfig(**settings), key_prefix=prefix)
    try:
        yield q
    finally:
        await q.close()


async def retrying(op, *args, bound_s: float = BOUND_S):
    """Call ``op`` until it stops raising a retryable ``QueueUnavailable`` (a failover)."""
    deadline = time.monotonic() + bound_s
    while True:
        try:
            return await op(*args)
        except QueueUnavailable as exc:
            if not exc.retryable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def finished(q: RedisStreamsTaskQueue, ids: list[str]) -> list:
    """``wait`` for every task; past ``BOUND_S``, fail naming the tasks that did not finish."""
    try:
        return await asyncio.wait_for(asyncio.gather(*(q.wait(t) for t in ids)), BOUND_S)
    except asyncio.TimeoutError:
        infos = [await q.info(t) for t in ids]
        stuck = [(i.id, i.queue, i.state.value, i.attempts, i.error) for i in infos]
        pytest.fail(
            f"tasks not finished after {BOUND_S:g}s: {[x for x in stuck if x[2] != 'done']}"
        )


async def work(q: RedisStreamsTaskQueue, name: str, done: set[str]) -> None:
    """A worker on every queue: claim, answer the payload doubled, ack (retrying the ack through
    a failover; a claim lost meanwhile is taken over by another worker). Cancel to stop.

    Each queue's loop is owned by :class:`Loops`, as an agent's claimers are
    (``runtime.core.executor``): while a master fails over, a claim or an ack has now and then
    raised a ``CancelledError`` no caller sent (the queue re-raises a cancel it believes redis-py
    swallowed, from ``Task.cancelling()``), and a loop that ended on it as on a shutdown would
    leave its queue unworked; ``Loops`` starts such a loop again."""
    loops = Loops(f"test worker {name}", first_backoff_s=0.05, max_backoff_s=0.5)

    async def serve(queue_name: str) -> None:
        while True:
            rec = await q.claim(queue_name, name)
            result = codec.encode(2 * codec.decode(rec.payload))
            with contextlib.suppress(QueueUnavailable):
                await retrying(q.ack, rec, result)
            done.add(rec.id)

    for n in QUEUES:
        loops.start(n, functools.partial(serve, n))
    try:
        await asyncio.Event().wait()
    finally:
        await loops.close()


# -- keys and spread -----------------------------------------------------------------------------


async def test_keys_that_work_together_share_a_slot(redis_cluster):
    node = redis_cluster.node(redis_cluster.primaries()[0])

    def slot(k: str) -> int:
        return node.cluster("keyslot", k)

    k = key("hi")
    assert slot(value_key(k)) == slot(lock_key(k))
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with queue(redis_cluster.url, prefix) as q:
        for name in QUEUES:
            task_id = await q.put(name, codec.encode(name), TraceContext.new_root())
            assert (await q.info(task_id)).queue == name
            assert slot(stream_key(prefix, name)) == slot(dlq_key(prefix, name))
            assert slot(task_key(prefix, task_id)) == slot(stream_key(prefix, name))


async def test_queues_spread_over_the_masters_and_finish_from_any_node(redis_cluster):
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    masters = {redis_cluster.master_of(stream_key(prefix, name)) for name in QUEUES}
    assert len(masters) == 3  # 12 queues land on every master (a fixed name set: deterministic)
    async with queue(redis_cluster.url, prefix) as producer, queue(redis_cluster.url, prefix) as w:
        ids = {}
        for i, name in enumerate(QUEUES):
            ids[await producer.put(name, codec.encode(i), TraceContext.new_root())] = i
        done: set[str] = set()
        worker = asyncio.create_task(work(w, "w", done))
        try:
            # wait() wakes on the done channel, published on each queue's master (classic
            # pub/sub, which the cluster forwards to every node), or on its backstop poll
            infos = await finished(producer, list(ids))
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    assert {i.id: i.result for i in infos} == {t: 2 * n for t, n in ids.items()}
    assert all(i.state is TaskState.DONE for i in infos)


async def test_cache_single_flight_across_two_replicas_on_a_cluster(redis_cluster):
    a = ResponseCache(url=redis_cluster.url, socket_timeout_ms=1000)
    b = ResponseCache(url=redis_cluster.url, socket_timeout_ms=1000)
    try:
        await a.start()
        await b.start()
        calls = 0
        gate = asyncio.Event()

        async def produce() -> bytes:
            nonlocal calls
            calls += 1
            await gate.wait()
            return b"answer"

        k = key(f"single-flight-{uuid.uuid4().hex}")
        tasks = [asyncio.create_task(c.get_or_compute(k, produce, CACHEABLE)) for c in (a, b) * 5]
        await until(
            lambda: a.stats()["single_flight_waits"] + b.stats()["single_flight_waits"] == 9,
            BOUND_S,
        )
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), BOUND_S)
        assert calls == 1
        assert sorted(s for _, s in results) == ["hit"] * 9 + ["miss"]
        # entries spread over the masters by key
        keys = [key(f"spread-{i}") for i in range(24)]
        for i, k in enumerate(keys):
            await a.put(k, str(i).encode())
        assert len({redis_cluster.master_of(value_key(k)) for k in keys}) == 3
        assert [await b.get(k) for k in keys] == [str(i).encode() for i in range(24)]
        assert a.stats()["errors"] == b.stats()["errors"] == 0
    finally:
        await a.close()
        await b.close()


# -- a slot that moves, a master that dies --------------------------------------------------------


async def test_a_queue_whose_slot_moves_mid_use_loses_nothing(redis_cluster):
    """A queue's slot migrates to another master in steps, as a reshard does.

    1. Its two streams move first; its task hashes stay behind. A worker's claim is redirected
       (``ASK``) to the new master, where the script reads hashes that are not there yet: it
       must leave those entries for later, not drop them as orphans (that lost every task).
    2. The hashes move while a producer puts: a put creates a key, which a slot in migration
       refuses (``TRYAGAIN``), so puts are retried until
    3. the slot changes owner (``MOVED``).

    Every task put ends DONE, each run once in effect."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    name = QUEUES[0]
    stream = stream_key(prefix, name)
    async with (
        queue(redis_cluster.url, prefix, visibility_timeout_s=VT_S) as q,
        queue(redis_cluster.url, prefix, max_attempts=1) as once,
    ):
        # a dead letter, so the dead-letter stream exists and moves with the stream
        dead = await once.put(name, codec.encode(0), TraceContext.new_root())
        rec = await once.claim(name, "w")
        assert rec.id == dead
        await once.fail(rec, "ValueError: first")
        before = [await q.put(name, codec.encode(i), TraceContext.new_root()) for i in range(20)]
        src = redis_cluster.master_of(stream)
        dst = next(p for p in redis_cluster.primaries() if p != src)
        move = SlotMove(redis_cluster, stream, dst)
        move.migrate([stream, dlq_key(prefix, name)])
        done: set[str] = set()
        worker = asyncio.create_task(work(q, "w", done))
        try:
            await asyncio.sleep(VT_S / 2)  # claims run on the new master, hashes not there
            moving = asyncio.create_task(asyncio.to_thread(move.migrate, pause_s=0.02))

            async def put_during() -> list[str]:
                # a new task's hash is a key the importing master lacks: TRYAGAIN until the
                # slot has its new owner, so these puts go through only after finish()
                return [
                    await retrying(q.put, name, codec.encode(-1), TraceContext.new_root())
                    for _ in range(5)
                ]

            putting = asyncio.create_task(put_during())
            await moving
            await asyncio.to_thread(move.finish)
            during = await putting
            assert redis_cluster.master_of(stream) == dst
            after = [await q.put(name, codec.encode(i), TraceContext.new_root()) for i in range(5)]
            ids = before + during + after
            infos = await finished(q, ids)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    assert all(i.state is TaskState.DONE for i in infos)
    assert [i.result for i in infos[:20]] == [2 * i for i in range(20)]
    assert all(i.attempts == 1 for i in infos[:20])  # a parked entry's claim is not an attempt


async def test_a_master_killed_under_load_loses_no_accepted_task():
    """Tasks on every master, workers claiming and acking; the master of one queue is killed
    (SIGKILL) and its replica promoted. Puts during the failover are retried until accepted;
    every accepted task ends DONE, and the cache answers from the promoted replica."""
    # A claim the failover cuts off is taken over after the visibility timeout, and that costs
    # an attempt; the failover outlasts a few 1 s timeouts, so allow attempts enough that no
    # task is dead-lettered by the outage itself (this test is about losing nothing).
    settings = {"visibility_timeout_s": VT_S, "max_attempts": 20}
    with LocalCluster() as cluster:
        prefix = f"t-{uuid.uuid4().hex[:8]}"
        cache = ResponseCache(url=cluster.url, socket_timeout_ms=500)
        try:
            async with (
                queue(cluster.url, prefix, **settings) as producer,
                queue(cluster.url, prefix, **settings) as w1,
                queue(cluster.url, prefix, **settings) as w2,
            ):
                victim = cluster.master_of(stream_key(prefix, QUEUES[0]))
                k = next(
                    key(f"c{i}")
                    for i in range(100)
                    if cluster.master_of(value_key(key(f"c{i}"))) == victim
                )
                await cache.put(k, b"kept")
                accepted = [
                    await producer.put(n, codec.encode(i), TraceContext.new_root())
                    for i, n in enumerate(QUEUES * 3)
                ]
                for port in cluster.primaries():
                    cluster.replicate(port)  # what was accepted so far is on the replicas
                done: set[str] = set()
                workers = [asyncio.create_task(work(w, n, done)) for w, n in ((w1, "a"), (w2, "b"))]
                try:
                    await until(lambda: len(done) >= 6, BOUND_S)  # the workers are mid-stream
                    cluster.kill(victim)
                    for i, n in enumerate(QUEUES * 2):
                        accepted.append(
                            await retrying(
                                producer.put, n, codec.encode(100 + i), TraceContext.new_root()
                            )
                        )
                    infos = await finished(producer, accepted)
                finally:
                    for t in workers:
                        t.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                assert victim not in cluster.primaries()
                assert all(i.state is TaskState.DONE for i in infos), [
                    (i.id, i.state, i.error) for i in infos if i.state is not TaskState.DONE
                ]
                assert len({i.id for i in infos}) == len(accepted) == 60
            # the cache rides the failover too: the value written before it is read after it
            deadline = time.monotonic() + BOUND_S
            while (got := await cache.get(k)) is None:
                assert time.monotonic() < deadline, "the cache never answered again"
                await asyncio.sleep(0.2)
            assert got == b"kept"
        finally:
            await cache.close()
