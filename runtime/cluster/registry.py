"""The application's directory on Ray: who is alive where, the shared state, and the fallback
task queue. One actor per application.

Why one actor: replicas need a rendezvous that outlives any of them — to find each other's
actor handles and shm rings after a restart, to give a late joiner (or a lapped ring reader)
the current shared state, and to carry state across Ray nodes, where rings cannot reach.
Hot paths do not go through it: a send goes straight to a replica, a co-located publish or
state write goes through a ring; the registry only learns of state writes asynchronously.

Membership and state are both versioned feeds that clients long-poll (``members_since``,
``state_since``), so a change reaches every replica within one round trip without polling
loops. Both answer with what changed since the client's version (one changed slot is about
0.2 kB), and a client that is new, or knew another incarnation, gets a full snapshot: a
membership change costs each replica the change, not the whole list (docs/SCALING.md).

State values are last-writer-wins by ``(counter, writer)`` — a Lamport clock — so the same
update arriving twice (ring and registry) or out of order settles to the same value everywhere.

Losing the registry loses nothing. Every replica (and the driver) holds a whole copy of the
shared state, so the copies are the replicas of the registry's state: each incarnation of the
registry has its own ``epoch``, both feeds answer a client that names another epoch at once,
and a client that sees a new epoch registers again and hands the new registry its copy. The
merge is the same last-writer-wins, so a copy that arrives late, twice, or older than a newer
write changes nothing. (The state lives as long as one replica does: it is shared, not
durable; what must outlive the application belongs in a task's result or the caller's store.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import ray

from agents.runtime_api import TaskInfo
from agents.tracing import TraceContext
from runtime.core.loops import Loops
from runtime.queues import InProcessTaskQueue, TaskQueue, TaskRecord

__all__ = [
    "ActorTaskQueue",
    "Member",
    "Registry",
    "StateUpdate",
    "TaskQueueActor",
    "cancel_call",
]

StateVersion = tuple[int, str]
"""(Lamport counter, writer id): totally ordered, so every copy picks the same winner."""


@dataclass(frozen=True)
class StateUpdate:
    """One key's new value (``None``: deleted) at a version."""

    key: str
    version: StateVersion
    value: bytes | None


@dataclass(frozen=True)
class Member:
    """One live replica incarnation."""

    replica_id: str  # "<agent>/<index>/<incarnation>": a restart is a new member
    agent: str
    index: int
    node_id: str
    handle: Any  # the AgentHost actor handle
    ring: Any | None  # its shm RingHandle, or None when it has none
    socket: str | None = None  # under Serve: where it takes co-located calls (cluster.sockets)

    @property
    def slot(self) -> str:
        """``<agent>/<index>``: the same across restarts."""
        return f"{self.agent}/{self.index}"


