"""Tool calls and structured output, the pure part: no vLLM, so unit tests cover it.

The engine (:mod:`runtime.models.engine`) does what vLLM's own OpenAI server does with
``tools``, ``tool_choice`` and ``response_format``, in three steps:

1. :func:`constraint` -- what the answer is constrained to (vLLM's ``StructuredOutputsParams``
   fields), and which request field to blame when vLLM rejects it:

   ===============================  ======================================================
   request                          constraint
   ===============================  ======================================================
   ``response_format`` json_object  ``json_object``
   ``response_format`` json_schema  ``json`` = its ``schema``
   ``structured_outputs``           as given (``json`` / ``regex`` / ``choice`` / ``grammar``)
   named ``tool_choice``            ``json`` = that tool's ``parameters`` (the answer *is* the
                                    call's arguments)
   ``tool_choice: "required"``      ``json`` = an array of ``{name, parameters}`` (vLLM's
                                    ``get_json_schema_from_tools``, passed in)
   ``"auto"``, ``"none"``           none: the model writes freely, a tool parser reads it
   ===============================  ======================================================

2. :class:`ToolOutput` -- per choice, turns the generated text into content and
   :class:`~runtime.models._wire.ToolCallDelta` pieces while it streams;
3. its :meth:`ToolOutput.finish` -- the last pieces, and the finish reason as vLLM reports it.

Example:
    >>> out = ToolOutput("named", name="get_weather", new_id=lambda: "call-1")
    >>> out.feed('{"city": ')
    ('', (ToolCallDelta(index=0, id='call-1', name='get_weather', arguments='{"city": '),))
    >>> out.feed('"Paris"}')
    ('', (ToolCallDelta(index=0, id=None, name=None, arguments='"Paris"}'),))
    >>> out.finish("stop")
    ('', (), 'stop')
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from agents.errors import InvalidParameter
from agents.model import SamplingParams, ToolCall
from runtime.models._wire import ToolCallDelta

__all__ = [
    "AutoStream",
    "ToolMode",
    "ToolOutput",
    "check_auto",
    "constraint",
    "new_call_id",
    "parse_required",
    "tool_mode",
]

ToolMode = Literal["none", "named", "required", "auto"]
"""How the answer relates to the request's tools (see :func:`tool_mode`)."""

AutoParser = Callable[[str], tuple[str | None, list[ToolCall]]]
"""Reads a whole answer written freely: ``(content, calls)`` (a configured vLLM tool parser)."""


class AutoStream(Protocol):
    """Reads an ``"auto"`` answer as it streams (a vLLM tool parser's streaming extraction):
    content passes through until the parser sees a call begin; the call then streams as
    pieces."""

    @property
    def called(self) -> bool:
        """Whether any call was streamed."""
        ...

    def feed(self, text: str, token_ids: Sequence[int]) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """New text (and its token ids) -> ``(content, pieces)`` to send now."""
        ...

    def finish(self) -> tuple[ToolCallDelta, ...]:
        """What the parser read but did not stream yet (the last call's argument tail)."""
        ...


def new_call_id() -> str:
    """A fresh tool-call id, in vLLM's format (``chatcmpl-tool-<hex>``)."""
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


def tool_mode(sp: SamplingParams) -> ToolMode:
    """``"none"`` (no tools, or ``tool_choice: "none"``), ``"named"`` (one tool forced),
    ``"required"`` (some call forced) or ``"auto"`` (the model decides; a parser reads)."""
    if not sp.calls_tools:
        return "none"
    choice = sp.effective_tool_choice
    if isinstance(choice, dict):
        return "named"
    return "required" if choice == "required" else "auto"


def check_auto(sp: SamplingParams, model: str, has_parser: bool) -> None:
    """Refuse ``tool_choice: "auto"`` (or unset, with tools) on a model without a tool parser,
    as vLLM refuses it without ``--enable-auto-tool-choice``.

    Raises:
        InvalidParameter: naming ``tool_choice``, and the config field that enables it.
    """
    if tool_mode(sp) == "auto" and not has_parser:
        raise InvalidParameter(
            "tool_choice",
            sp.effective_tool_choice,
            f"'none', 'required' or a named function: model {model!r} has no tool parser to "
            f"read 'auto' answers (set models.{model}.tool_call_parser, e.g. hermes)",
        )


def forced_tool(sp: SamplingParams) -> tuple[int, dict[str, Any]] | None:
    """The index and ``function`` definition of the tool a named ``tool_choice`` forces."""
    choice = sp.effective_tool_choice
    if not isinstance(choice, dict):
        return None
    name = choice["function"]["name"]
    for i, tool in enumerate(sp.tools):
        if tool["function"]["name"] == name:
            return i, tool["function"]
    return None  # SamplingParams already refused an unknown name


