"""The in-process task queue: named FIFO queues on one asyncio loop, for ``LocalRuntime`` and a
``RayRuntime`` without Redis (the registry actor holds one). It lives and dies with its process.
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
from runtime.queues.base import QueueFull, TaskQueue, TaskRecord

__all__ = ["InProcessTaskQueue"]


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
