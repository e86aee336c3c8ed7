"""OpenAI's response shapes: one finished answer (:class:`Completed`) in, JSON or SSE out.

A :class:`Completed` is what the gateway caches: the choices' texts and finish reasons, usage,
and the answering model's name — not a rendered body. A hit is rendered afresh (a new ``id`` and
``created``), as a JSON body for a plain request or as SSE chunks for a stream request, so one
entry serves both forms. Live streams are rendered chunk by chunk with the same functions, so
a replayed stream and a live one have the same chunk schema:

    data: {"object": "chat.completion.chunk", "choices": [{"delta": {"role": "assistant", ...
    data: {... "choices": [{"delta": {"content": "Hel"}, "finish_reason": null}]}
    data: {... "choices": [{"delta": {}, "finish_reason": "stop"}]}
    data: {... "choices": [], "usage": {...}}          (when stream_options.include_usage)
    data: [DONE]

Tool calls render as OpenAI's: ``message.tool_calls`` (``content`` null when the answer is only
calls) and, streamed, ``delta.tool_calls`` -- a call's first chunk ``[{"index", "id", "type":
"function", "function": {"name", "arguments"}}]``, then ``[{"index", "function": {"arguments":
<fragment>}}]``. A cached answer with calls replays them with their ids, each call whole in one
chunk.

Each body has every field OpenAI's OpenAPI document requires (``CreateChatCompletionResponse``,
``CreateChatCompletionStreamResponse``, ``CreateCompletionResponse``; a chat message's
``refusal`` is ``null``, never left out), so strict clients and generated SDKs parse it; the
tests validate them against those schemas (``tests/data/openai``). An answer of a name with
variants also says which arm answered, in a ``variant`` field of the body and of every chunk
(the schemas allow extra fields; OpenAI's SDKs keep them in ``model_extra``). A streamed text
completion has no chunk schema of its own in the spec: its chunks are
``CreateCompletionResponse`` bodies whose ``finish_reason`` is null until the choice ends, as
OpenAI's own API sends them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from agents.model import FinishReason, ModelReply, Usage
from runtime.gateway.errors import render_error
from runtime.models import pieces_of

__all__ = [
    "Completed",
    "Kind",
    "StreamFormat",
    "call_chunks",
    "done_event",
    "error_event",
    "render",
]

Kind = Literal["chat", "text"]

DONE = b"data: [DONE]\n\n"


@dataclass
class Completed:
    """A whole answer: what is cached and what every response is rendered from.

    ``tool_calls`` holds each choice's calls in OpenAI's message form (``{"id", "type",
    "function": {"name", "arguments"}}``); empty lists when none were made.
    """

    kind: Kind
    model: str
    texts: list[str]
    finish_reasons: list[FinishReason]
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tool_calls += [[] for _ in range(len(self.texts) - len(self.tool_calls))]

    @classmethod
    def from_reply(cls, kind: Kind, reply: ModelReply) -> Completed:
        texts = list(reply.choices)
        calls = [[c.to_openai() for c in reply.tool_calls]]
        return cls(kind, reply.model, texts, [reply.finish_reason] * len(texts), reply.usage, calls)

    @property
    def cacheable(self) -> bool:
        """Only whole answers: every choice ended by a stop, the token limit or its calls."""
        done = ("stop", "length", "tool_calls")
        return bool(self.texts) and all(r in done for r in self.finish_reasons)

    def to_bytes(self) -> bytes:
        u = self.usage
        return json.dumps(
            [
                self.kind,
                self.model,
                self.texts,
                self.finish_reasons,
                u.prompt_tokens,
                u.completion_tokens,
                self.tool_calls,
                u.cached_tokens,
            ],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Completed:
        # entries stored before tool calls existed have six fields, before cached tokens seven
        kind, model, texts, reasons, prompt, completion, *rest = json.loads(data)
        calls = rest[0] if rest else []
        cached = rest[1] if len(rest) > 1 else 0
        return cls(kind, model, texts, reasons, Usage(prompt, completion, cached), calls)


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def render(done: Completed, variant: str | None = None) -> dict[str, Any]:
    """The non-stream response body (``variant``: the arm that answered, if any)."""
    choices: list[dict[str, Any]]
    if done.kind == "chat":
        choices = [
            {
                "index": i,
                "message": _message(text, calls),
                "finish_reason": reason,
                "logprobs": None,
            }
            for i, (text, reason, calls) in enumerate(
                zip(done.texts, done.finish_reasons, done.tool_calls, strict=True)
            )
        ]
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        choices = [
            {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
            for i, (text, reason) in enumerate(zip(done.texts, done.finish_reasons, strict=True))
        ]
        obj, prefix = "text_completion", "cmpl"
    body = {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": done.model,
        "choices": choices,
        "usage": _usage(done.usage),
    }
    if variant is not None:
        body["variant"] = variant
    return body


def _message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    if not calls:
        return {"role": "assistant", "content": text, "refusal": None}
    return {"role": "assistant", "content": text or None, "refusal": None, "tool_calls": calls}


def call_chunks(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole calls (message form) as the tool-call chunks of one stream delta."""
    return [p.to_openai() for p in pieces_of(calls)]


