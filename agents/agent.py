"""``Agent``: the base class agent authors subclass.

An agent is a plain class with ``@handler`` methods. Its routes are resolved once, when the class
is defined (``__init_subclass__``), so a wrong handler is a ``TypeError`` at import time. A runtime
makes one instance per replica with no arguments, calls :meth:`Agent.on_start`, feeds it messages
through its mailbox, and calls :meth:`Agent.on_stop` on shutdown.

Example:
    >>> from agents import Agent, Context, handler
    >>> class ResearchAssistant(Agent):
    ...     @handler
    ...     async def ask(self, msg: str, ctx: Context) -> str:
    ...         return msg.upper()
    >>> ResearchAssistant.name
    'research_assistant'
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from agents.handlers import RouteTable, collect

if TYPE_CHECKING:
    from agents.context import Context

__all__ = ["Agent"]


def _snake_case(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class Agent:
    """Base class of every agent.

    Attributes:
        name: how other agents and callers address it; default: the class name in snake_case.
        model: the configured model that ``ctx.llm`` talks to; ``None`` for an agent without one.
    """

    name: ClassVar[str] = "agent"
    model: ClassVar[str | None] = "default"
    __raygent_routes__: ClassVar[RouteTable]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = _snake_case(cls.__name__)
        if not isinstance(cls.name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", cls.name):
            raise TypeError(
                f"{cls.__name__}.name = {cls.name!r}: use lowercase letters, digits, '_', '.', '-'"
            )
        cls.__raygent_routes__ = collect(cls, cls.name)

    @classmethod
    def routes(cls) -> RouteTable:
        """The class's handlers by channel and message type."""
        return cls.__raygent_routes__

    async def on_start(self, ctx: Context) -> None:
        """Called once per replica before it takes messages (again after a restart)."""

    async def on_stop(self, ctx: Context) -> None:
        """Called once per replica on graceful shutdown, after its mailbox drained."""