def constraint(
    sp: SamplingParams,
    required_schema: Callable[[Sequence[dict[str, Any]], bool | None], Any],
) -> tuple[str, dict[str, Any]] | None:
    """The structured-output constraint of ``sp`` as ``StructuredOutputsParams`` keyword
    arguments, with the request field a rejection of it names; None: unconstrained.

    Args:
        sp: validated sampling parameters (they never combine two constraints).
        required_schema: the JSON schema of a ``"required"`` answer for these tools and
            ``parallel_tool_calls`` (the engine passes vLLM's own helper, so the array matches
            what vLLM's server asks: ``maxItems: 1`` when parallel calls are off).
    """
    fmt = sp.response_format
    if fmt is not None and fmt["type"] == "json_object":
        return "response_format", {"json_object": True}
    if fmt is not None and fmt["type"] == "json_schema":
        schema = fmt["json_schema"].get("schema") or {"type": "object"}
        return "response_format.json_schema.schema", {"json": schema}
    if sp.structured_outputs:
        key = next(k for k, v in sp.structured_outputs.items() if v is not None)
        return f"structured_outputs.{key}", {key: sp.structured_outputs[key]}
    mode = tool_mode(sp)
    if mode == "named":
        found = forced_tool(sp)
        assert found is not None
        i, fn = found
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        return f"tools[{i}].function.parameters", {"json": params}
    if mode == "required":
        return "tools", {"json": required_schema(sp.tools, sp.parallel_tool_calls)}
    return None


def parse_required(text: str, new_id: Callable[[], str] = new_call_id) -> list[ToolCall] | None:
    """The calls of a ``"required"`` answer (a JSON array of ``{"name", "parameters"}``),
    each with a fresh id and its parameters re-serialized as the call's ``arguments`` (as vLLM
    does); None when the text is not such an array (the answer was cut off by ``max_tokens``
    or a stop string)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    calls = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        args = item.get("parameters", {})
        calls.append(ToolCall(new_id(), item["name"], json.dumps(args, ensure_ascii=False)))
    return calls


class ToolOutput:
    """One choice's generated text, as content and tool-call pieces.

    * ``"none"``: the text is content, passed through;
    * ``"named"``: the text *is* the forced call's arguments and streams as they come -- the
      first piece carries the call's id and name, later ones only argument text (what OpenAI
      streams); the finish reason stays the engine's (``stop``), as vLLM and OpenAI report a
      forced call;
    * ``"auto"`` with a ``stream`` (a streamed answer): as vLLM's server streams it, content
      token by token until the tool parser sees a call begin, then the call's pieces as the
      parser reads them, and at the end whatever arguments it read but had not sent yet;
    * ``"required"``, and ``"auto"`` answered whole: the text is held back and read when the
      choice ends (``required``: :func:`parse_required`; ``auto``: the configured tool parser),
      so the calls come whole, in one piece, with any content. (A ``required`` answer is a
      JSON array that only parses once complete.)

    The finish reason becomes ``tool_calls`` when calls were made (for ``required``, as vLLM
    does, only when the engine stopped by itself). Text that holds no call is returned as
    content, never dropped.

    Args:
        mode: :func:`tool_mode` of the request.
        name: the forced tool's name (``"named"`` only).
        parser: reads an ``"auto"`` answer; required for that mode.
        stream: reads an ``"auto"`` answer as it streams; when given, ``parser`` is unused.
        new_id: makes call ids (tests pass a fixed one).
    """

    def __init__(
        self,
        mode: ToolMode,
        *,
        name: str | None = None,
        parser: AutoParser | None = None,
        stream: AutoStream | None = None,
        new_id: Callable[[], str] = new_call_id,
    ) -> None:
        if mode == "named" and not name:
            raise ValueError("a named tool choice needs the tool's name")
        if mode == "auto" and parser is None and stream is None:
            raise ValueError("tool_choice 'auto' needs a tool parser")
        self.mode = mode
        self._name = name
        self._parser = parser
        self._stream = stream if mode == "auto" else None
        self._new_id = new_id
        self._held: list[str] = []
        self._opened = False

    @property
    def holds_back(self) -> bool:
        """Whether the text only comes out at the end (``required``; ``auto`` answered whole)."""
        return self.mode == "required" or (self.mode == "auto" and self._stream is None)

    def feed(
        self, text: str, token_ids: Sequence[int] = ()
    ) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """New generated text (and its token ids) -> ``(content, tool-call pieces)`` to send
        now."""
        if self.mode == "none":
            return text, ()
        if self._stream is not None:
            return self._stream.feed(text, token_ids)
        if self.holds_back:
            self._held.append(text)
            return "", ()
        if not text:
            return "", ()
        if self._opened:
            return "", (ToolCallDelta(0, arguments=text),)
        self._opened = True
        return "", (ToolCallDelta(0, self._new_id(), self._name, text),)

    def finish(self, reason: str) -> tuple[str, tuple[ToolCallDelta, ...], str]:
        """The choice ended with ``reason``: the last ``(content, pieces, finish reason)``."""
        if self._stream is not None:
            pieces = self._stream.finish()
            return "", pieces, "tool_calls" if self._stream.called else reason
        if not self.holds_back:
            return "", (), reason
        text = "".join(self._held)
        self._held = []
        if self.mode == "required":
            calls = parse_required(text, self._new_id)
            if not calls:
                return text, (), reason
            content = ""
            reason = "tool_calls" if reason == "stop" else reason
        else:
            assert self._parser is not None
            parsed, calls = self._parser(text)
            content = parsed or ""
            if calls:
                reason = "tool_calls"
        pieces = tuple(
            ToolCallDelta(i, c.id or self._new_id(), c.name, c.arguments)
            for i, c in enumerate(calls or ())
        )
        return content, pieces, reason
