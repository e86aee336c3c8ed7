"""Test doubles for agent authors: a deterministic model for unit tests on ``LocalRuntime``.

Not used by any serving path: production models are vLLM engines behind ``runtime/models``.

Example:
    >>> import asyncio
    >>> model = ScriptedModel(["hi there"])
    >>> asyncio.run(model.chat([{"role": "user", "content": "hello?"}])).text
    'hi there'
    >>> model.calls[0].prompt
    [{'role': 'user', 'content': 'hello?'}]
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agents.model import ChatMessage, ModelReply, Prompt, SamplingParams, TextStream, Usage

__all__ = ["ModelCall", "ScriptExhausted", "ScriptedModel"]


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
        replies: the answers, in order; or a function of the prompt that returns one.
        name: the model name reported in replies.
        cycle: start the script again when it runs out instead of raising ``ScriptExhausted``.
        delay_s: sleep this long before answering (to test timeouts and cancellation).
    """

    def __init__(
        self,
        replies: Iterable[str] | Callable[[str | list[ChatMessage]], str],
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

    def _answer(self, kind: Any, prompt: Prompt, params: dict[str, Any]) -> tuple[str, Usage]:
        sp = SamplingParams(**params)  # same validation as a real model
        recorded: str | list[ChatMessage] = prompt if isinstance(prompt, str) else list(prompt)
        self.calls.append(ModelCall(kind, recorded, sp))
        if self._fn is not None:
            text = self._fn(recorded)
        else:
            if self._next >= len(self._script):
                if not self.cycle or not self._script:
                    raise ScriptExhausted(
                        f"ScriptedModel {self.name!r} has {len(self._script)} replies and was "
                        f"asked for reply {self._next + 1}: add replies or pass cycle=True"
                    )
                self._next = 0
            text = self._script[self._next]
            self._next += 1
        prompt_text = (
            prompt
            if isinstance(prompt, str)
            else " ".join(str(m.get("content", "")) for m in prompt)
        )
        return text, Usage(len(prompt_text.split()), len(text.split()))

    async def chat(self, messages: Sequence[ChatMessage], **params: Any) -> ModelReply:
        text, usage = self._answer("chat", messages, params)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return ModelReply(text=text, model=self.name, usage=usage)

    async def complete(self, prompt: str, **params: Any) -> ModelReply:
        text, usage = self._answer("complete", prompt, params)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return ModelReply(text=text, model=self.name, usage=usage)

    def stream(self, prompt: Prompt, **params: Any) -> TextStream:
        """The reply word by word (each delta keeps its leading space), then its usage."""
        text, usage = self._answer("stream", prompt, params)
        return TextStream(self._words(text, usage))

    async def _words(self, text: str, usage: Usage) -> AsyncGenerator[str | ModelReply, None]:
        for i, word in enumerate(text.split(" ")):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield word if i == 0 else " " + word
        yield ModelReply(text=text, model=self.name, usage=usage)
