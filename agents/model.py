"""The model interface a handler sees as ``ctx.llm``, and the values that cross it.

A :class:`ModelClient` is whatever answers for the agent's ``model``: in production a client of a
vLLM ``ModelServer`` deployment, in authors' unit tests :class:`agents.testing.ScriptedModel`.
Sampling parameters are validated here, in :class:`SamplingParams`, so that every client (and the
HTTP gateway) rejects the same bad values with the same :class:`~agents.errors.InvalidParameter`
before anything reaches an engine.

Example:
    >>> SamplingParams(max_tokens=16, temperature=0.0).is_deterministic
    True
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, Union, runtime_checkable

from agents import codec
from agents.errors import InvalidParameter

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Handoff",
    "ModelClient",
    "ModelReply",
    "SamplingParams",
    "TextStream",
    "Usage",
]

ChatMessage = dict[str, Any]
"""One chat turn, OpenAI style: ``{"role": "user", "content": "..."}``."""

Prompt = Union[str, Sequence[ChatMessage]]

FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters, validated on construction.

    Attributes:
        max_tokens: most tokens to generate, >= 1.
        temperature: finite, >= 0; 0 is greedy (and cacheable).
        top_p: in (0, 1].
        top_k: -1 (off) or >= 1.
        stop: strings that end generation.
        seed: fixes sampling for a reproducible answer.
        n: number of choices, >= 1.
        ignore_eos: keep generating past end-of-sequence tokens up to ``max_tokens`` (vLLM's
            extension; load tests use it to fix output lengths).

    Raises:
        InvalidParameter: a value is out of range; the message names the field.
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        _check_int("max_tokens", self.max_tokens, lo=1)
        _check_int("n", self.n, lo=1)
        _check_int("top_k", self.top_k, lo=-1)
        if self.top_k == 0:
            raise InvalidParameter("top_k", 0, "-1 (disabled) or an integer >= 1")
        _check_number("temperature", self.temperature, lo=0.0)
        _check_number("top_p", self.top_p, lo=0.0, lo_open=True, hi=1.0)
        if self.seed is not None:
            _check_int("seed", self.seed, lo=0)
        if not all(isinstance(s, str) and s for s in self.stop):
            raise InvalidParameter("stop", self.stop, "non-empty strings")
        if not isinstance(self.ignore_eos, bool):
            raise InvalidParameter("ignore_eos", self.ignore_eos, "true or false")

    @property
    def is_deterministic(self) -> bool:
        """Whether the same prompt always gets the same answer: greedy, or a fixed seed."""
        return self.temperature == 0 or self.seed is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, e.g. for a cache key or an engine call."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


def _check_int(name: str, value: Any, *, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise InvalidParameter(name, value, f"an integer >= {lo}")


def _check_number(
    name: str, value: Any, *, lo: float, lo_open: bool = False, hi: float | None = None
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    # Finite too: +inf passes a lower bound, and would fail later, deeper (cache keys and JSON
    # refuse it) instead of here, as the caller's error.
    ok = ok and _is_finite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
    if not ok:
        bound = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        raise InvalidParameter(name, value, f"a finite number {bound}")


def _is_finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a double's range
        return False


@dataclass(frozen=True)
class Usage:
    """Token counts of one call, as OpenAI's ``usage``."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ModelReply:
    """A finished model answer.

    Attributes:
        text: the first choice's text.
        model: the name of the model that answered (a fallback model names itself here).
        finish_reason: why generation stopped.
        usage: token counts.
        choices: every choice's text when ``n > 1``; ``[text]`` otherwise.
    """

    text: str
    model: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.choices:
            object.__setattr__(self, "choices", (self.text,))


@dataclass
class ChatRequest:
    """A chat, as an agent receives it when it is called like a model.

    The HTTP gateway turns ``POST /v1/chat/completions`` with ``"model": "agent:<name>"`` into
    this message; an agent that wants to be callable that way has a handler for it, returning a
    ``str`` or a :class:`ModelReply` (which carries usage and the finish reason).

    Attributes:
        messages: the turns, OpenAI style.
        params: the request's sampling parameters, already validated
            (:class:`SamplingParams` fields); pass them on with ``ctx.llm.chat(messages,
            **params)`` or ignore them.
        stream: the caller reads the answer as a stream. A streaming handler may then pass
            tokens on as they come (``ctx.llm.stream``), and otherwise save the per-token hops
            with one ``ctx.llm.chat`` (what ``examples/assistant.py`` does).
    """

    messages: list[ChatMessage]
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False


