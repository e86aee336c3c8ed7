"""``Context``: everything a handler may use, given to it with each message.

A context is built by the runtime for one handler call. It carries the agent's model client, the
trace position of this call (every ``send``/``publish``/``submit`` from the handler continues the
same trace as a child span) and a logger that tags records with the agent and trace id.
Cancellation needs no API: when the caller gives up, the handler's task is cancelled and
``asyncio.CancelledError`` is raised at its current ``await``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from agents.errors import UnknownModel
from agents.model import ModelClient
from agents.runtime_api import Priority, Runtime, SharedState
from agents.tracing import Span

__all__ = ["Context"]


class Context:
    """What a handler sees as ``ctx``.

    Attributes:
        agent: the name of the agent handling the message.
        span: the current trace span (``ctx.span.set_attribute(...)``); ``span.context`` is the
            W3C trace position that outgoing messages continue.

    Example:
        >>> async def answer(self, msg, ctx):               # inside an Agent
        ...     reply = await ctx.llm.chat([{"role": "user", "content": msg.text}])
        ...     await ctx.publish("answers", {"q": msg.text, "a": reply.text})
        ...     return reply.text
    """

    __slots__ = ("_llm", "_logger", "_model_name", "_models_known", "_runtime", "agent", "span")

    def __init__(
        self,
        *,
        agent: str,
        runtime: Runtime,
        span: Span,
        llm: ModelClient | None,
        model_name: str | None,
        models_known: tuple[str, ...] = (),
    ) -> None:
        self.agent = agent
        self._runtime = runtime
        self.span = span
        self._llm = llm
        self._model_name = model_name
        self._models_known = models_known
        self._logger: logging.LoggerAdapter | None = None

    @property
    def logger(self) -> logging.LoggerAdapter:
        """A logger whose records carry the agent name and trace id (made on first use)."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger(f"raygent.agent.{self.agent}"),
                {"agent": self.agent, "trace_id": self.span.context.trace_id},
            )
        return self._logger

    @property
    def llm(self) -> ModelClient:
        """The client of this agent's ``model``.

        Raises:
            UnknownModel: the agent's model is not configured (or the agent has ``model = None``).
        """
        if self._llm is None:
            raise UnknownModel(str(self._model_name), self._models_known)
        return self._llm

    @property
    def state(self) -> SharedState:
        """The application's shared key/value state."""
        return self._runtime.state

    async def send(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
    ) -> Any:
        """Ask another agent and return its reply. See ``Runtime.send`` for the errors."""
        return await self._runtime.send(
            agent, msg, timeout_s=timeout_s, priority=priority, trace=self.span.context
        )

    def stream(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
    ) -> AsyncIterator[Any]:
        """Ask another agent and iterate over its reply as it streams (``async for``); a
        streaming handler can pass the items on with ``yield``. See ``Runtime.stream``."""
        return self._runtime.stream(
            agent, msg, timeout_s=timeout_s, priority=priority, trace=self.span.context
        )

    async def publish(self, topic: str, msg: Any) -> None:
        """Publish to every agent subscribed to ``topic``. See ``Runtime.publish``."""
        await self._runtime.publish(topic, msg, trace=self.span.context)

    async def submit(self, queue: str, task: Any) -> str:
        """Queue a durable task for a worker agent; returns the task id. See ``Runtime.submit``."""
        return await self._runtime.submit(queue, task, trace=self.span.context)

    async def task(self, task_id: str) -> Any:
        """The state of a submitted task (``TaskInfo``)."""
        return await self._runtime.task(task_id)
