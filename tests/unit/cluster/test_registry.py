"""The registry's incarnations: a restarted registry starts empty and is handed the clients'
copies of the shared state (``Registry`` and ``ClusterClient`` in-process; the Ray and Serve
kills are in ``tests/integration``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray import exceptions as rex

from runtime.cluster import client as cluster
from runtime.cluster.client import AppSpec, ClusterClient
from runtime.cluster.registry import Member, Registry, StateUpdate
from runtime.config import RaygentConfig
from runtime.queues import InProcessTaskQueue
from tests import polling

pytestmark = pytest.mark.asyncio


class RegistryHandle:
    """The registry's actor handle (``handle.method.remote(...)``) over an in-process
    ``Registry`` that a test can restart (a new, empty incarnation) or take down (every call
    fails as a dead actor's does)."""

    def __init__(self) -> None:
        self.current = Registry()
        self.down = False
        self.bug_in: set[str] = set()  # methods whose next call raises an unexpected error

    def restart(self) -> None:
        self.current = Registry()

    def __getattr__(self, name: str) -> Any:
        handle = self

        class _Method:
            @staticmethod
            def remote(*args: Any) -> Any:
                return handle._call(name, args)

        return _Method

    async def _call(self, name: str, args: tuple[Any, ...]) -> Any:
        if self.down:
            raise rex.RayActorError()
        if name in self.bug_in:
            self.bug_in.discard(name)
            raise TypeError(f"a bug in {name}")
        return await getattr(self.current, name)(*args)


def client(registry: RegistryHandle, writer: str) -> ClusterClient:
    spec = AppSpec(name="unit", config=RaygentConfig(), classes={}, settings={})
    return ClusterClient(
        spec, registry, InProcessTaskQueue(max_pending=10), writer_id=writer, node_id="n"
    )


@pytest.fixture
async def two_clients(monkeypatch):
    """A registry (restartable) and two clients following it with 50 ms long polls."""
    monkeypatch.setattr(cluster, "_POLL_S", 0.05)
    registry = RegistryHandle()
    a, b = client(registry, "a"), client(registry, "b")
    a.start(), b.start()
    yield registry, a, b
    await a.close()
    await b.close()


def until(predicate):
    return polling.until(predicate, timeout_s=10.0)


async def test_a_client_of_another_incarnation_is_answered_at_once_with_everything():
    reg = Registry()
    await reg.put_state([StateUpdate("a", (1, "w"), b"1"), StateUpdate("gone", (2, "w"), None)])
    await reg.register(Member("x/0/1", "x", 0, "n", None, None))
    # A 60 s long poll from a client of an earlier incarnation does not wait.
    epoch, seq, changes = await asyncio.wait_for(reg.state_since(5, 60.0, "earlier"), 5.0)
    assert epoch == reg.epoch and seq == 2
    assert {(u.key, u.value) for u in changes} == {("a", b"1"), ("gone", None)}
    epoch, version, full, members = await asyncio.wait_for(reg.members_since(9, 60.0, ""), 5.0)
    assert (epoch, version, full) == (reg.epoch, 1, True)
    assert [(slot, m.replica_id) for slot, m in members] == [("x/0", "x/0/1")]
    assert Registry().epoch != reg.epoch
    # Its own clients still long-poll: nothing newer than seq 2 within 0.05 s.
    assert await reg.state_since(2, 0.05, reg.epoch) == (reg.epoch, 2, [])


async def test_a_membership_change_is_answered_with_the_change_not_the_whole_list():
    reg = Registry()
    for i in range(50):
        await reg.register(Member(f"a/{i}/1", "a", i, "n", None, None))
    epoch, v50, full, everything = await reg.members_since(0, 60.0, "")
    assert full and len(everything) == 50
    await reg.register(Member("a/7/2", "a", 7, "n", None, None))  # slot a/7 restarted
    await reg.unregister("a/9/1")
    await reg.unregister("a/9/1")  # again: nothing more to remove
    _, version, full, changes = await reg.members_since(v50, 60.0, epoch)
    assert not full and version == v50 + 3
    assert sorted((slot, m and m.replica_id) for slot, m in changes) == [
        ("a/7", "a/7/2"),
        ("a/9", None),
    ]
    _, _, _, later = await reg.members_since(version - 1, 60.0, epoch)
    assert later == []  # the last bump changed no slot; a/7 and a/9 changed before it


async def test_a_restarted_registry_is_handed_every_clients_copy(two_clients):
    registry, a, b = two_clients
    await a.state.set("colour", "blue")
    await b.state.set("size", 3)
    await a.state.set("tmp", 1)
    await a.state.delete("tmp")
    await until(lambda: b.state.get("colour") == "blue" and a.state.get("size") == 3)

    old = registry.current.epoch
    registry.restart()

    async def handed_over() -> dict[str, Any]:
        _, _, changes = await registry.current.state_since(0, 0.0, "")
        return {u.key: u for u in changes}

    for _ in range(500):
        got = await handed_over()
        if {"colour", "size", "tmp"} <= set(got):
            break
        await asyncio.sleep(0.01)
    assert registry.current.epoch != old
    assert got["colour"].value is not None and got["size"].value is not None
    assert got["tmp"].value is None  # the delete travels too, so it cannot come back
    assert a.paths["state:handed-over"] >= 1 and b.paths["state:handed-over"] >= 1

    # The feeds follow the new incarnation: a write after the restart reaches the other.
    await b.state.set("after", True)
    await until(lambda: a.state.get("after") is True)


async def test_a_write_the_registry_did_not_take_stands_and_is_handed_over_later(two_clients):
    registry, a, b = two_clients
    await a.state.set("before", 1)
    await until(lambda: b.state.get("before") == 1)
    registry.down = True
    await a.state.set("while-down", 2)  # no error: the write stands here
    assert a.state.get("while-down") == 2
    registry.restart()
    registry.down = False
    await until(lambda: b.state.get("while-down") == 2)
    assert b.state.get("before") == 1


async def test_a_feed_that_dies_on_an_unexpected_error_is_restarted(two_clients):
    """Not a Ray error (those the feed waits out itself): the loop dies, its owner logs it and
    starts it again, and the state keeps flowing."""
    registry, a, b = two_clients
    await a.state.set("before", 1)
    await until(lambda: b.state.get("before") == 1)
    registry.bug_in = {"state_since", "members_since"}
    await until(lambda: not registry.bug_in)
    await a.state.set("after", 2)
    await b.state.set("back", 3)
    await until(lambda: b.state.get("after") == 2 and a.state.get("back") == 3)
    for loop in ("members", "state"):  # whichever client's call hit the bug
        assert a._loops.restarts[loop] + b._loops.restarts[loop] == 1
    assert sorted(a._loops.running()) == sorted(b._loops.running()) == ["members", "state"]


class _Replica:
    """An agent replica's actor handle: ``deliver.remote(...)`` answers with the payload."""

    class deliver:  # noqa: N801 -- the handle's method, as Ray spells it
        @staticmethod
        async def remote(payload: bytes, traceparent: Any, priority: str) -> bytes:
            return b"re:" + payload


async def test_a_send_waits_for_the_feed_to_list_its_target_s_first_replica(monkeypatch):
    """Right after start-up a peer's feed can lag the registry: a send to an agent with no
    listed replica waits (bounded) for the feed instead of failing at once."""
    from agents.errors import ReplicaUnavailable

    monkeypatch.setattr(cluster, "_POLL_S", 0.05)
    monkeypatch.setattr(cluster, "_LISTED_WAIT_S", 2.0)
    registry = RegistryHandle()
    c = client(registry, "a")
    c.start()
    try:
        send = asyncio.ensure_future(c.send_encoded("x", b"hi", None, "interactive", 5.0, "Ping"))
        await asyncio.sleep(0.2)
        assert not send.done()
        await registry.current.register(Member("x/0/1", "x", 0, "n", _Replica, None))
        assert await asyncio.wait_for(send, 5.0) == b"re:hi"
        monkeypatch.setattr(cluster, "_LISTED_WAIT_S", 0.1)
        with pytest.raises(ReplicaUnavailable, match="none registered"):
            await c.send_encoded("nobody", b"hi", None, "interactive", 5.0, "Ping")
    finally:
        await c.close()
