"""What a model server streams to its callers.

SDK errors (:class:`~agents.errors.AgentError`) cross the Ray boundary as themselves: they pickle
by their attributes, and :func:`runtime.models.client.translate_ray_error` unwraps Ray's
``RayTaskError`` around them.

Example:
    >>> ModelDelta("Hel", model="default")
    ModelDelta(text='Hel', index=0, model='default', finish_reason=None, usage=None)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from agents.model import FinishReason, Usage

__all__ = ["ModelDelta", "coalesce"]


@dataclass(frozen=True)
class ModelDelta:
    """One piece of a streamed answer.

    Attributes:
        text: new text of choice ``index`` (may be empty on the last delta).
        index: which choice (``0`` unless ``n > 1``).
        model: the name of the model that generated it (a fallback names itself).
        finish_reason: set on the last delta of a choice.
        usage: set on the very last delta of the stream: token counts of the whole call.
    """

    text: str
    index: int = 0
    model: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


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
    """Consecutive deltas of one choice become one; anything else keeps its place."""
    out: list[object] = []
    for item in batch:
        last = out[-1] if out else None
        if (
            isinstance(item, ModelDelta)
            and isinstance(last, ModelDelta)
            and last.index == item.index
            and last.finish_reason is None
            and last.usage is None
        ):
            out[-1] = replace(item, text=last.text + item.text, usage=item.usage or last.usage)
        else:
            out.append(item)
    return out