class Registry:
    """Membership + shared state feeds. Used as a Ray actor (``ray.remote(Registry)``)."""

    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex
        """This incarnation; a restarted registry has a new one and starts empty."""
        self._members: dict[str, Member] = {}  # by slot: the newest incarnation wins
        self._members_version = 0
        self._member_changes: dict[str, int] = {}  # slot -> version of its last change
        self._state: dict[str, tuple[StateVersion, bytes | None, int]] = {}  # key -> (ver, v, seq)
        self._state_seq = 0
        self._changed = asyncio.Condition()

    async def register(self, member: Member) -> int:
        """Add (or replace the older incarnation of) a replica; returns the new version."""
        self._members[member.slot] = member
        return await self._bump_members([member.slot])

    async def unregister(self, replica_id: str) -> int:
        """Remove a replica incarnation (no-op if a newer one took its slot)."""
        gone = [slot for slot, m in self._members.items() if m.replica_id == replica_id]
        for slot in gone:
            del self._members[slot]
        return await self._bump_members(gone)

    async def members_since(
        self, version: int, timeout_s: float, epoch: str = ""
    ) -> tuple[str, int, bool, list[tuple[str, Member | None]]]:
        """Wait up to ``timeout_s`` for a membership newer than ``version``; return
        ``(epoch, version, full, changes)``: ``changes`` are ``(slot, member)`` pairs, ``None``
        for a slot emptied since ``version``. ``full``: they are the whole membership instead,
        because the client names another ``epoch`` (an earlier incarnation, or none yet); it is
        answered at once."""
        async with self._changed:
            full = epoch != self.epoch
            if not full and self._members_version <= version:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._members_version > version), timeout_s
                    )
                except asyncio.TimeoutError:
                    pass
            if full:
                changes = list(self._members.items())
            else:
                changes = [
                    (slot, self._members.get(slot))
                    for slot, v in self._member_changes.items()
                    if v > version
                ]
            return self.epoch, self._members_version, full, changes

    async def put_state(self, updates: list[StateUpdate]) -> int:
        """Apply updates that win over what is stored; returns the state sequence number."""
        async with self._changed:
            for u in updates:
                current = self._state.get(u.key)
                if current is None or u.version > current[0]:
                    self._state_seq += 1
                    self._state[u.key] = (u.version, u.value, self._state_seq)
            self._changed.notify_all()
            return self._state_seq

    async def state_since(
        self, seq: int, timeout_s: float, epoch: str = ""
    ) -> tuple[str, int, list[StateUpdate]]:
        """Wait up to ``timeout_s`` for state changes after ``seq``; return them with this
        registry's epoch. A client that names another ``epoch``, or ``seq`` 0, gets every key
        (the snapshot a late joiner, a lapped reader or a client of an earlier incarnation
        starts from); another epoch gets it at once."""
        if epoch != self.epoch:
            seq = 0
        async with self._changed:
            if epoch == self.epoch and self._state_seq <= seq:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._state_seq > seq), timeout_s
                    )
                except asyncio.TimeoutError:
                    pass
            changes = [
                StateUpdate(k, ver, value) for k, (ver, value, s) in self._state.items() if s > seq
            ]
            return self.epoch, self._state_seq, changes

    async def _bump_members(self, slots: list[str]) -> int:
        async with self._changed:
            self._members_version += 1
            for slot in slots:  # one entry per slot ever used: bounded by the replica count
                self._member_changes[slot] = self._members_version
            self._changed.notify_all()
            return self._members_version