class StreamFormat:
    """SSE chunks of one stream response (one ``id`` and ``created`` for all its chunks).

    Args:
        kind: chat or text completion.
        model: the name reported in every chunk.
        include_usage: whether a final usage chunk follows (OpenAI's ``stream_options``).
        variant: the arm that answers, named in every chunk; None: no variants.
    """

    def __init__(
        self, kind: Kind, model: str, include_usage: bool, variant: str | None = None
    ) -> None:
        self.kind = kind
        self.model = model
        self.include_usage = include_usage
        self.variant = variant
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        self._id = f"{prefix}-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self._started: set[int] = set()

    def _event(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self._id,
            "object": self._object,
            "created": self._created,
            "model": self.model,
            "choices": choices,
        }
        if self.variant is not None:
            body["variant"] = self.variant
        if usage is not None:
            body["usage"] = _usage(usage)
        elif self.include_usage and self.kind == "chat":
            # OpenAI's chat chunks say "usage": null until the last; a text completion's schema
            # (CreateCompletionResponse) has no null usage, so its chunks leave it out.
            body["usage"] = None
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def delta(
        self,
        index: int,
        text: str,
        finish_reason: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> bytes:
        """New text and tool-call chunks (``ToolCallDelta.to_openai()`` forms) of choice
        ``index``; a chat's first chunk of a choice carries the role."""
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if index not in self._started:
                self._started.add(index)
                delta = {"role": "assistant", "content": text or (None if tool_calls else "")}
            elif text:
                delta = {"content": text}
            if tool_calls:
                delta["tool_calls"] = tool_calls
            choice: dict[str, Any] = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": text}
        choice["finish_reason"] = finish_reason
        choice["logprobs"] = None
        return self._event([choice])

    def usage(self, usage: Usage) -> bytes:
        """The closing usage chunk (only when the caller asked for it)."""
        return self._event([], usage) if self.include_usage else b""

    def replay(self, done: Completed) -> list[bytes]:
        """A whole cached answer as the chunks of a stream, ending with ``[DONE]``."""
        out = []
        for i, (text, reason, calls) in enumerate(
            zip(done.texts, done.finish_reasons, done.tool_calls, strict=True)
        ):
            out.append(self.delta(i, text, None, call_chunks(calls)))
            out.append(self.delta(i, "", reason))
        out.append(self.usage(done.usage))
        out.append(DONE)
        return [c for c in out if c]


def done_event() -> bytes:
    """The SSE terminator."""
    return DONE


def error_event(body: dict[str, Any]) -> bytes:
    """An error after the stream started (the status line is long gone): an SSE event with
    OpenAI's error body, as vLLM's server sends (rendered by the one error renderer, which
    cannot fail)."""
    return b"data: " + render_error(body) + b"\n\n"
