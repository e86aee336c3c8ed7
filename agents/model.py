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

import json
import math
import re
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
    "ToolCall",
    "Usage",
]

ChatMessage = dict[str, Any]
"""One chat turn, OpenAI style: ``{"role": "user", "content": "..."}``."""

Prompt = Union[str, Sequence[ChatMessage]]

FinishReason = Literal["stop", "length", "tool_calls", "abort", "error"]

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_STRUCTURED_KEYS = ("json", "regex", "choice", "grammar")


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
        tools: functions the model may call, OpenAI style (``{"type": "function", "function":
            {"name", "description", "parameters"}}``); an :class:`agents.tools.Tool` (anything
            with an ``openai_tool`` dict) is taken as its definition.
        tool_choice: ``"none"``, ``"auto"``, ``"required"``, or ``{"type": "function",
            "function": {"name": ...}}`` to force one; unset means ``"auto"`` when ``tools``
            are given.
        response_format: OpenAI's ``{"type": "text" | "json_object" | "json_schema",
            "json_schema": {"name", "schema", "strict"}}``: the answer is constrained to JSON
            (that validates against ``schema``).
        structured_outputs: vLLM's constraint of the answer, one of ``{"json": schema}``,
            ``{"regex": pattern}``, ``{"choice": [str, ...]}`` or ``{"grammar": ebnf}``.
        parallel_tool_calls: OpenAI's switch: False allows one call per answer (with
            ``tool_choice: "required"`` the answer's schema then has one item, as in vLLM);
            None or True: any number.

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
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

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
        if self.parallel_tool_calls is not None and not isinstance(self.parallel_tool_calls, bool):
            raise InvalidParameter("parallel_tool_calls", self.parallel_tool_calls, "true or false")
        object.__setattr__(self, "tools", _check_tools(self.tools))
        _check_tool_choice(self.tool_choice, self.tools)
        _check_response_format(self.response_format)
        _check_structured(self.structured_outputs)
        fmt = self.response_format
        constrained = fmt is not None and bool(fmt) and fmt["type"] != "text"
        if constrained and self.structured_outputs:
            raise InvalidParameter(
                "structured_outputs", self.structured_outputs, "unset with response_format"
            )
        constrained = constrained or bool(self.structured_outputs)
        if constrained and self.tool_choice not in (None, "none", "auto"):
            # A forced tool call is itself a constraint (its arguments' schema): not both.
            raise InvalidParameter(
                "tool_choice", self.tool_choice, "'none' or 'auto' with response_format"
            )
        if self.calls_tools and self.n > 1:
            raise InvalidParameter("n", self.n, "1 when the model may call tools")

    @property
    def calls_tools(self) -> bool:
        """Whether the model may answer with tool calls (tools given, choice not ``"none"``)."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def effective_tool_choice(self) -> str | dict[str, Any]:
        """``tool_choice`` with OpenAI's default filled in: ``"auto"`` with tools, else
        ``"none"``."""
        if self.tool_choice is not None:
            return self.tool_choice
        return "auto" if self.tools else "none"

    @property
    def is_deterministic(self) -> bool:
        """Whether the same prompt always gets the same answer: greedy, or a fixed seed."""
        return self.temperature == 0 or self.seed is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, e.g. for a cache key or an engine call."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["tools"] = list(self.tools)
        return d


def _check_tools(tools: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(tools, (str, bytes, dict)) or not isinstance(tools, Sequence):
        raise InvalidParameter("tools", tools, "a list of function definitions")
    out = []
    names = set()
    for i, t in enumerate(tools):
        spec = getattr(t, "openai_tool", t)  # an agents.tools.Tool, or the dict itself
        is_function = isinstance(spec, dict) and spec.get("type") == "function"
        fn = spec.get("function") if is_function else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(fn, dict) or not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidParameter(
                f"tools[{i}]",
                spec,
                '{"type": "function", "function": {"name": <1-64 of [A-Za-z0-9_-]>, ...}}',
            )
        if not isinstance(fn.get("parameters", {}), dict):
            raise InvalidParameter(f"tools[{i}].function.parameters", fn["parameters"], "an object")
        if name in names:
            raise InvalidParameter(f"tools[{i}].function.name", name, "a name not used twice")
        names.add(name)
        out.append(spec)
    return tuple(out)


def _check_tool_choice(choice: Any, tools: tuple[dict[str, Any], ...]) -> None:
    if choice is None or choice == "none":
        return
    if choice in ("auto", "required"):
        if choice == "required" and not tools:
            raise InvalidParameter("tool_choice", choice, "'none' or unset without tools")
        return
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not name:
        raise InvalidParameter(
            "tool_choice",
            choice,
            '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
        )
    known = [t["function"]["name"] for t in tools]
    if name not in known:
        raise InvalidParameter("tool_choice.function.name", name, f"one of the tools: {known}")


def _check_response_format(fmt: Any) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in _RESPONSE_FORMATS:
        raise InvalidParameter(
            "response_format", fmt, f"an object with type one of {_RESPONSE_FORMATS}"
        )
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidParameter(
                "response_format.json_schema", spec, '{"name": str, "schema": {...}}'
            )
        if not isinstance(spec.get("schema", {}), dict):
            raise InvalidParameter(
                "response_format.json_schema.schema", spec["schema"], "a JSON schema object"
            )


def _check_structured(so: Any) -> None:
    if so is None:
        return
    keys = [k for k in _STRUCTURED_KEYS if isinstance(so, dict) and so.get(k) is not None]
    if not isinstance(so, dict) or len(keys) != 1 or set(so) - set(_STRUCTURED_KEYS):
        raise InvalidParameter(
            "structured_outputs", so, f"an object with exactly one of {_STRUCTURED_KEYS}"
        )
    value = so[keys[0]]
    if keys[0] == "choice":
        ok = isinstance(value, list) and value and all(isinstance(c, str) for c in value)
    elif keys[0] == "json":
        ok = isinstance(value, (dict, str))
    else:
        ok = isinstance(value, str) and bool(value)
    if not ok:
        raise InvalidParameter(f"structured_outputs.{keys[0]}", value, "a valid constraint")


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
    """Token counts of one call, as OpenAI's ``usage``. ``cached_tokens``: prompt tokens
    whose KV the engine found in its prefix cache (OpenAI's
    ``prompt_tokens_details.cached_tokens``): what a turn sent to the replica that served the
    conversation's earlier turns saves."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ToolCall:
    """A call of one of the request's tools, as the model wrote it.

    Attributes:
        id: the call's id; the tool's answer refers to it (``tool_call_id``).
        name: the tool's name.
        arguments: the arguments as JSON text, exactly as generated (it may not parse: a model
            can write anything; :meth:`args` says so with a typed error).
    """

    id: str
    name: str
    arguments: str = "{}"

    def args(self) -> dict[str, Any]:
        """The arguments, parsed.

        Raises:
            InvalidParameter: they are not a JSON object.
        """
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError as exc:
            raise InvalidParameter("arguments", self.arguments, f"a JSON object ({exc})") from None
        if not isinstance(value, dict):
            raise InvalidParameter("arguments", self.arguments, "a JSON object")
        return value

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI form, as in an assistant turn's ``tool_calls``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ModelReply:
    """A finished model answer.

    Attributes:
        text: the first choice's text.
        model: the name of the model that answered (a fallback model names itself here).
        finish_reason: why generation stopped.
        usage: token counts.
        choices: every choice's text when ``n > 1``; ``[text]`` otherwise.
        tool_calls: the tools the model called (then ``finish_reason`` is ``"tool_calls"``
            and ``text`` is what it wrote besides, often empty).
    """

    text: str
    model: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    choices: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        if not self.choices:
            object.__setattr__(self, "choices", (self.text,))
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))

    def turn(self) -> ChatMessage:
        """This answer as the assistant turn of a chat (with its ``tool_calls``), to send back
        with the tools' results."""
        turn: ChatMessage = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            turn["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        else:
            turn["content"] = self.text
        return turn


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


for _t in (
    ChatRequest,
    Handoff,
    ModelReply,
    ToolCall,
    Usage,
):  # what the gateway decodes from any agent
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