class TaskQueueActor:
    """The in-process task queue, hosted in one actor so every replica shares it (used when no
    Redis is configured; it is not durable across this actor's death).

    A worker that dies holding a task cannot ack it, and its pending ``claim`` may even take a
    task after it died (nothing cancels a call whose caller is gone). So a claimed task is
    *leased*: unless acked, failed or released within ``visibility_timeout_s``, it goes back
    to the queue. The attempt number fences the lease: an ack, fail or release that names an
    older attempt (its lease ran out and the task was handed out again) is ignored. Delivery
    is at least once, as with the Redis backend.
    """

    def __init__(
        self, max_pending: int, max_attempts: int, visibility_timeout_s: float = 30.0
    ) -> None:
        self._q = InProcessTaskQueue(max_pending=max_pending, max_attempts=max_attempts)
        self._claimed: dict[str, tuple[TaskRecord, float]] = {}  # id -> (record, lease end)
        self._visibility_s = visibility_timeout_s
        self._loops = Loops("task queue actor")

    async def put(self, queue: str, payload: bytes, traceparent: str) -> str:
        return await self._q.put(queue, payload, TraceContext.parse(traceparent))

    async def claim(self, queue: str, consumer: str) -> tuple[str, bytes, str, int]:
        if not self._loops.running():
            self._loops.start("queue-reaper", self._reap)
        rec = await self._q.claim(queue, consumer)
        self._claimed[rec.id] = (rec, time.monotonic() + self._visibility_s)
        return rec.id, rec.payload, rec.trace.traceparent, rec.attempts

    async def ack(self, task_id: str, result: bytes, attempt: int) -> None:
        if (rec := self._holder(task_id, attempt)) is not None:
            await self._q.ack(rec, result)

    async def fail(self, task_id: str, error: str, attempt: int) -> None:
        if (rec := self._holder(task_id, attempt)) is not None:
            await self._q.fail(rec, error)

    async def release(self, task_id: str, attempt: int) -> None:
        if (rec := self._holder(task_id, attempt)) is not None:
            await self._q.release(rec)

    def _holder(self, task_id: str, attempt: int) -> TaskRecord | None:
        """The claimed record, if ``attempt`` still holds its lease (and end the lease)."""
        held = self._claimed.get(task_id)
        if held is None or held[0].attempts != attempt:
            return None
        del self._claimed[task_id]
        return held[0]

    async def info(self, task_id: str) -> TaskInfo:
        return await self._q.info(task_id)

    async def backlog(self, queue: str) -> int:
        return await self._q.backlog(queue)

    async def wait(self, task_id: str, timeout_s: float | None) -> TaskInfo:
        return await self._q.wait(task_id, timeout_s)

    def max_pending(self) -> int:
        return self._q.max_pending

    async def close(self) -> None:
        """Stop the lease reaper."""
        await self._loops.close()

    async def _reap(self) -> None:
        """Put tasks whose lease ran out back on their queue (their worker is gone or hung)."""
        while True:
            await asyncio.sleep(min(1.0, self._visibility_s / 4))
            now = time.monotonic()
            for task_id, (rec, lease_end) in list(self._claimed.items()):
                if lease_end <= now:
                    del self._claimed[task_id]
                    await self._q.fail(rec, "the worker did not finish within the lease")


class ActorTaskQueue(TaskQueue):
    """A ``TaskQueue`` whose storage is a :class:`TaskQueueActor`: a Ray actor handle or a
    Serve deployment handle (both answer ``.method.remote(...)`` with an awaitable)."""

    def __init__(self, actor: Any, max_pending: int) -> None:
        self._actor = actor
        self.max_pending = max_pending

    async def put(self, queue: str, payload: bytes, trace: TraceContext) -> str:
        return await self._actor.put.remote(queue, payload, trace.traceparent)

    async def claim(self, queue: str, consumer: str) -> TaskRecord:
        ref = self._actor.claim.remote(queue, consumer)
        try:
            task_id, payload, traceparent, attempts = await ref
        except asyncio.CancelledError:
            # The actor may have claimed it already; it will be redelivered only by a
            # durable backend. Cancel the pending claim so it does not take a task later.
            cancel_call(ref)
            raise
        return TaskRecord(task_id, queue, payload, TraceContext.parse(traceparent), attempts)

    async def ack(self, rec: TaskRecord, result: bytes) -> None:
        await self._actor.ack.remote(rec.id, result, rec.attempts)

    async def fail(self, rec: TaskRecord, error: str) -> None:
        await self._actor.fail.remote(rec.id, error, rec.attempts)

    async def release(self, rec: TaskRecord) -> None:
        await self._actor.release.remote(rec.id, rec.attempts)

    async def info(self, task_id: str) -> TaskInfo:
        return await self._actor.info.remote(task_id)

    async def backlog(self, queue: str) -> int:
        return await self._actor.backlog.remote(queue)

    async def wait(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        return await self._actor.wait.remote(task_id, timeout_s)


def cancel_call(ref: Any) -> None:
    """Cancel a pending call: a Serve ``DeploymentResponse`` cancels itself, an ``ObjectRef``
    goes through Ray. (The registry and the queue are Ray actors standalone and Serve
    deployments under ``serve_app``; their callers hold either kind.)"""
    if hasattr(ref, "cancel"):
        ref.cancel()
    else:
        ray.cancel(ref)
