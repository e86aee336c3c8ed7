"""Task queues behind ``submit``: one interface, an in-process and a Redis Streams backend.

Semantics, identical for every backend so a worker agent behaves the same on both:

* ``put`` returns a task id at once; the task is ``PENDING``.
* A dispatcher ``claim``-s the next task of a queue (``RUNNING``, ``attempts += 1``), runs the
  worker's handler, then ``ack``-s it with the result (``DONE``) or ``fail``-s it: the task goes
  back to ``PENDING`` until ``max_attempts`` runs have failed, then it is ``DEAD`` (kept, with the
  last error, as the dead-letter record).
* ``info`` and ``wait`` read a task's state by id.

The in-process queue lives and dies with its process; durability across process death is what
the Redis Streams backend adds (at-least-once with redelivery after a visibility timeout).
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from agents import codec
from agents.errors import TaskNotFound
from agents.runtime_api import TaskInfo, TaskState
from agents.tracing import TraceContext

__all__ = ["InProcessTaskQueue", "QueueFull", "TaskQueue", "TaskRecord", "make_task_queue"]


class QueueFull(Exception):
    """The queue holds ``max_pending`` tasks. Internal: the runtime raises ``Backpressure``."""


@dataclass(eq=False)
class TaskRecord:
    """One claimed (or stored) task. ``ref`` is the backend's own handle (a stream entry id)."""

    id: str
    queue: str
    payload: bytes
    trace: TraceContext
    attempts: int = 0
    ref: Any = None


class TaskQueue(ABC):
    """What a runtime needs from a task queue backend. All methods are coroutines because the
    durable backend talks to Redis; the in-process one simply never waits on I/O."""

    max_pending: int

    @abstractmethod
    async def put(self, queue: str, payload: bytes, trace: TraceContext) -> str:
        """Store a task as ``PENDING``; return its id. Raises :class:`QueueFull`."""

    @abstractmethod
    async def claim(self, queue: str, consumer: str) -> TaskRecord:
        """Wait for the next pending (or redeliverable) task; mark it ``RUNNING`` for
        ``consumer`` and count the attempt."""

    @abstractmethod
    async def ack(self, rec: TaskRecord, result: bytes) -> None:
        """The handler returned: store the result, ``DONE``."""

    @abstractmethod
    async def fail(self, rec: TaskRecord, error: str) -> None:
        """The handler raised: back to ``PENDING``, or ``DEAD`` after ``max_attempts``."""

    @abstractmethod
    async def release(self, rec: TaskRecord) -> None:
        """Give a claimed task back without counting the attempt (shutdown before it ran)."""

    @abstractmethod
    async def info(self, task_id: str) -> TaskInfo:
        """Raises ``TaskNotFound``."""

    @abstractmethod
    async def backlog(self, queue: str) -> int:
        """Tasks of ``queue`` that wait for a worker (``PENDING``: not claimed, or given back):
        the work no replica has taken yet, which queue-depth autoscaling adds replicas for."""

    @abstractmethod
    async def wait(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        """Wait for ``DONE`` or ``DEAD``. Raises ``TaskNotFound`` or ``TimeoutError``."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections. Tasks stay where they are (durable backends keep them)."""


@dataclass(eq=False)
class _Entry:
    rec: TaskRecord
    state: TaskState = TaskState.PENDING
    result: bytes | None = None
    error: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def info(self) -> TaskInfo:
        result = codec.decode(self.result) if self.result is not None else None
        r = self.rec
        return TaskInfo(r.id, r.queue, self.state, r.attempts, result, self.error)


class InProcessTaskQueue(TaskQueue):
    """Named FIFO task queues on one asyncio loop; they live and die with the process.

    Args:
        max_pending: tasks waiting per queue before ``put`` raises :class:`QueueFull`.
        max_attempts: handler runs before a task is ``DEAD``.
    """

    def __init__(self, *, max_pending: int = 10_000, max_attempts: int = 3) -> None:
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, collections.deque[_Entry]] = collections.defaultdict(
            collections.deque
        )
        self._ready: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    async def put(self, queue: str, payload: bytes, trace: TraceContext) -> str:
        if len(self._pending[queue]) >= self.max_pending:
            raise QueueFull(queue)
        entry = _Entry(TaskRecord(uuid.uuid4().hex, queue, payload, trace))
        self._entries[entry.rec.id] = entry
        self._enqueue(entry)
        return entry.rec.id

    async def claim(self, queue: str, consumer: str = "") -> TaskRecord:
        pending = self._pending[queue]
        while not pending:
            self._ready[queue].clear()
            await self._ready[queue].wait()
        entry = pending.popleft()
        entry.state = TaskState.RUNNING
        entry.rec.attempts += 1
        return entry.rec

    async def ack(self, rec: TaskRecord, result: bytes) -> None:
        entry = self._entries[rec.id]
        entry.state, entry.result, entry.error = TaskState.DONE, result, None
        entry.finished.set()

    async def fail(self, rec: TaskRecord, error: str) -> None:
        entry = self._entries[rec.id]
        entry.error = error
        if rec.attempts >= self.max_attempts:
            entry.state = TaskState.DEAD
            entry.finished.set()
        else:
            self._enqueue(entry)

    async def release(self, rec: TaskRecord) -> None:
        rec.attempts -= 1
        self._enqueue(self._entries[rec.id])

    async def info(self, task_id: str) -> TaskInfo:
        return self._get(task_id).info()

    async def backlog(self, queue: str) -> int:
        return len(self._pending.get(queue, ()))

    async def wait(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        entry = self._get(task_id)
        await asyncio.wait_for(entry.finished.wait(), timeout_s)
        return entry.info()

    def _enqueue(self, entry: _Entry) -> None:
        entry.state = TaskState.PENDING
        self._pending[entry.rec.queue].append(entry)
        self._ready[entry.rec.queue].set()

    def _get(self, task_id: str) -> _Entry:
        entry = self._entries.get(task_id)
        if entry is None:
            raise TaskNotFound(task_id)
        return entry


def make_task_queue(config: Any) -> TaskQueue:
    """The task queue a ``RaygentConfig`` asks for: Redis Streams when ``queues_url`` (or
    ``redis_url`` / ``REDIS_URL``) is set, otherwise in-process."""
    url = config.queues_url
    if url:
        from runtime.queues_redis import RedisStreamsTaskQueue

        return RedisStreamsTaskQueue(url, config.queues)
    return InProcessTaskQueue(
        max_pending=config.queues.max_pending, max_attempts=config.queues.max_attempts
    )
