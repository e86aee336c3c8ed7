"""What a streaming agent yields, as HTTP clients see it.

Two shapes:

* **A chat agent called as a model** (``"model": "agent:<name>"``): its handler for
  :class:`~agents.ChatRequest` yields ``str`` text deltas, and may end with the
  :class:`~agents.ModelReply` of the whole answer to report usage, the finish reason and the
  model (its text is sent only when no delta came before it, so a handler may also yield just
  one reply). :class:`ChatFold` turns those items into the same deltas a model streams, so the
  OpenAI chunk format, the cache and the metrics treat both alike. A plain (returning) handler's
  reply is the one item.
* **Any agent through** ``POST /v1/agents/{name}/invoke``: each yielded item is one SSE event,
  ``data: {"type": "<class>", "item": <JSON>}``, then ``data: [DONE]``
  (:func:`invoke_events`); an error after the first event is an error event, as in completions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agents.errors import AgentError
from agents.model import ModelReply, Usage
from runtime.gateway.errors import from_agent_error
from runtime.gateway.messages import to_json
from runtime.gateway.openai_format import done_event, error_event
from runtime.models import ModelDelta

__all__ = ["ChatFold", "invoke_events", "reply_text"]


def reply_text(reply: Any) -> str:
    """The content of an agent reply that is not a ``ModelReply``: a ``str`` as it is, any other
    message as its JSON."""
    return reply if isinstance(reply, str) else json.dumps(to_json(reply))


class ChatFold:
    """Turns a chat agent's streamed items into model-style deltas.

    Args:
        model: the name the answer goes by until a ``ModelReply`` names its model.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._choices = 1
        self._sent = False
        self._reason: str | None = None
        self._usage: Usage | None = None

    def deltas(self, item: Any) -> list[ModelDelta]:
        """The deltas for one item: none when it only carries usage or the finish reason; one
        per choice for a reply that is the whole answer (``n > 1``)."""
        if isinstance(item, ModelReply):
            self.model = item.model or self.model
            self._reason = item.finish_reason
            self._usage = item.usage
            if self._sent:
                return []
            self._sent = True
            self._choices = len(item.choices)
            return [ModelDelta(t, i, self.model) for i, t in enumerate(item.choices) if t]
        text = reply_text(item)
        if not text:
            return []
        self._sent = True
        return [ModelDelta(text, 0, self.model)]

    def end(self) -> list[ModelDelta]:
        """The last deltas: each choice's finish reason (``stop`` unless a reply said
        otherwise), the usage on the very last (zero unless a reply reported it)."""
        reason: Any = self._reason or "stop"
        last = self._choices - 1
        return [
            ModelDelta("", i, self.model, reason, (self._usage or Usage()) if i == last else None)
            for i in range(self._choices)
        ]


async def invoke_events(head: list[Any], items: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The SSE body of a streamed invoke: ``head`` (the first item, already received so that
    errors before it were still HTTP errors; empty if the stream ended without one), then the
    rest of ``items``. Closes ``items`` however it ends."""
    try:
        for item in head:
            yield _event(item)
        if head:
            async for item in items:
                yield _event(item)
        yield done_event()
    except AgentError as exc:
        yield error_event(from_agent_error(exc).body())
        yield done_event()
    finally:
        await items.aclose()


def _event(item: Any) -> bytes:
    return (
        b"data: "
        + json.dumps({"type": type(item).__name__, "item": to_json(item)}).encode()
        + b"\n\n"
    )
