"""The task queue contract: what every backend does (:mod:`runtime.queues` says what it means)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from agents.runtime_api import TaskInfo
from agents.tracing import TraceContext

__all__ = ["QueueFull", "TaskQueue", "TaskRecord"]


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
