"""The contract every runtime honours, and the shared-state and task values it hands out.

``LocalRuntime`` (one asyncio loop, no Ray) and ``RayRuntime`` (agents as Ray actors) both
implement :class:`Runtime`; agent code only ever sees it through :class:`~agents.Context`, so the
same agent class runs on either.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from agents import codec
from agents.tracing import TraceContext

__all__ = ["Priority", "Runtime", "SharedState", "TaskInfo", "TaskState"]

Priority = Literal["interactive", "background"]
"""Mailbox class: interactive (a caller waits) is served before background (events, tasks), within
the configured share, so background work is never starved."""

_MAX_KEY_CHARS = 512


class TaskState(str, enum.Enum):
    """Life of a submitted task. ``DONE`` and ``DEAD`` are final."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"  # failed every allowed attempt; kept for inspection (the dead-letter list)

    @property
    def final(self) -> bool:
        return self in (TaskState.DONE, TaskState.DEAD)


@dataclass(frozen=True)
class TaskInfo:
    """What is known about a submitted task.

    Attributes:
        id: the id ``submit`` returned.
        queue: the queue it was submitted to.
        state: where it is in its life.
        attempts: handler runs started so far.
        result: the handler's return value once ``DONE``.
        error: the last failure, ``"Type: message"``, if any.
    """

    id: str
    queue: str
    state: TaskState
    attempts: int = 0
    result: Any = None
    error: str | None = None


class SharedState(Mapping[str, Any], ABC):
    """The key/value map shared by every agent of an application (``ctx.state``, ``rt.state``).

    Reads are synchronous and local (a replica reads its own copy); writes are ``await``-ed,
    because under Ray they travel to every replica. Values are anything the codec encodes, and a
    read returns a fresh copy, so mutating it changes nothing shared — call :meth:`set`.

    Example:
        >>> async def count(ctx):
        ...     await ctx.state.set("seen", ctx.state.get("seen", 0) + 1)
    """

    @abstractmethod
    def _raw(self) -> Mapping[str, bytes]:
        """The current encoded values."""

    @abstractmethod
    async def _write(self, key: str, value: bytes | None) -> None:
        """Store (``None``: delete) one encoded value everywhere."""

    def __getitem__(self, key: str) -> Any:
        return codec.decode(self._raw()[key])

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._raw()))

    def __len__(self) -> int:
        return len(self._raw())

    def __contains__(self, key: object) -> bool:
        return key in self._raw()

    async def set(self, key: str, value: Any) -> None:
        """Set ``key`` for every agent. Raises ``MessageEncodeError`` for a value that cannot
        travel, and ``TypeError`` for a key that is not a non-empty string."""
        _check_key(key)
        await self._write(key, codec.encode(value))

    async def delete(self, key: str) -> None:
        """Remove ``key`` everywhere (no error if absent)."""
        _check_key(key)
        await self._write(key, None)

    async def update(self, values: Mapping[str, Any]) -> None:
        """Set several keys; each is validated before any is written."""
        encoded = {}
        for k, v in values.items():
            _check_key(k)
            encoded[k] = codec.encode(v)
        for k, b in encoded.items():
            await self._write(k, b)

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError("shared state is written with `await ctx.state.set(key, value)`")


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_CHARS:
        raise TypeError(f"state keys are non-empty strings of at most {_MAX_KEY_CHARS} chars")


@runtime_checkable
class Runtime(Protocol):
    """The operations a runtime offers to callers outside agents (and, through ``Context``, to
    agents). ``trace`` is the caller's position in a trace: the handler's span becomes its child.
    Without it, each call starts a new trace."""

    @property
    def state(self) -> SharedState: ...

    async def send(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> Any:
        """Deliver ``msg`` to one replica of ``agent`` and return its handler's reply.

        Raises:
            UnknownAgent, NoHandler, MessageEncodeError, MessageTooLarge, Backpressure,
            SendTimeout, HandlerError, RuntimeClosed; an ``AgentError`` raised by the handler
            itself (say, ``Backpressure`` from an agent it called) passes through unchanged.
        """
        ...

    def stream(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> AsyncIterator[Any]:
        """Like ``send``, but yields the reply as it comes: each item a streaming handler
        yields, as it yields it (a plain handler's reply is the one item). ``timeout_s``
        bounds the whole stream. Leaving the loop early (``break``, or the caller cancelled)
        cancels the handler. The errors of ``send``, raised by the iteration.

        Example:
            >>> async def relay(rt):
            ...     async for token in rt.stream("assistant", ChatRequest(turns)):
            ...         print(token, end="")
        """
        ...

    async def publish(self, topic: str, msg: Any, *, trace: TraceContext | None = None) -> None:
        """Deliver ``msg`` once to every agent subscribed to ``topic``.

        Raises:
            UnknownTopic, NoHandler, MessageEncodeError, MessageTooLarge, Backpressure,
            RuntimeClosed.
        """
        ...

    async def submit(self, queue: str, task: Any, *, trace: TraceContext | None = None) -> str:
        """Queue ``task`` for a worker agent; returns its task id.

        Raises:
            UnknownQueue, NoHandler, MessageEncodeError, MessageTooLarge, Backpressure,
            RuntimeClosed.
        """
        ...

    async def task(self, task_id: str) -> TaskInfo:
        """The task's current state. Raises ``TaskNotFound``."""
        ...

    async def wait_task(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        """Wait until the task is ``DONE`` or ``DEAD``.

        Raises:
            TaskNotFound, TimeoutError.
        """
        ...

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop taking work, drain mailboxes up to ``timeout_s``, stop agents. Idempotent."""
        ...
