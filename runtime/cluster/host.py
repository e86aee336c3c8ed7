"""``AgentHost``: one agent replica as a Ray actor.

It wraps an :class:`~runtime.core.executor.AgentExecutor` (the instance, its bounded mailbox and
workers) and a :class:`~runtime.cluster.client.ClusterClient` (what ``ctx`` talks to), owns the
replica's shm ring, and registers itself with the application's registry.

Life of a replica::

    __init__ (sync; Ray runs it again after every crash, with the same arguments)
      └─ queues a call to its own start(): Ray runs it once __init__ returns
    start():  ring + bus → executor.on_start → register (member = new incarnation) → feeds
    deliver() / deliver_topic(): messages in
    drain():  stop claiming tasks, let the mailbox empty (up to a timeout), on_stop,
              unregister, close the ring

A crash ends the incarnation: callers with calls in flight get ``ReplicaUnavailable``
(retryable), Ray restarts the actor (``max_restarts``), ``on_start`` runs again, and the new
incarnation replaces the old one in the registry, so peers re-attach to its new ring.

Under Ray Serve the same class runs inside a Serve replica
(:class:`runtime.serve.agents.ServedAgent`): Serve's constructor awaits ``start()``, Serve's
health checks and restarts supervise it, and peers reach it through the agent deployment's
Serve handle instead of its actor handle (``serve_app`` is then the Serve application name) --
or, from the same node, through its Unix socket (:mod:`runtime.cluster.sockets`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

import ray

from agents.model import ModelClient
from agents.runtime_api import Priority
from agents.tracing import RecordingSpan, TraceContext
from runtime.cluster.bus import EventBus
from runtime.cluster.client import AppSpec, ClusterClient
from runtime.cluster.registry import ActorTaskQueue, Member
from runtime.cluster.shipping import register_shipped
from runtime.cluster.sockets import CallServer
from runtime.core.executor import AgentExecutor, context_factory
from runtime.observability.telemetry import Telemetry
from runtime.queues import TaskQueue, make_task_queue
from runtime.serve.autoscaling import BACKLOG, LOAD
from runtime.serve.options import serve_handles

__all__ = ["AgentHost"]

log = logging.getLogger(__name__)


_UNREGISTER_TIMEOUT_S = 2.0
"""How long a draining replica waits for the registry to take its ``unregister``."""

_BACKLOG_TIMEOUT_S = 2.0
"""Longest the autoscaling report waits for the task queue's backlog."""

_STREAM_BATCHES_AHEAD = 64
"""Batches a replica's stream may run ahead of a caller that does not read them."""


def _trace(traceparent: str | None) -> TraceContext | None:
    return TraceContext.parse(traceparent) if traceparent else None


