"""Task queues behind ``submit``: the in-process queue (the Redis Streams one shares its shape).

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
from dataclasses import dataclass, field

from agents import codec
from agents.errors import TaskNotFound
from agents.runtime_api import TaskInfo, TaskState
from agents.tracing import TraceContext

__all__ = ["InProcessTaskQueue", "QueueFull", "TaskRecord"]


class QueueFull(Exception):
    """The queue holds ``max_pending`` tasks. Internal: the runtime raises ``Backpressure``."""


@dataclass
class TaskRecord:
    """One task and its bookkeeping."""

    id: str
    queue: str
    payload: bytes
    trace: TraceContext
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    result: bytes | None = None
    error: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def info(self) -> TaskInfo:
        result = codec.decode(self.result) if self.result is not None else None
        return TaskInfo(self.id, self.queue, self.state, self.attempts, result, self.error)


class InProcessTaskQueue:
    """Named FIFO task queues on one asyncio loop.

    Args:
        max_pending: tasks waiting per queue before ``put`` raises :class:`QueueFull`.
        max_attempts: handler runs before a task is ``DEAD``.
    """

    def __init__(self, *, max_pending: int = 10_000, max_attempts: int = 3) -> None:
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self._tasks: dict[str, TaskRecord] = {}
        self._pending: dict[str, collections.deque[TaskRecord]] = collections.defaultdict(
            collections.deque
        )
        self._ready: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    def put(self, queue: str, payload: bytes, trace: TraceContext) -> str:
        """Add a task; returns its id. Raises :class:`QueueFull`."""
        if len(self._pending[queue]) >= self.max_pending:
            raise QueueFull(queue)
        rec = TaskRecord(uuid.uuid4().hex, queue, payload, trace)
        self._tasks[rec.id] = rec
        self._enqueue(rec)
        return rec.id

    async def claim(self, queue: str) -> TaskRecord:
        """Wait for the next pending task of ``queue`` and mark it running."""
        pending = self._pending[queue]
        while not pending:
            self._ready[queue].clear()
            await self._ready[queue].wait()
        rec = pending.popleft()
        rec.state = TaskState.RUNNING
        rec.attempts += 1
        return rec

    def ack(self, rec: TaskRecord, result: bytes) -> None:
        """The handler returned: the task is done."""
        rec.state, rec.result, rec.error = TaskState.DONE, result, None
        rec.finished.set()

    def fail(self, rec: TaskRecord, error: str) -> None:
        """The handler raised (or its worker died): retry, or dead-letter after the last try."""
        rec.error = error
        if rec.attempts >= self.max_attempts:
            rec.state = TaskState.DEAD
            rec.finished.set()
        else:
            self._enqueue(rec)

    def release(self, rec: TaskRecord) -> None:
        """Put a claimed task back without counting the attempt (shutdown before it ran)."""
        rec.attempts -= 1
        self._enqueue(rec)

    def info(self, task_id: str) -> TaskInfo:
        """Raises ``TaskNotFound``."""
        return self._get(task_id).info()

    async def wait(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        """Wait for ``DONE``/``DEAD``. Raises ``TaskNotFound`` or ``TimeoutError``."""
        rec = self._get(task_id)
        await asyncio.wait_for(rec.finished.wait(), timeout_s)
        return rec.info()

    def pending(self, queue: str) -> int:
        return len(self._pending[queue])

    def _enqueue(self, rec: TaskRecord) -> None:
        rec.state = TaskState.PENDING
        self._pending[rec.queue].append(rec)
        self._ready[rec.queue].set()

    def _get(self, task_id: str) -> TaskRecord:
        rec = self._tasks.get(task_id)
        if rec is None:
            raise TaskNotFound(task_id)
        return rec
