"""The event bus in one process: two buses on one loop, one reading the other's ring.

The loop reader (the default on Linux) and the thread that replaces it where the wake socket is
unavailable must behave alike: every record addressed to the replica arrives once, in order,
state records are applied, and a sink that takes nothing at once (a full mailbox) makes the
reader wait instead of dropping or reordering.
"""

import asyncio

import pytest

from runtime.cluster import bus as bus_mod
from runtime.cluster.bus import EventBus
from tests.polling import until


@pytest.fixture(params=["loop", "thread"])
def reader_kind(request, monkeypatch):
    if request.param == "thread":

        def no_wake_socket(self):
            raise OSError("no wake socket here")

        from shm import RingReader

        monkeypatch.setattr(RingReader, "wake_fd", no_wake_socket)
    return request.param


async def _pair(take_at_once: int | None):
    """A publisher bus and a subscriber bus reading it; the subscriber's sink takes at most
    ``take_at_once`` items synchronously (None: all), the rest through the async sink."""
    loop = asyncio.get_running_loop()
    got: list = []
    nowait_calls = []

    async def on_batch(items):
        await asyncio.sleep(0.01)  # a mailbox making room
        got.extend(items)

    def on_batch_nowait(items):
        n = len(items) if take_at_once is None else min(take_at_once, len(items))
        nowait_calls.append(len(items))
        got.extend(items[:n])
        return n

    pub = EventBus(
        replica_id="pub-1", agent="pub", loop=loop, on_batch=on_batch, on_lapped=lambda: None
    )
    sub = EventBus(
        replica_id="sub-1",
        agent="sub",
        loop=loop,
        on_batch=on_batch,
        on_batch_nowait=on_batch_nowait,
        on_lapped=lambda: None,
    )
    sub.attach("pub-1", pub.handle)
    return pub, sub, got, nowait_calls


def _until(predicate):
    return until(predicate, timeout_s=5.0, poll_s=0.005)


async def test_records_for_this_replica_arrive_once_in_order(reader_kind):
    pub, sub, got, _ = await _pair(None)
    try:
        assert isinstance(
            sub._readers["pub-1"],
            bus_mod._LoopReader if reader_kind == "loop" else bus_mod._ReaderThread,
        )
        for i in range(50):
            await pub.publish("t", {"sub": "sub-1"}, b"m%d" % i, None)
            await pub.publish("t", {"sub": "sub-2"}, b"other", None)  # another incarnation
        await pub.put_state("k", (1, "pub-1"), b"v")
        await _until(lambda: len(got) == 51)
        await asyncio.sleep(0.05)
        assert [g[2] for g in got[:50]] == [b"m%d" % i for i in range(50)]
        assert got[50] == ("s", "k", (1, "pub-1"), b"v")
        assert len(got) == 51
    finally:
        sub.close()
        pub.close()


async def test_a_sink_that_is_full_makes_the_reader_wait_not_drop(reader_kind):
    pub, sub, got, _ = await _pair(take_at_once=0)
    try:
        for i in range(300):
            await pub.publish("t", {"sub": "sub-1"}, b"m%d" % i, None)
        await _until(lambda: len(got) == 300)
        assert [g[2] for g in got] == [b"m%d" % i for i in range(300)]
    finally:
        sub.close()
        pub.close()


async def test_the_loop_reader_is_woken_by_the_writer_not_by_its_poll(monkeypatch):
    """With the poll pushed out of reach, only the writer's datagram can wake the loop
    reader: every message, each sent after the reader went back to sleep, still arrives."""
    monkeypatch.setattr(bus_mod, "_POLL_S", 3600.0)
    pub, sub, got, _ = await _pair(None)
    try:
        for i in range(5):
            await asyncio.sleep(0.05)  # the reader is armed and asleep by now
            await pub.publish("t", {"sub": "sub-1"}, b"m%d" % i, None)
            await _until(lambda n=i: len(got) == n + 1)
        assert [g[2] for g in got] == [b"m%d" % i for i in range(5)]
    finally:
        sub.close()
        pub.close()


async def test_a_closed_writer_ends_its_loop_reader():
    pub, sub, got, _ = await _pair(None)
    reader = sub._readers["pub-1"]
    await pub.publish("t", {"sub": "sub-1"}, b"last", None)
    await _until(lambda: len(got) == 1)
    pub.close()
    await _until(lambda: reader._closed)
    sub.close()


async def test_the_poll_reads_every_ring_whose_wake_up_was_missed(monkeypatch):
    """A missed wake-up (the loop never hears the datagram) is covered by the poll, on every
    ring the replica reads."""
    monkeypatch.setattr(bus_mod, "_POLL_S", 0.05)
    loop = asyncio.get_running_loop()
    got: list = []

    async def on_batch(items):
        got.extend(items)

    def bus(name: str) -> EventBus:
        return EventBus(
            replica_id=f"{name}-1", agent=name, loop=loop, on_batch=on_batch, on_lapped=lambda: None
        )

    pubs, sub = [bus("a"), bus("b")], bus("sub")
    try:
        for p in pubs:
            sub.attach(p.replica_id, p.handle)
        for r in sub._readers.values():
            loop.remove_reader(r._fd)  # deaf to the writers' datagrams
        await asyncio.sleep(0.02)
        for p in pubs:
            await p.publish("t", {"sub": "sub-1"}, p.replica_id.encode(), None)
        await _until(lambda: len(got) == 2)
        assert sorted(g[2] for g in got) == [b"a-1", b"b-1"]
    finally:
        sub.close()
        for p in pubs:
            p.close()
