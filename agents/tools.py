"""Tools: typed Python functions, and other agents, that a model may call; and the loop that
runs them until the model answers.

A tool is declared once, as an ordinary typed function. Its JSON schema -- what the model sees
-- comes from the signature by pydantic (the same types validate the model's arguments before
the function runs), its description from the docstring (the summary, and each ``Args:`` entry
for its parameter), so the two cannot drift apart:

    >>> @tool
    ... def add(a: int, b: int) -> int:
    ...     '''Add two integers.
    ...
    ...     Args:
    ...         a: the first addend.
    ...         b: the second addend.
    ...     '''
    ...     return a + b
    >>> add.openai_tool["function"]["parameters"]["properties"]["a"]
    {'description': 'the first addend.', 'title': 'A', 'type': 'integer'}

Another agent is a tool too (:func:`agent_tool`): its message type is the parameters, a call is
``ctx.send`` under the hood, so agents compose by handing work to each other the way people
compose them with handoffs, while each keeps its own mailbox, replicas and model.

:func:`run_tools` is the loop: ask the model with the tools; run every call it makes -- in
parallel, each under its own timeout -- and send the results back as ``tool`` turns; repeat until
it answers without calls. A tool that raises, times out, gets arguments that do not validate, or
is not one of the tools does not end the loop: the model gets the error as the call's result,
written to be read by it (``error: ...``), and can try again -- what OpenAI's and PydanticAI's
loops do. Only cancellation (the handler's caller gave up) stops it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, get_type_hints

import pydantic
import pydantic_core

from agents.context import Context
from agents.errors import InvalidParameter, MessageDecodeError, ToolLoopExceeded
from agents.model import ChatMessage, ModelReply, ToolCall, Usage

__all__ = ["Tool", "agent_tool", "parse_json", "response_format", "run_tools", "tool"]

DEFAULT_TIMEOUT_S = 30.0
"""How long one tool call may run before the model is told it timed out."""

_ARGS_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(\([^)]*\))?:\s*(.*)$")


@dataclass(frozen=True)
class Tool:
    """A function the model may call.

    Made by :func:`tool` or :func:`agent_tool`; pass it in ``tools=[...]`` to :func:`run_tools`
    or ``ctx.llm.chat`` (which sends its :attr:`openai_tool`).

    Attributes:
        name: what the model calls it (``[A-Za-z0-9_-]{1,64}``).
        description: what the model reads about it.
        parameters: the JSON schema of its arguments (an object).
        run: ``await run(arguments, ctx)`` -- arguments already parsed from JSON; it validates
            them and returns the result the model reads.
        timeout_s: the most one call may take.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any], Context | None], Awaitable[Any]] = field(repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def openai_tool(self) -> dict[str, Any]:
        """The definition the model gets (OpenAI's ``tools`` entry)."""
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """Make a :class:`Tool` of a typed function (sync or async); usable bare (``@tool``) or
    with arguments (``@tool(timeout_s=5)``).

    Every parameter needs a type annotation (pydantic turns it into the schema and validates
    the model's arguments with it). A parameter annotated ``Context`` is not shown to the model:
    it receives the calling handler's context. A sync function runs in a worker thread, so a
    blocking one does not stall the agent's other messages.

    Raises:
        InvalidParameter: a parameter has no annotation, or the name is not a valid tool name.
    """

    def make(f: Callable[..., Any]) -> Tool:
        return _function_tool(f, name, description, timeout_s)

    return make(fn) if fn is not None else make


def agent_tool(
    agent: str,
    message: type,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Tool:
    """Another agent as a tool: the model's arguments are a ``message`` (its fields are the
    parameters), the call is ``ctx.send(agent, message(...))``, and the reply is the result.

    Args:
        agent: the agent's name.
        message: the message type its handler takes (a dataclass or pydantic model).
        name: the tool's name; default the agent's name.
        description: default the message type's docstring.
        timeout_s: the most the agent may take (``send``'s timeout).
    """
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(message)
    schema = adapter.json_schema()
    schema.pop("title", None)
    doc = description if description is not None else _summary(message.__doc__)

    async def run(arguments: dict[str, Any], ctx: Context | None) -> Any:
        if ctx is None:
            raise InvalidParameter("ctx", None, "a handler's context (an agent tool sends)")
        msg = adapter.validate_python(arguments)
        return await ctx.send(agent, msg, timeout_s=timeout_s)

    return _checked(Tool(_tool_name(name or agent), doc, schema, run, timeout_s))


async def run_tools(
    ctx: Context,
    messages: Sequence[ChatMessage],
    tools: Sequence[Tool],
    *,
    max_rounds: int = 8,
    transcript: list[ChatMessage] | None = None,
    **params: Any,
) -> ModelReply:
    """Chat with ``ctx.llm`` and run the tools it calls until it answers without calling any.

    Args:
        ctx: the handler's context (its model answers; agent tools send through it).
        messages: the chat so far; not modified.
        tools: what the model may call.
        max_rounds: most rounds of tool calls before giving up.
        transcript: if given, each turn the loop adds is appended to it (the assistant's
            ``tool_calls`` turns and the ``tool`` results), to log or to continue the chat.
        **params: :class:`~agents.model.SamplingParams` fields for every model call
            (``tool_choice`` applies to the first call only: a forced call would never end).

    Returns:
        The model's answer (its ``text``; ``usage`` summed over every call of the loop).

    Raises:
        ToolLoopExceeded: the model still called tools after ``max_rounds`` rounds.
        InvalidParameter: two tools share a name, or ``params`` are invalid.
    """
    by_name: dict[str, Tool] = {}
    for t in tools:
        if t.name in by_name:
            raise InvalidParameter("tools", t.name, "tools with distinct names")
        by_name[t.name] = t
    turns = list(messages)
    start = len(turns)
    specs = [t.openai_tool for t in tools]
    prompt_tokens = completion_tokens = 0
    for rounds in range(max_rounds + 1):
        reply = await ctx.llm.chat(turns, tools=specs, **params)
        params.pop("tool_choice", None)
        prompt_tokens += reply.usage.prompt_tokens
        completion_tokens += reply.usage.completion_tokens
        if not reply.tool_calls:
            return replace(reply, usage=Usage(prompt_tokens, completion_tokens))
        if rounds == max_rounds:
            raise ToolLoopExceeded(rounds, reply)
        turns.append(reply.turn())
        results = await asyncio.gather(*(_call(by_name, c, ctx) for c in reply.tool_calls))
        turns.extend(
            {"role": "tool", "tool_call_id": c.id, "content": r}
            for c, r in zip(reply.tool_calls, results, strict=True)
        )
        if transcript is not None:
            transcript.extend(turns[start:])
            start = len(turns)
    raise AssertionError("unreachable")  # pragma: no cover


def response_format(output: type, *, name: str | None = None) -> dict[str, Any]:
    """``response_format`` that makes the model answer with JSON of ``output`` (a dataclass,
    pydantic model or any type pydantic knows): its JSON schema, enforced by the engine's
    structured output. Parse the answer with :func:`parse_json`.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Point:
        ...     x: int
        ...     y: int
        >>> response_format(Point)["json_schema"]["schema"]["required"]
        ['x', 'y']
    """
    schema = pydantic.TypeAdapter(output).json_schema()
    title = name or getattr(output, "__name__", None) or "output"
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _tool_name(re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64]),
            "schema": schema,
            "strict": True,
        },
    }


