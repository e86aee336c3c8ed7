"""``@handler``: how an agent says which messages it takes, checked when the class is defined.

A handler is ``async def name(self, msg: T, ctx: Context) -> R``. The type hint of ``msg`` is the
route: a message goes to the handler whose type matches it (the closest class in the message's
MRO, so ``bool`` prefers a ``bool`` handler over an ``int`` one, and ``Any``/``object`` is the
catch-all). A union (``A | B``) routes both types to one handler.

Three channels, each with its own routes:

* ``@handler``               — request/response: ``send(agent, msg)`` returns the handler's value;
* ``@handler(topic="t")``    — pub/sub: every subscribing agent gets each message on ``t`` once;
* ``@handler(queue="q")``    — durable tasks: ``submit("q", task)`` runs it once, on one worker.

A direct handler may also *stream* its reply: an ``async def`` with ``yield`` in it, hinted
``-> AsyncIterator[R]``. ``stream(agent, msg)`` then gets each item as it is yielded (an LLM
agent passes tokens on as they come); ``send(agent, msg)`` gets the list of all items. Topic and
queue handlers have no caller to stream to, so they cannot be generators.

Mistakes an author can make here are raised as ``TypeError`` at class definition, with the line to
write instead, rather than surfacing as a routing failure under load.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union

from agents import codec
from agents.errors import NoHandler

__all__ = ["HandlerInfo", "RouteTable", "handler"]

Channel = Literal["direct", "topic", "queue"]

_MARK = "__raygent_handler__"


@dataclass(frozen=True)
class _Mark:
    topic: str | None
    queue: str | None


@dataclass(frozen=True)
class HandlerInfo:
    """A resolved handler: the method, what it takes, and where it listens."""

    name: str
    func: Callable[..., Any]
    message_types: tuple[type, ...]
    channel: Channel
    key: str | None  # the topic or queue name; None for direct handlers
    streams: bool = False  # an async generator: its reply is a stream of items

    def describe(self) -> str:
        kinds = " | ".join(t.__name__ for t in self.message_types)
        where = f" on {self.channel} {self.key!r}" if self.key else ""
        return f"{self.name}({kinds}){where}"


def handler(
    func: Callable[..., Any] | None = None, *, topic: str | None = None, queue: str | None = None
) -> Any:
    """Mark an ``async def`` method as a message handler.

    Args:
        func: the method (when used as bare ``@handler``).
        topic: subscribe this handler to a pub/sub topic instead of direct messages.
        queue: serve this durable task queue instead of direct messages.

    Raises:
        TypeError: the method is not ``async def``, or both ``topic`` and ``queue`` are given.

    Example:
        >>> from agents import Agent, Context
        >>> class Echo(Agent):
        ...     @handler
        ...     async def echo(self, msg: str, ctx: Context) -> str:
        ...         return msg
        >>> Echo.routes().direct_types()
        ['str']
    """
    if topic is not None and queue is not None:
        raise TypeError("@handler takes topic= or queue=, not both: use two handlers")
    for label, value in (("topic", topic), ("queue", queue)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"@handler({label}=...) needs a non-empty string, got {value!r}")

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(f):
            if topic is not None or queue is not None:
                raise TypeError(
                    f"handler {f.__qualname__} yields, but a {'topic' if topic else 'queue'} "
                    "handler has no caller to stream to: return instead of yielding"
                )
        elif not inspect.iscoroutinefunction(f):
            raise TypeError(
                f"handler {f.__qualname__} is not async: write "
                f"`async def {f.__name__}(self, msg: MessageType, ctx: Context) -> ReplyType:` "
                "and return the reply"
            )
        setattr(f, _MARK, _Mark(topic, queue))
        return f

    if func is not None:
        return mark(func)
    return mark


class RouteTable:
    """Handlers of one agent class by channel and message type. Built once per class."""

    def __init__(self, agent_name: str, handlers: list[HandlerInfo]) -> None:
        self.agent_name = agent_name
        self.handlers = handlers
        self._routes: dict[tuple[Channel, str | None], dict[type, HandlerInfo]] = {}
        for h in handlers:
            table = self._routes.setdefault((h.channel, h.key), {})
            for t in h.message_types:
                other = table.get(t)
                if other is not None:
                    where = f" on {h.channel} {h.key!r}" if h.key else ""
                    raise TypeError(
                        f"{agent_name}: handlers {other.name!r} and {h.name!r} both take "
                        f"{t.__name__}{where}; keep one, or give them different message types"
                    )
                table[t] = h

    def find(self, channel: Channel, key: str | None, msg: Any) -> HandlerInfo:
        """The handler for ``msg`` on a channel.

        Raises:
            NoHandler: nothing takes this message type there.
        """
        table = self._routes.get((channel, key), {})
        for cls in type(msg).__mro__:
            h = table.get(cls)
            if h is not None:
                return h
        accepted = [t.__name__ for t in table]
        where = f" (on {channel} {key!r})" if key else ""
        raise NoHandler(self.agent_name, f"{type(msg).__name__}{where}", accepted)

    def keys(self, channel: Channel) -> list[str]:
        """Topics (or queues) this agent listens on."""
        return sorted(k for (c, k) in self._routes if c == channel and k is not None)

    def types(self, channel: Channel, key: str | None = None) -> list[type]:
        """The message types a channel (and topic or queue) accepts."""
        return list(self._routes.get((channel, key), {}))

    def streams(self, message_type: type) -> bool:
        """Whether the direct handler of ``message_type`` streams its reply."""
        h = self._routes.get(("direct", None), {}).get(message_type)
        return h is not None and h.streams

    def direct_types(self) -> list[str]:
        """Names of the message types ``send`` accepts."""
        return [t.__name__ for t in self.types("direct")]


def collect(cls: type, agent_name: str) -> RouteTable:
    """Resolve every handler of ``cls`` (its own and inherited; an override by name wins).

    Raises:
        TypeError: a handler's signature or hints are wrong; the message says what to write.
    """
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if callable(value) and hasattr(value, _MARK):
                found[attr] = value
            elif attr in found:
                del found[attr]  # overridden by a non-handler
    return RouteTable(agent_name, [_resolve(cls, name, f) for name, f in found.items()])


def _resolve(cls: type, name: str, func: Callable[..., Any]) -> HandlerInfo:
    mark: _Mark = getattr(func, _MARK)
    where = f"{cls.__name__}.{name}"
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 3 or len(params) != 3:
        raise TypeError(
            f"handler {where} must take exactly (self, msg, ctx): write "
            f"`async def {name}(self, msg: MessageType, ctx: Context) -> ReplyType:`"
        )
    try:
        hints = typing.get_type_hints(func, include_extras=False)
    except Exception as exc:
        raise TypeError(
            f"cannot resolve the type hints of handler {where}: {exc}; define the message class "
            "before the agent class, at module level"
        ) from exc
    msg_param = positional[1].name
    if msg_param not in hints:
        raise TypeError(
            f"handler {where} has no type hint on its message parameter {msg_param!r}; the hint "
            f"is the route: write `async def {name}(self, {msg_param}: MessageType, ctx: "
            "Context) -> ReplyType:`"
        )
    if "return" not in hints:
        raise TypeError(
            f"handler {where} has no return type hint: write `-> ReplyType` (or `-> None` if it "
            "returns nothing)"
        )
    types_ = _message_types(hints[msg_param], where)
    streams = inspect.isasyncgenfunction(func)
    reply = hints["return"]
    if streams:
        reply = _streamed_type(reply, where, name)
    for t in (*types_, *_reply_types(reply)):
        if codec.is_message_type(t):
            codec.register(t)
    channel: Channel = "topic" if mark.topic else "queue" if mark.queue else "direct"
    return HandlerInfo(name, func, types_, channel, mark.topic or mark.queue, streams)


def _streamed_type(hint: Any, where: str, name: str) -> Any:
    """The item type of a streaming handler's ``-> AsyncIterator[T]`` hint."""
    origin = typing.get_origin(hint)
    if origin in (
        collections.abc.AsyncIterator,
        collections.abc.AsyncGenerator,
        collections.abc.AsyncIterable,
    ):
        args = typing.get_args(hint)
        return args[0] if args else Any
    raise TypeError(
        f"handler {where} yields, so its return hint is the type of what it yields: write "
        f"`async def {name}(self, msg: MessageType, ctx: Context) -> AsyncIterator[ItemType]:`"
    )


def _message_types(hint: Any, where: str) -> tuple[type, ...]:
    if hint is Any:
        return (object,)
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        out: list[type] = []
        for arg in typing.get_args(hint):
            out.extend(_message_types(arg, where))
        return tuple(out)
    if hint is None or hint is type(None):
        return (type(None),)
    if origin is not None and isinstance(origin, type):
        return (origin,)  # list[int] routes as list, dict[str, Any] as dict
    if isinstance(hint, type):
        return (hint,)
    raise TypeError(
        f"handler {where}: {hint!r} cannot route messages; use a class (a dataclass, a pydantic "
        "model, str, int, float, bool, bytes, list, dict), a union of classes, or Any"
    )


def _reply_types(hint: Any) -> tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return tuple(t for a in typing.get_args(hint) for t in _reply_types(a))
    return (hint,) if isinstance(hint, type) else ()