@dataclass(frozen=True)
class Handoff:
    """A model stream an agent passed on without reading it: what a replica sends instead of
    the stream's tokens when its caller can run the stream itself (the gateway, which holds the
    model's engine), so the tokens go engine -> client and skip the agent's hops. Made by the
    runtime when a streaming handler yields a :class:`TextStream`; handlers never build one.

    Attributes:
        model: the configured model's name.
        prompt: chat turns, or a raw prompt.
        params: sampling parameters, as given to ``ctx.llm.stream``.
        traceparent: the handler's trace position (the model call is its child), or None.
    """

    model: str
    prompt: list[ChatMessage] | str
    params: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None


for _t in (ChatRequest, Handoff, ModelReply, Usage):  # what the gateway decodes from any agent
    codec.register(_t)


@runtime_checkable
class ModelClient(Protocol):
    """What ``ctx.llm`` offers. Keyword arguments are :class:`SamplingParams` fields."""

    async def chat(self, messages: Sequence[ChatMessage], **params: Any) -> ModelReply:
        """Answer a chat (a list of ``{"role", "content"}`` turns)."""
        ...

    async def complete(self, prompt: str, **params: Any) -> ModelReply:
        """Continue a raw prompt."""
        ...

    def stream(self, prompt: Prompt, **params: Any) -> TextStream:
        """Text deltas as they are generated: a list of turns is a chat, a string a
        completion. Closing the iterator early aborts the generation; once it is exhausted,
        its ``reply`` is the whole answer (finish reason, usage)."""
        ...


class TextStream(AsyncIterator[str]):
    """What ``ctx.llm.stream(...)`` returns: the first choice's text deltas, then — once the
    iteration ends — the whole answer as :attr:`reply` (text, finish reason, token usage),
    which a streaming chat agent yields last so its caller gets the usage too.

    A streaming handler that only passes a stream on yields the stream itself: its caller
    gets the same items (each text delta, then the reply), and when the caller can run the
    model itself -- the HTTP gateway, which holds the engine -- the tokens skip the agent's hops
    altogether (the replica sends a :class:`Handoff` instead; the handler never sees them).

    Args:
        source: the model client's generator: ``str`` deltas, then one ``ModelReply``.
        handoff: what the stream would generate, for a caller that can run it itself; None
            when the stream cannot be described (a scripted or wrapped model).

    Example:
        >>> async def chat(self, msg, ctx):                 # a streaming handler
        ...     stream = ctx.llm.stream(msg.messages)
        ...     async for text in stream:
        ...         yield text
        ...     yield stream.reply
        >>> async def relay(self, msg, ctx):                # the same items, fewer hops
        ...     yield ctx.llm.stream(msg.messages)
    """

    __slots__ = ("_source", "_started", "handoff", "reply")

    def __init__(
        self, source: AsyncGenerator[str | ModelReply, None], handoff: Handoff | None = None
    ) -> None:
        self._source = source
        self._started = False
        self.handoff = handoff
        self.reply: ModelReply | None = None
        """The whole answer, set when the stream ends (None before, or if it was cut off)."""

    @property
    def started(self) -> bool:
        """Whether anything was read from it (then it can no longer be handed off)."""
        return self._started

    def __aiter__(self) -> TextStream:
        return self

    async def __anext__(self) -> str:
        self._started = True
        item = await anext(self._source)
        if isinstance(item, ModelReply):
            self.reply = item
            await self._source.aclose()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop early: the model stops generating."""
        await self._source.aclose()

    async def items(self) -> AsyncIterator[str | ModelReply]:
        """What a handler passes on when it yields this stream: each text delta, then the
        whole reply. Closing it early stops the generation."""
        try:
            async for text in self:
                yield text
        finally:
            await self.aclose()
        if self.reply is not None:
            yield self.reply
