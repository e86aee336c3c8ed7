"""What a model server streams to its callers.

SDK errors (:class:`~agents.errors.AgentError`) cross the Ray boundary as themselves: they pickle
by their attributes, and :func:`runtime.cluster.ray_errors.sdk_error` unwraps Ray's
``RayTaskError`` around them.

Tool calls stream as :class:`ToolCallDelta` pieces, the way OpenAI streams them: a call's first
piece carries its ``id`` and ``name`` (and maybe the start of its ``arguments``), later pieces
only more ``arguments`` text for the same ``index``.

Example:
    >>> ModelDelta("Hel", model="default")
    ModelDelta(text='Hel', index=0, model='default', finish_reason=None, usage=None, tool_calls=())
    >>> pieces = [ToolCallDelta(0, "call-1", "f", '{"a"'), ToolCallDelta(0, arguments=": 1}")]
    >>> join_tool_calls(pieces)
    (ToolCall(id='call-1', name='f', arguments='{"a": 1}'),)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace

from agents.model import FinishReason, ToolCall, Usage

__all__ = ["ModelDelta", "ToolCallDelta", "coalesce", "join_tool_calls", "pieces_of"]


@dataclass(frozen=True)
class ToolCallDelta:
    """One piece of a streamed tool call (OpenAI's ``ChatCompletionMessageToolCallChunk``).

    Attributes:
        index: which call of the choice (0, 1, ... in the order the model made them).
        id: the call's id; set on its first piece only.
        name: the tool's name; set on its first piece only.
        arguments: the next fragment of the arguments' JSON text.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    @property
    def opens(self) -> bool:
        """Whether this is a call's first piece (it names the call)."""
        return self.id is not None or self.name is not None

    def to_openai(self) -> dict[str, object]:
        """The chunk form: ``{index, id, type, function: {name, arguments}}`` on the first
        piece, ``{index, function: {arguments}}`` after it."""
        if not self.opens:
            return {"index": self.index, "function": {"arguments": self.arguments}}
        return {
            "index": self.index,
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def pieces_of(calls: Iterable[dict[str, object]]) -> tuple[ToolCallDelta, ...]:
    """Whole calls in OpenAI's message form (``{"id", "function": {"name", "arguments"}}``,
    as cached) as one piece each: how a cached answer replays them."""
    return tuple(
        ToolCallDelta(k, c["id"], c["function"]["name"], c["function"]["arguments"])  # type: ignore[index]
        for k, c in enumerate(calls)
    )


def join_tool_calls(pieces: Iterable[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """The whole calls that ``pieces`` (one choice's, in stream order) add up to."""
    calls: dict[int, list[str]] = {}
    for p in pieces:
        call = calls.setdefault(p.index, ["", "", ""])
        call[0] = p.id if p.id is not None else call[0]
        call[1] = p.name if p.name is not None else call[1]
        call[2] += p.arguments
    return tuple(ToolCall(i, n, a) for i, n, a in (calls[k] for k in sorted(calls)))


@dataclass(frozen=True)
class ModelDelta:
    """One piece of a streamed answer.

    Attributes:
        text: new text of choice ``index`` (may be empty on the last delta).
        index: which choice (``0`` unless ``n > 1``).
        model: the name of the model that generated it (a fallback names itself).
        finish_reason: set on the last delta of a choice.
        usage: set on the very last delta of the stream: token counts of the whole call.
        tool_calls: pieces of tool calls of choice ``index`` (see :class:`ToolCallDelta`).
    """

    text: str
    index: int = 0
    model: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


_END = object()


async def coalesce(deltas: AsyncIterator[ModelDelta]) -> AsyncIterator[ModelDelta]:
    """``deltas``, with those that piled up while the consumer was busy merged into one.

    Every streamed delta crosses Ray at least twice (model replica -> gateway -> proxy), and on
    a busy replica that per-message cost, not the engine, sets the pace. So the engine is read
    by a pump task as fast as it produces, and each time the consumer asks for the next item
    it gets everything produced since, merged per choice. An idle consumer still gets each
    delta the moment it exists: merging only ever happens to deltas that would have waited.
    Closing the iterator cancels the pump, which closes ``deltas`` (aborting the generation).
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for delta in deltas:
                queue.put_nowait(delta)
            queue.put_nowait(_END)
        except Exception as exc:  # handed to the consumer, raised there
            queue.put_nowait(exc)

    task = asyncio.create_task(pump(), name="raygent-delta-pump")
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            for item in _merged(batch):
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item  # type: ignore[misc]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _merged(batch: list[object]) -> list[object]:
    """Consecutive deltas of one choice become one; anything else keeps its place.

    Tool-call pieces merge as OpenAI would have sent them in one chunk: a piece that continues
    the previous call's arguments (no id, no name, same call index) is appended to them, a piece
    that opens a call stays its own entry, so a merged delta names each call at most once. Text
    that follows a tool call is not merged into it: one chunk renders its text before its calls,
    which would reorder them.
    """
    out: list[object] = []
    for item in batch:
        last = out[-1] if out else None
        if (
            isinstance(item, ModelDelta)
            and isinstance(last, ModelDelta)
            and last.index == item.index
            and last.finish_reason is None
            and last.usage is None
            and not (last.tool_calls and item.text)
        ):
            out[-1] = replace(
                item,
                text=last.text + item.text,
                usage=item.usage or last.usage,
                tool_calls=_merge_calls(last.tool_calls, item.tool_calls),
            )
        else:
            out.append(item)
    return out


def _merge_calls(
    first: tuple[ToolCallDelta, ...], then: tuple[ToolCallDelta, ...]
) -> tuple[ToolCallDelta, ...]:
    out = list(first)
    for piece in then:
        prev = out[-1] if out else None
        if prev is not None and prev.index == piece.index and not piece.opens:
            out[-1] = replace(prev, arguments=prev.arguments + piece.arguments)
        else:
            out.append(piece)
    return tuple(out)