class AgentHost:
    """One replica. Create with ``ray.remote(AgentHost).options(...).remote(...)``.

    Args:
        spec: the application's shape.
        agent: which agent of ``spec`` this replica runs.
        index: replica index within the agent (stable across restarts).
        registry: the registry actor.
        queue_actor: the in-process task queue actor, or None when Redis is configured.
        models: model clients by name.
        serve_app: the Serve application this replica belongs to, when Serve hosts it (then
            nothing starts itself: the Serve constructor awaits :meth:`start`).
    """

    def __init__(
        self,
        spec: AppSpec,
        agent: str,
        index: int,
        registry: Any,
        queue_actor: Any,
        models: dict[str, ModelClient],
        serve_app: str | None = None,
    ) -> None:
        # Before anything can decode: the driver's __main__ types (runtime.cluster.shipping).
        register_shipped(spec.message_types)
        self._spec = spec
        self._serve_app = serve_app
        self._agent = agent
        self._index = index
        self._registry = registry
        self._queue_actor = queue_actor
        self._models = models
        self.replica_id = f"{agent}/{index}/{uuid.uuid4().hex[:8]}"
        self._starting: asyncio.Future[None] | None = None
        self._spans: deque[RecordingSpan] = deque(maxlen=1000)
        self._telemetry = Telemetry.from_env(spec.config.telemetry, component="agent")
        self._executor: AgentExecutor | None = None
        self._client: ClusterClient | None = None
        self._bus: EventBus | None = None
        self._calls: CallServer | None = None
        # Which path topic messages and state updates took here (tests, debugging).
        self._paths: Counter[str] = Counter()
        # Ray re-runs __init__ after a crash: this queued call is what brings a restarted
        # replica back (on_start, registration) without waiting for traffic.
        if serve_app is None:
            ray.get_runtime_context().current_actor.start.remote()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Start once (concurrent callers share it); returns the replica id."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)
        return self.replica_id

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        node_id = ray.get_runtime_context().get_node_id()
        settings = self._spec.settings[self._agent]
        cls = self._spec.classes[self._agent]
        tasks = self._make_tasks()
        self._bus = EventBus(
            replica_id=self.replica_id,
            agent=self._agent,
            loop=loop,
            on_batch=self._on_ring_batch,
            on_batch_nowait=self._on_ring_batch_nowait,
            on_lapped=lambda: self._client and self._client.resync_state(),
            capacity_bytes=settings.ring_bytes,
        )
        self._client = ClusterClient(
            self._spec,
            self._registry,
            tasks,
            writer_id=self.replica_id,
            node_id=node_id,
            bus=self._bus,
            local_sink=self._on_local_topic,
            serve_handle=serve_handles(self._serve_app) if self._serve_app else None,
        )
        make_context = context_factory(cls, settings, self._client, self._models)
        self._executor = AgentExecutor(
            cls, settings, make_context, tasks, self._finished_span, consumer=self.replica_id
        )
        self._client.start()
        await self._executor.start()
        # Under Serve the actor is Serve's replica wrapper: peers on another node use the
        # deployment handle, peers on this one the replica's socket (runtime.cluster.sockets).
        actor = None if self._serve_app else ray.get_runtime_context().current_actor
        socket = None
        if self._serve_app:
            self._calls = CallServer(self, self._agent)
            socket = await self._calls.start()
        member = Member(
            self.replica_id, self._agent, self._index, node_id, actor, self._bus.handle, socket
        )
        self._client.announce(member)
        await self._registry.register.remote(member)
        log.info("replica %s started on node %s (pid %d)", self.replica_id, node_id, os.getpid())

    async def autoscaling_stats(self) -> dict[str, float]:
        """What queue-depth autoscaling sizes this agent for (``runtime.serve.autoscaling``): the
        messages this replica holds, and the tasks its queues hold for any replica. A backlog
        the queue cannot tell (Redis away) is left out rather than guessed."""
        ex = self._executor
        if ex is None:
            return {}
        stats = {LOAD: float(ex.busy())}
        try:
            stats[BACKLOG] = float(await asyncio.wait_for(ex.backlog(), _BACKLOG_TIMEOUT_S))
        except Exception as exc:  # QueueUnavailable, a timeout, the queue's replica gone
            log.info("agent %r: task backlog unknown (%s)", self._agent, type(exc).__name__)
        return stats

    def _finished_span(self, span: RecordingSpan) -> None:
        self._spans.append(span)
        self._telemetry.export(span)

    def _make_tasks(self) -> TaskQueue:
        if self._queue_actor is None:
            return make_task_queue(self._spec.config)
        return ActorTaskQueue(self._queue_actor, self._spec.config.queues.max_pending)

    async def drain(self, timeout_s: float) -> None:
        """Graceful stop: no new tasks, let queued messages finish up to ``timeout_s``, then
        ``on_stop``; unregister and free the ring."""
        if self._starting is None or self._executor is None:
            return
        ex = self._executor
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._client is not None:
            self._client.announce(None)
        if self._calls is not None:  # co-located callers go by Serve, which routes elsewhere
            self._calls.close()
        await self._unregister()
        await ex.stop_claiming()
        while ex.busy() and loop.time() < deadline:
            ex.progress.clear()
            try:
                await asyncio.wait_for(ex.progress.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        await ex.stop()
        if self._client is not None:
            await self._client.close()
        if self._bus is not None:
            self._bus.close()
        await asyncio.to_thread(self._telemetry.shutdown)

    async def _unregister(self) -> None:
        """Leave the membership, waiting at most :data:`_UNREGISTER_TIMEOUT_S` for the
        registry: when the whole application stops (``serve run`` interrupted, ``serve
        shutdown``) the registry is stopping at the same moment, and a call to it is never
        answered -- waiting for it held every agent's drain until Serve force-killed the
        replica, so ``on_stop`` never ran. A registry that is alive but slower than that keeps
        listing the replica until its slot registers again; its ring closes with it all the
        same, and co-located readers detach on their own."""
        try:
            await asyncio.wait_for(
                self._registry.unregister.remote(self.replica_id), _UNREGISTER_TIMEOUT_S
            )
        except Exception as exc:  # TimeoutError, or the registry is gone already
            log.info(
                "replica %s: leaving without unregistering (%s); the registry is stopping",
                self.replica_id,
                type(exc).__name__,
            )

    # -- messages in -------------------------------------------------------------------------

    async def deliver(self, payload: bytes, traceparent: str | None, priority: Priority) -> bytes:
        """A ``send``: run the handler, return the encoded reply. Cancelling this call (the
        caller gave up) cancels the handler."""
        ex = await self._ready()
        return await ex.send(payload, None, _trace(traceparent), priority)

    @ray.method(_generator_backpressure_num_objects=_STREAM_BATCHES_AHEAD)
    async def deliver_stream(
        self,
        payload: bytes,
        traceparent: str | None,
        priority: Priority,
        accepts_handoff: bool = False,
    ) -> AsyncIterator[list[bytes]]:
        """A ``stream``: a Ray streaming generator of batches of encoded items (whatever the
        handler yielded since the last batch left), at most ``_STREAM_BATCHES_AHEAD`` batches
        ahead of the caller (Ray's generator backpressure; then the handler's ``yield``
        waits). The caller closing it cancels the handler. ``accepts_handoff``: the caller
        runs a model stream the handler yields unread (it gets a ``Handoff`` item)."""
        ex = await self._ready()
        stream = ex.stream(payload, None, _trace(traceparent), priority, accepts_handoff)
        async for batch in stream.batches():
            yield batch

    async def deliver_topic(self, topic: str, payload: bytes, traceparent: str | None) -> None:
        """A topic message from another node (co-located ones come through the ring)."""
        self._paths["topic:ray"] += 1
        ex = await self._ready()
        ex.deliver(topic, payload, None, _trace(traceparent))

    async def _on_local_topic(self, topic: str, payload: bytes, traceparent: str | None) -> None:
        self._paths["topic:self"] += 1
        ex = await self._ready()
        ex.deliver(topic, payload, None, _trace(traceparent))

    def _on_ring_batch_nowait(self, items: list[tuple[Any, ...]]) -> int:
        """The bus's fast path, run by the loop right where it read the records: apply and
        queue items while the mailbox has room; returns how many were taken (the rest go
        to :meth:`_on_ring_batch`, which waits)."""
        ex = self._executor
        if ex is None or self._starting is None or not self._starting.done():
            return 0
        state = self._client.state if self._client else None
        for i, item in enumerate(items):
            if item[0] == "s":
                if state is not None and state.apply(item[1], item[2], item[3]):
                    self._paths["state:ring"] += 1
                continue
            if ex.mailbox.full():
                return i
            self._paths["topic:ring"] += 1
            _, topic, payload, traceparent = item
            ex.deliver(topic, payload, None, _trace(traceparent))
        return len(items)

    async def _on_ring_batch(self, items: list[tuple[Any, ...]]) -> None:
        """Records from co-located rings, in order: state applied, topic messages queued
        (waiting for mailbox room: the ring reader waits with us)."""
        await self._ready()
        while items:
            items = items[self._on_ring_batch_nowait(items) :]
            if items:  # the mailbox is full at a topic message: wait for room for that one
                assert self._executor is not None
                self._paths["topic:ring"] += 1
                _, topic, payload, traceparent = items[0]
                await self._executor.deliver_wait(topic, payload, _trace(traceparent))
                items = items[1:]

    async def _ready(self) -> AgentExecutor:
        ex = self._executor
        if ex is not None and self._starting is not None and self._starting.done():
            return ex  # the hot path: started, no awaits
        await self.start()
        assert self._executor is not None
        return self._executor

    # -- introspection -----------------------------------------------------------------------

    async def load(self) -> dict[str, int]:
        """Mailbox depth and running handlers: the cheap part of :meth:`stats` (metrics)."""
        ex = await self._ready()
        return {"mailbox": len(ex.mailbox), "inflight": ex.inflight}

    async def stats(self) -> dict[str, Any]:
        """Load and recent spans, for routing decisions, tests and debugging."""
        return {
            "replica_id": self.replica_id,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            **await self.load(),
            "attached": sorted(self._bus.attached()) if self._bus else [],
            "socket": self._calls.path if self._calls else None,
            "paths": {
                **self._paths,
                **(self._client.paths if self._client else {}),
                **({"call:socket": self._calls.calls} if self._calls else {}),
            },
            "state": {k: self._client.state[k] for k in self._client.state} if self._client else {},
            "spans": [
                {
                    "name": s.name,
                    "trace_id": s.context.trace_id,
                    "span_id": s.context.span_id,
                    "parent_span_id": s.parent_span_id,
                    "attributes": dict(s.attributes),
                }
                for s in self._spans
            ],
        }
