"""Test doubles for agent authors: a deterministic model for unit tests on ``LocalRuntime``.

Not used by any serving path: production models are vLLM engines behind ``runtime/models``.

Example:
    >>> import asyncio
    >>> model = ScriptedModel(["hi there"])
    >>> asyncio.run(model.chat([{"role": "user", "content": "hello?"}])).text
    'hi there'
    >>> model.calls[0].prompt
    [{'role': 'user', 'content': 'hello?'}]

A scripted answer may be a whole :class:`~agents.model.ModelReply`, e.g. tool calls
(:func:`tool_calls`), for unit tests of an agent that uses tools:

    >>> model = ScriptedModel([tool_calls(("add", {"a": 2, "b": 3})), "5"])
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from agents.model import (
    ChatMessage,
    ModelReply,
    Prompt,
    SamplingParams,
    TextStream,
    ToolCall,
    Usage,
)

__all__ = ["ModelCall", "ScriptExhausted", "ScriptedModel", "tool_calls"]

_call_ids = itertools.count(1)

Answer = str | ModelReply


def tool_calls(*calls: tuple[str, dict[str, Any]], text: str = "") -> ModelReply:
    """A scripted answer that calls tools: ``(name, arguments)`` pairs, in order, each with a
    fresh id (``call_1``, ``call_2``, ...).

    Example:
        >>> tool_calls(("weather", {"city": "Oslo"})).tool_calls[0].arguments
        '{"city": "Oslo"}'
    """
    made = tuple(ToolCall(f"call_{next(_call_ids)}", n, json.dumps(a)) for n, a in calls)
    return ModelReply(text=text, model="", finish_reason="tool_calls", tool_calls=made)


class ScriptExhausted(AssertionError):
    """The test asked the scripted model more often than it has replies for."""


@dataclass(frozen=True)
class ModelCall:
    """One recorded call: which method, the prompt (chat turns or a string), the parameters."""

    kind: Literal["chat", "complete", "stream"]
    prompt: str | list[ChatMessage]
    params: SamplingParams


class ScriptedModel:
    """A model that answers from a script, in order, and records every prompt it got.

    Args:
        replies: the answers, in order; or a function of the prompt that returns one. An
            answer is its text, or a whole :class:`ModelReply` (tool calls, a finish reason).
        name: the model name reported in replies.
        cycle: start the script again when it runs out instead of raising ``ScriptExhausted``.
        delay_s: sleep this long before answering (to test timeouts and cancellation).
    """

    def __init__(
        self,
        replies: Iterable[Answer] | Callable[[str | list[ChatMessage]], Answer],
        *,
        name: str = "scripted",
        cycle: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        self._fn = replies if callable(replies) else None
        self._script = [] if callable(replies) else list(replies)
        self._next = 0
        self.name = name
        self.cycle = cycle
        self.delay_s = delay_s
        self.calls: list[ModelCall] = []

    def _answer(self, kind: Any, prompt: Prompt, params: dict[str, Any]) -> ModelReply:
        sp = SamplingParams(**params)  # same validation as a real model
        recorded: str | list[ChatMessage] = prompt if isinstance(prompt, str) else list(prompt)
        self.calls.append(ModelCall(kind, recorded, sp))
        if self._fn is not None:
            answer = self._fn(recorded)
        else:
            if self._next >= len(self._script):
                if not self.cycle or not self._script:
                    raise ScriptExhausted(
                        f"ScriptedModel {self.name!r} has {len(self._script)} replies and was "
                        f"asked for reply {self._next + 1}: add replies or pass cycle=True"
                    )
                self._next = 0
            answer = self._script[self._next]
            self._next += 1
        prompt_text = (
            prompt
            if isinstance(prompt, str)
            else " ".join(str(m.get("content") or "") for m in prompt)
        )
        reply = answer if isinstance(answer, ModelReply) else ModelReply(answer, self.name)
        if reply.tool_calls and not sp.tools:
            raise AssertionError(
                f"ScriptedModel {self.name!r} is scripted to call tools, but was asked without "
                "tools=..."
            )
        generated = len(reply.text.split()) + sum(len(c.arguments) for c in reply.tool_calls)
        return replace(reply, model=self.name, usage=Usage(len(prompt_text.split()), generated))

    async def chat(self, messages: Sequence[ChatMessage], **params: Any) -> ModelReply:
        reply = self._answer("chat", messages, params)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return reply

    async def complete(self, prompt: str, **params: Any) -> ModelReply:
        reply = self._answer("complete", prompt, params)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return reply

    def stream(self, prompt: Prompt, **params: Any) -> TextStream:
        """The reply word by word (each delta keeps its leading space), then the whole reply
        (usage, tool calls)."""
        return TextStream(self._words(self._answer("stream", prompt, params)))

    async def _words(self, reply: ModelReply) -> AsyncGenerator[str | ModelReply, None]:
        for i, word in enumerate(reply.text.split(" ") if reply.text else ()):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield word if i == 0 else " " + word
        yield reply