def parse_json(output: type, text: str) -> Any:
    """The model's JSON answer as an ``output`` (what :func:`response_format` asked for).

    Raises:
        MessageDecodeError: the text is not JSON of ``output`` (e.g. cut off by
            ``max_tokens``); the message names the field.
    """
    try:
        return pydantic.TypeAdapter(output).validate_json(text)
    except pydantic.ValidationError as exc:
        raise MessageDecodeError(
            f"the model's answer is not JSON of {getattr(output, '__name__', output)}: "
            f"{_validation_message(exc)}"
        ) from None


async def _call(tools: dict[str, Tool], call: ToolCall, ctx: Context | None) -> str:
    """One call's result as the model reads it: the tool's result, or ``error: ...``."""
    t = tools.get(call.name)
    if t is None:
        return f"error: there is no tool {call.name!r}; the tools are {sorted(tools)}"
    try:
        arguments = call.args()
        # wait_for, not asyncio.timeout: the SDK runs on Python 3.10 (the type gate checks it)
        result = await asyncio.wait_for(t.run(arguments, ctx), t.timeout_s)
    except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
        return f"error: {call.name} did not finish within {t.timeout_s:g}s"
    except pydantic.ValidationError as exc:
        return f"error: invalid arguments for {call.name}: {_validation_message(exc)}"
    except InvalidParameter as exc:
        return f"error: invalid arguments for {call.name}: {exc}"
    except Exception as exc:  # the model reads it and may try differently
        return f"error: {call.name} failed: {type(exc).__name__}: {exc}"
    return _as_text(result)


