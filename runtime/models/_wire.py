"""What a model server streams to its callers.

SDK errors (:class:`~agents.errors.AgentError`) cross the Ray boundary as themselves: they pickle
by their attributes, and :func:`runtime.models.client.translate_ray_error` unwraps Ray's
``RayTaskError`` around them.

Example:
    >>> ModelDelta("Hel", model="default")
    ModelDelta(text='Hel', index=0, model='default', finish_reason=None, usage=None)
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.model import FinishReason, Usage

__all__ = ["ModelDelta"]


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
