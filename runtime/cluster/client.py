"""``ClusterClient``: the ``agents.Runtime`` contract on a Ray cluster, for replicas and drivers.

Every agent replica holds one (it is what ``ctx`` talks to), and so does the driver's
``RayRuntime``. It knows the application's static shape (:class:`AppSpec`: agent classes,
topics, queues) and follows the registry's membership and state feeds, so it can:

* ``send`` — pick a replica of the target (power of two choices on this client's own in-flight
  counts, as Serve's router does) and call it directly; a timeout or a cancelled caller
  cancels the remote handler (``ray.cancel``);
* ``publish`` — choose one replica per subscribing agent; co-located targets get one record
  through this replica's shm ring, others a Ray call (``deliver_topic``);
* ``state`` — reads are local; a write goes to co-located replicas through the ring and to the
  registry (which feeds every other replica and the driver); last writer wins everywhere; a
  restarted registry is handed every client's copy (see ``runtime.cluster.registry``);
* ``submit`` — put the task on the shared task queue (Redis Streams, or the registry's
  in-process queue actor).

Under Ray Serve (``serve_app``) the client is given ``serve_handle``: a send to a replica on
another node, and a topic message for one, then go through the agent deployment's Serve handle,
so Serve's router picks the replica (its power of two choices on queue length, its retries
around replicas that are starting or gone). Between co-located replicas, rings carry topic
messages and state, and a send or a stream goes through the callee's Unix socket
(:mod:`runtime.cluster.sockets`: through Serve's handle, an agent's call cost 6 ms of CPU and,
at 16 concurrent streams, 58 ms to its first item), as Serve's own router prefers a replica on
the caller's node; a replica that does not answer there is reached through Serve's handle.

Ray's and Serve's errors are translated at this boundary (:func:`translate`, with
:mod:`runtime.cluster.ray_errors`), so callers see only ``agents.errors``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ray import exceptions as rex
from ray.serve.exceptions import RayServeException

from agents import Agent, codec
from agents.errors import (
    AgentError,
    Backpressure,
    MessageTooLarge,
    ReplicaUnavailable,
    RuntimeClosed,
    SendTimeout,
    UnknownAgent,
    UnknownTopic,
)
from agents.runtime_api import Priority, SharedState, TaskInfo
from agents.tracing import TraceContext
from runtime.cluster.ray_errors import RAY_ERRORS, raise_sdk_error
from runtime.cluster.registry import Member, StateUpdate, StateVersion, cancel_call
from runtime.cluster.sockets import Connection
from runtime.config import AgentConfig, RaygentConfig
from runtime.core.local import encode_checked, put_task
from runtime.core.loops import Loops, backoff
from runtime.core.streaming import decoded
from runtime.core.timeouts import within
from runtime.queues import TaskQueue

if TYPE_CHECKING:
    from runtime.cluster.bus import EventBus

__all__ = ["AppSpec", "ClusterClient", "ClusterState", "translate"]

log = logging.getLogger(__name__)

_POLL_S = 10.0  # long-poll window of the membership and state feeds
# A feed call that failed (the registry restarting) is retried after 0.1 s, doubling to 2 s,
# jittered so that every replica's feeds do not hit the new registry in one burst.
_RETRY_FIRST_S, _RETRY_MAX_S = 0.1, 2.0
_LISTED_WAIT_S = 2.0  # longest a send waits for the feed to list its target's first replica


@dataclass(frozen=True)
class AppSpec:
    """The static shape of an application, shipped to every replica at creation."""

    name: str
    config: RaygentConfig
    classes: dict[str, type[Agent]]
    settings: dict[str, AgentConfig]
    message_types: tuple[type, ...] = ()
    """Message types that travel by value (``__main__``'s): see ``runtime.cluster.shipping``."""

    # Cached: a publish looks its topic up every time. (A frozen dataclass still takes a
    # cached_property: it writes the instance's __dict__, not through __setattr__.)
    @functools.cached_property
    def topics(self) -> dict[str, list[str]]:
        """Topic -> the agents subscribed to it."""
        out: dict[str, list[str]] = collections.defaultdict(list)
        for name, cls in self.classes.items():
            for t in cls.routes().keys("topic"):
                out[t].append(name)
        return dict(out)

    @functools.cached_property
    def queues(self) -> dict[str, list[str]]:
        """Task queue -> the agents that work it."""
        out: dict[str, list[str]] = collections.defaultdict(list)
        for name, cls in self.classes.items():
            for q in cls.routes().keys("queue"):
                out[q].append(name)
        return dict(out)


async def translate(ref: Any, agent: str) -> Any:
    """Await a Ray call (an ``ObjectRef`` or a Serve ``DeploymentResponse``) to ``agent``;
    Ray's and Serve's errors come out as SDK errors (:mod:`runtime.cluster.ray_errors`)."""
    try:
        return await ref
    except RAY_ERRORS as exc:
        raise_sdk_error(exc, agent, "agent")


class ClusterState(SharedState):
    """Shared state replicated to every replica and driver; last writer wins."""

    def __init__(self, client: ClusterClient, writer_id: str, max_value_bytes: int) -> None:
        self._client = client
        self._writer = writer_id
        self._max = max_value_bytes
        self._data: dict[str, bytes] = {}
        self._versions: dict[str, StateVersion] = {}  # deletes keep their version (tombstone)
        self._clock = 0
        self.changed = asyncio.Event()

    def _raw(self) -> Mapping[str, bytes]:
        return self._data

    def apply(self, key: str, version: StateVersion, value: bytes | None) -> bool:
        """Take an update if it is newer than what we have; returns whether it was."""
        self._clock = max(self._clock, version[0])
        current = self._versions.get(key)
        if current is not None and version <= current:
            return False
        self._versions[key] = version
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value
        self.changed.set()
        return True

    def snapshot(self) -> list[StateUpdate]:
        """Every key this copy knows, deletes included (what a restarted registry is given)."""
        return [StateUpdate(k, v, self._data.get(k)) for k, v in self._versions.items()]

    async def _write(self, key: str, value: bytes | None) -> None:
        if value is not None and len(value) > self._max:
            raise MessageTooLarge(f"state value {key!r}", len(value), self._max)
        self._clock += 1
        version = (self._clock, self._writer)
        self.apply(key, version, value)
        await self._client._propagate_state(StateUpdate(key, version, value))


@dataclass
class _Members:
    version: int = 0
    epoch: str = ""  # the registry incarnation the version counts in
    by_slot: dict[str, Member] = field(default_factory=dict)
    by_agent: dict[str, list[Member]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class _Call:
    """One call through a replica's socket, counted in flight while its block runs; leaving
    the block hangs up (before the end, that cancels the handler)."""

    def __init__(self, conn: Connection, inflight: collections.Counter[str], replica: str) -> None:
        self._conn = conn
        self._inflight = inflight
        self._replica = replica

    def __enter__(self) -> Connection:
        self._inflight[self._replica] += 1
        return self._conn

    def __exit__(self, *exc: object) -> None:
        self._inflight[self._replica] -= 1
        self._conn.close()


class ClusterClient:
    """The runtime a replica's handlers (and the driver) use.

    Args:
        spec: the application's shape.
        registry: the registry actor handle.
        tasks: the shared task queue.
        writer_id: unique id of this client (its replica id, or ``driver/<n>``).
        node_id: the Ray node this client runs on.
        bus: this replica's shm bus, or None (the driver publishes through Ray calls).
        local_sink: how to run a topic message addressed to this very replica.
        serve_handle: under Serve, the agent deployment's handle by agent name; sends and
            cross-node topic messages then go through Serve's router.
    """

    def __init__(
        self,
        spec: AppSpec,
        registry: Any,
        tasks: TaskQueue,
        *,
        writer_id: str,
        node_id: str,
        bus: EventBus | None = None,
        local_sink: Any = None,
        serve_handle: Callable[[str], Any] | None = None,
    ) -> None:
        self.spec = spec
        self._serve = serve_handle
        self._stream_handles: dict[str, Any] = {}
        self._registry = registry
        self._tasks = tasks
        self.writer_id = writer_id
        self.node_id = node_id
        self._bus = bus
        self._local_sink = local_sink
        self._max_bytes = spec.config.limits.max_message_bytes
        self._state = ClusterState(self, writer_id, self._max_bytes)
        self._members = _Members()
        self._inflight: collections.Counter[str] = collections.Counter()
        self._turns: dict[str, itertools.count[int]] = collections.defaultdict(itertools.count)
        self._loops = Loops(f"cluster client {writer_id}")
        self._state_seq = 0
        self._state_epoch = ""  # the registry incarnation _state_seq counts in
        self._state_unsent = False  # a write the registry did not take: hand it our copy
        self._closed = False
        self._me: Member | None = None
        self.paths: collections.Counter[str] = collections.Counter()
        """How state updates arrived (ring or registry), and how many calls went to a
        co-located replica's socket (``send:socket``), for tests and debugging."""

    # -- lifecycle ---------------------------------------------------------------------------

    def announce(self, member: Member | None) -> None:
        """This client's own replica: re-registered whenever the feed no longer lists it (the
        registry restarted and lost its membership)."""
        self._me = member

    def start(self) -> None:
        """Follow the membership and state feeds."""
        self._loops.start("members", self._follow_members)
        self._loops.start("state", self._follow_state)

    async def wait_members(self, expected: int, timeout_s: float) -> None:
        """Wait until at least ``expected`` replicas are known (start-up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while sum(len(v) for v in self._members.by_agent.values()) < expected:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"only {self._count()} of {expected} replicas registered")
            self._members.ready.clear()
            try:
                await asyncio.wait_for(self._members.ready.wait(), remaining)
            except asyncio.TimeoutError:
                continue

    async def close(self) -> None:
        self._closed = True
        await self._loops.close()

    def members(self, agent: str) -> list[Member]:
        """The registered replicas of ``agent`` (as of the last membership feed)."""
        return list(self._members.by_agent.get(agent, ()))

    def _count(self) -> int:
        return sum(len(v) for v in self._members.by_agent.values())

    async def _follow_members(self) -> None:
        while True:
            epoch, version, full, changes = await self._poll(
                "membership",
                lambda: self._registry.members_since.remote(
                    self._members.version, _POLL_S, self._members.epoch
                ),
            )
            if self._members.epoch and epoch != self._members.epoch:
                log.warning("the registry restarted (epoch %s): following its membership", epoch)
            by_slot = {} if full else self._members.by_slot
            for slot, member in changes:
                if member is None:
                    by_slot.pop(slot, None)
                else:
                    by_slot[slot] = member
            members = list(by_slot.values())
            by_agent: dict[str, list[Member]] = collections.defaultdict(list)
            for m in members:
                by_agent[m.agent].append(m)
            self._members.by_slot = by_slot
            self._members.version = version
            self._members.epoch = epoch
            self._members.by_agent = dict(by_agent)
            me = self._me
            if me is not None and all(m.replica_id != me.replica_id for m in members):
                log.warning("the registry does not list %s; registering again", me.replica_id)
                try:
                    await translate(self._registry.register.remote(me), "registry")
                except AgentError as exc:
                    log.warning("registering %s again failed: %s", me.replica_id, exc)
            self._members.ready.set()
            if self._bus is not None:
                self._sync_bus(members)

    def _sync_bus(self, members: list[Member]) -> None:
        assert self._bus is not None
        local = {m.replica_id: m for m in members if m.node_id == self.node_id and m.ring}
        for rid in self._bus.attached() - set(local):
            self._bus.detach(rid)
        for rid, m in local.items():
            self._bus.attach(rid, m.ring)

    async def _follow_state(self) -> None:
        while True:
            epoch, seq, changes = await self._poll(
                "state",
                lambda: self._registry.state_since.remote(
                    self._state_seq, _POLL_S, self._state_epoch
                ),
            )
            restarted = bool(self._state_epoch) and epoch != self._state_epoch
            self._state_epoch, self._state_seq = epoch, seq
            for u in changes:
                if self._state.apply(u.key, u.version, u.value):
                    self.paths["state:registry"] += 1
            if restarted or self._state_unsent:
                await self._hand_over_state(restarted)

    @staticmethod
    async def _poll(feed: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """One long poll of a registry feed, asked again after a jittered, doubling backoff
        while the registry fails (restarting, unreachable): the feed goes on where it was."""
        delays = backoff(_RETRY_FIRST_S, _RETRY_MAX_S)
        while True:
            try:
                return await call()
            except (rex.RayActorError, rex.RayTaskError, RayServeException) as exc:
                delay = next(delays)
                log.warning("%s feed failed: %s; retrying in %.2fs", feed, exc, delay)
                await asyncio.sleep(delay)

    async def _hand_over_state(self, restarted: bool) -> None:
        """Give the registry this client's whole copy: after it restarted empty, or after a
        write it did not take. Last writer wins there too, so copies from every replica merge
        to the same state, and one older than the registry's keys changes nothing."""
        self._state_unsent = False
        updates = self._state.snapshot()
        if restarted:
            log.warning("the registry restarted: handing it this copy (%d keys)", len(updates))
        if not updates:
            return
        try:
            await translate(self._registry.put_state.remote(updates), "registry")
        except ReplicaUnavailable as exc:
            log.warning("handing the state over failed (%s); again on the next feed round", exc)
            self._state_unsent = True
        else:
            self.paths["state:handed-over"] += 1

    def resync_state(self) -> None:
        """Fetch a full snapshot on the next feed round (after a ring reader was lapped)."""
        self._state_seq = 0

    async def _propagate_state(self, update: StateUpdate) -> None:
        if self._bus is not None:
            await self._bus.put_state(update.key, update.version, update.value)
        try:
            await translate(self._registry.put_state.remote([update]), "registry")
        except ReplicaUnavailable as exc:
            # The write stands here and on the ring; the registry (restarting, or out of reach)
            # gets it with this client's whole copy once its feed answers again.
            log.warning("the registry did not take a state write (%s); handing it over later", exc)
            self._state_unsent = True

    # -- the Runtime protocol ----------------------------------------------------------------

    @property
    def state(self) -> ClusterState:
        return self._state

    async def send(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> Any:
        payload = self._encode_request(agent, msg)
        traceparent = trace.traceparent if trace else None
        reply = await self.send_encoded(
            agent, payload, traceparent, priority, timeout_s, type(msg).__name__
        )
        return codec.decode(reply)

    async def send_encoded(
        self,
        agent: str,
        payload: bytes,
        traceparent: str | None,
        priority: Priority,
        timeout_s: float | None,
        what: str,
    ) -> bytes:
        """``send`` of an already encoded message; returns the encoded reply (the gateway
        relays bytes without decoding them twice)."""
        conn = await self._connect(agent)
        if conn is not None:
            with conn as call:
                try:
                    return await within(call.send(payload, traceparent, priority), timeout_s)
                except asyncio.TimeoutError:  # the hang-up cancels the handler
                    raise SendTimeout(agent, what, timeout_s or 0.0) from None
        await self._listed(agent)
        with self._target(agent) as (target, _):
            ref = target.deliver.remote(payload, traceparent, priority)
            try:
                return await within(translate(ref, agent), timeout_s)
            except asyncio.TimeoutError:
                cancel_call(ref)
                raise SendTimeout(agent, what, timeout_s or 0.0) from None
            except asyncio.CancelledError:
                cancel_call(ref)
                raise

    async def stream(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> AsyncIterator[Any]:
        payload = self._encode_request(agent, msg)
        batches = self.stream_encoded(
            agent, payload, trace.traceparent if trace else None, priority
        )
        async for item in decoded(batches, agent, type(msg).__name__, timeout_s):
            yield item

    async def stream_encoded(
        self,
        agent: str,
        payload: bytes,
        traceparent: str | None,
        priority: Priority,
        accepts_handoff: bool = False,
    ) -> AsyncGenerator[list[bytes], None]:
        """``stream`` of an already encoded message: batches of encoded items, from a Ray
        streaming generator (or Serve's stream) over ``AgentHost.deliver_stream``. Closing it
        early cancels the remote handler. ``accepts_handoff``: the caller runs model streams
        the handler yields unread, and gets a :class:`~agents.model.Handoff` item for each."""
        conn = await self._connect(agent)
        if conn is not None:
            with conn as call:
                async for batch in call.stream(payload, traceparent, priority, accepts_handoff):
                    yield batch
            return
        await self._listed(agent)
        with self._target(agent, stream=True) as (target, direct):
            gen = target.deliver_stream.remote(payload, traceparent, priority, accepts_handoff)
            finished = False
            try:
                async for item in gen:
                    # A Ray generator yields refs (awaited here); Serve's yields the values.
                    yield await translate(item, agent) if direct else item
                finished = True
            except RAY_ERRORS as exc:
                finished = True
                raise_sdk_error(exc, agent, "agent")
            finally:
                if not finished:
                    cancel_call(gen)

    async def _connect(self, agent: str) -> _Call | None:
        """Under Serve, a call to a replica of ``agent`` on this node through its socket
        (:mod:`runtime.cluster.sockets`): the least busy by this client's count, ties taken in
        turn. None when there is none, or it does not answer (it is stopping): the caller then
        goes through Serve's handle."""
        if self._serve is None:
            return None
        self._check_open()
        local = [
            m
            for m in self._members.by_agent.get(agent, ())
            if m.socket is not None and m.node_id == self.node_id
        ]
        if not local:
            return None
        first = next(self._turns[agent]) % len(local)
        member = min(local[first:] + local[:first], key=lambda m: self._inflight[m.replica_id])
        try:
            conn = await Connection.open(member.socket or "", agent)
        except OSError as exc:
            log.debug("replica %s does not take calls on its socket (%s)", member.replica_id, exc)
            return None
        self.paths["send:socket"] += 1
        return _Call(conn, self._inflight, member.replica_id)

    async def _listed(self, agent: str) -> None:
        """Standalone, when no replica of ``agent`` is known yet: wait up to
        :data:`_LISTED_WAIT_S` for the membership feed to list one. A replica's feed lags the
        registry by a round trip, so right after start-up the driver can see a replica that a
        peer it calls does not see yet (then :meth:`_pick` says none is registered)."""
        if self._serve is not None or self._members.by_agent.get(agent):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LISTED_WAIT_S
        while not self._members.by_agent.get(agent) and loop.time() < deadline:
            self._members.ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._members.ready.wait(), deadline - loop.time())

    @contextlib.contextmanager
    def _target(self, agent: str, stream: bool = False) -> Iterator[tuple[Any, bool]]:
        """What to call for ``agent``, and whether it is one replica's actor handle. Under
        Serve: the deployment's handle (Serve's router picks). Standalone: the less busy of two
        replicas, counted in flight while the block runs."""
        if self._serve is not None:
            yield (self._serve_stream(agent) if stream else self._serve(agent)), False
            return
        member = self._pick(agent)
        self._inflight[member.replica_id] += 1
        try:
            yield member.handle, True
        finally:
            self._inflight[member.replica_id] -= 1

    def _encode_request(self, agent: str, msg: Any) -> bytes:
        """Check that ``agent`` takes ``msg`` (before any network hop) and encode it."""
        self._check_open()
        cls = self.spec.classes.get(agent)
        if cls is None:
            raise UnknownAgent(agent, list(self.spec.classes))
        cls.routes().find("direct", None, msg)
        return encode_checked(msg, f"message {type(msg).__name__} to {agent!r}", self._max_bytes)

    def _serve_stream(self, agent: str) -> Any:
        handle = self._stream_handles.get(agent)
        if handle is None:
            assert self._serve is not None
            handle = self._stream_handles[agent] = self._serve(agent).options(stream=True)
        return handle

    async def publish(self, topic: str, msg: Any, *, trace: TraceContext | None = None) -> None:
        self._check_open()
        agents = self.spec.topics.get(topic)
        if not agents:
            raise UnknownTopic(topic, list(self.spec.topics))
        for agent in agents:
            self.spec.classes[agent].routes().find("topic", topic, msg)
        what = f"message {type(msg).__name__} on topic {topic!r}"
        payload = encode_checked(msg, what, self._max_bytes)
        traceparent = trace.traceparent if trace else None
        ring_targets: dict[str, str] = {}
        calls = []
        for agent in agents:
            m = self._pick_subscriber(agent)
            if m is None:  # under Serve, none co-located: Serve's router picks one
                ref = self._serve(agent).deliver_topic.remote(topic, payload, traceparent)
                calls.append(translate(ref, agent))
            elif m.replica_id == self.writer_id and self._local_sink is not None:
                calls.append(self._local_sink(topic, payload, traceparent))
            elif self._bus is not None and m.node_id == self.node_id and m.ring is not None:
                ring_targets[agent] = m.replica_id
            else:
                calls.append(
                    translate(m.handle.deliver_topic.remote(topic, payload, traceparent), agent)
                )
        if ring_targets:
            from shm import RingBufferFull

            try:
                await self._bus.publish(topic, ring_targets, payload, traceparent)
            except RingBufferFull:
                raise Backpressure(",".join(ring_targets), 0) from None
        if calls:
            await asyncio.gather(*calls)

    async def submit(self, queue: str, task: Any, *, trace: TraceContext | None = None) -> str:
        self._check_open()
        workers = [self.spec.classes[a] for a in self.spec.queues.get(queue, ())]
        return await put_task(
            self._tasks, queue, task, workers, list(self.spec.queues), trace, self._max_bytes
        )

    async def task(self, task_id: str) -> TaskInfo:
        return await self._tasks.info(task_id)

    async def wait_task(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        return await self._tasks.wait(task_id, timeout_s)

    async def shutdown(self, timeout_s: float | None = None) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosed("the runtime is closed")

    def _pick_subscriber(self, agent: str) -> Member | None:
        """The replica of ``agent`` that gets a topic message. Standalone: round robin over
        all. Under Serve: round robin over co-located ones (the ring path), or None to let
        Serve's router choose among the others."""
        if self._serve is None:
            return self._pick(agent, round_robin=True)
        local = [
            m
            for m in self._members.by_agent.get(agent, ())
            if m.node_id == self.node_id and (m.ring is not None or m.replica_id == self.writer_id)
        ]
        if not local or (self._bus is None and self._local_sink is None):
            return None
        return local[next(self._turns[agent]) % len(local)]

    def _pick(self, agent: str, *, round_robin: bool = False) -> Member:
        """A replica of ``agent``: round robin (publish), or the less busy of two random ones
        by this client's in-flight count (send)."""
        members = self._members.by_agent.get(agent)
        if not members:
            raise ReplicaUnavailable(agent, "none registered yet or all restarting")
        if round_robin or len(members) == 1:
            return members[next(self._turns[agent]) % len(members)]
        a, b = random.sample(members, 2)
        return a if self._inflight[a.replica_id] <= self._inflight[b.replica_id] else b