def _function_tool(
    fn: Callable[..., Any], name: str | None, description: str | None, timeout_s: float
) -> Tool:
    sig = inspect.signature(fn)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except NameError as exc:  # an annotation names something its module does not define
        raise InvalidParameter("annotations", fn.__qualname__, f"resolvable types: {exc}") from None
    docs = _arg_docs(fn.__doc__)
    fields: dict[str, Any] = {}
    ctx_param = None
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InvalidParameter(p.name, str(p), "named parameters (no *args/**kwargs)")
        annotation = hints.get(p.name)
        if annotation is None:
            raise InvalidParameter(p.name, fn.__qualname__, "a type annotation (the schema)")
        if annotation is Context:
            ctx_param = p.name
            continue
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, pydantic.Field(default, description=docs.get(p.name)))
    try:
        model = pydantic.create_model(f"{fn.__name__}_arguments", **fields)
        schema = model.model_json_schema()
    except pydantic.PydanticUserError as exc:  # a type pydantic has no JSON schema for
        raise InvalidParameter(
            "parameters", fn.__qualname__, f"types pydantic can describe: {exc}"
        ) from None
    schema.pop("title", None)
    is_async = inspect.iscoroutinefunction(fn)

    async def run(arguments: dict[str, Any], ctx: Context | None) -> Any:
        values = dict(model.model_validate(arguments))
        if ctx_param is not None:
            values[ctx_param] = ctx
        if is_async:
            return await fn(**values)
        return await asyncio.to_thread(fn, **values)

    doc = description if description is not None else _summary(fn.__doc__)
    return _checked(Tool(_tool_name(name or fn.__name__), doc, schema, run, timeout_s))


def _checked(t: Tool) -> Tool:
    if not (isinstance(t.timeout_s, (int, float)) and t.timeout_s > 0):
        raise InvalidParameter("timeout_s", t.timeout_s, "a number > 0")
    return t


def _tool_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise InvalidParameter("name", name, "1-64 of [A-Za-z0-9_-] (OpenAI's rule)")
    return name


def _summary(doc: str | None) -> str:
    """The docstring up to its first section (``Args:``, ``Returns:`` ...), unwrapped."""
    lines = []
    for line in inspect.cleandoc(doc or "").splitlines():
        if re.match(r"^\w[\w ]*:\s*$", line):
            break
        lines.append(line.strip())
    return " ".join(" ".join(lines).split())


def _arg_docs(doc: str | None) -> dict[str, str]:
    """``{parameter: description}`` from a Google-style ``Args:`` section (an entry may wrap
    onto more-indented lines)."""
    out: dict[str, str] = {}
    name, indent, inside = None, 0, False
    for line in inspect.cleandoc(doc or "").splitlines():
        if _ARGS_SECTION.match(line):
            inside = True
            continue
        if not inside or not line.strip():
            continue
        if not line[0].isspace():
            break  # the next section
        depth = len(line) - len(line.lstrip())
        m = _ARG_LINE.match(line)
        if m and (name is None or depth <= indent):
            name, indent = m.group(1).lstrip("*"), depth
            out[name] = m.group(3).strip()
        elif name is not None:
            out[name] = f"{out[name]} {line.strip()}".strip()
    return out


def _validation_message(exc: pydantic.ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
    )


def _as_text(result: Any) -> str:
    """What the model reads: a string as it is, anything else as JSON (dataclasses and
    pydantic models included)."""
    if isinstance(result, str):
        return result
    try:
        return pydantic_core.to_json(result).decode()
    except pydantic_core.PydanticSerializationError:
        return json.dumps(str(result))
