"""Request bodies of the OpenAI-compatible routes, validated before anything is called.

Pydantic checks types (a wrong type is a 400 naming the field, e.g. ``messages.0.content``);
:meth:`ChatCompletionRequest.sampling` then hands the sampling fields to
:func:`runtime.models.check_params`, the same check every model server runs, so ranges and the
deployment's limits (``max_tokens``, ``n``) are enforced once, identically, at the edge.

Numbers must be finite: the body's parser already refuses ``NaN``, ``Infinity`` and ``1E400``
(:mod:`runtime.gateway.json_body`), and every model here refuses non-finite floats again
(``allow_inf_nan=False``), so a value that got past the parser by another way (a huge integer
where a float is expected) is a 400 naming the field, never ``inf`` in a cache key or an engine
call. ``seed`` is bounded as OpenAI's schema bounds it (a signed 64-bit integer).

Tools (``tools``, ``tool_choice``, and in the turns an assistant's ``tool_calls`` and a tool's
``tool_call_id``) and structured output (``response_format``, and vLLM's ``structured_outputs``
extension on both routes) are checked by :class:`~agents.model.SamplingParams` (unknown tool in
``tool_choice``, ``n > 1`` with tools: a 400 naming the field) and served by the engine.

Fields that OpenAI defines but this server cannot honour (``functions``, ``logprobs``,
penalties, ...) are refused with a 400 naming the field rather than silently ignored: a client
that asked for log-probabilities must not get an answer without them. Fields nobody defined are
ignored, as OpenAI's own API does for forward compatibility.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.errors import InvalidParameter
from agents.model import SamplingParams
from runtime.config import LimitsConfig
from runtime.models import check_params

__all__ = ["ChatCompletionRequest", "CompletionRequest", "InvokeRequest", "TaskRequest"]

# Defined by OpenAI, not supported here: refused when set to anything but their neutral value.
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "functions": (None, []),  # OpenAI's deprecated form of tools
    "function_call": (None, "none"),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
}


_SEED_MAX = 2**63 - 1  # OpenAI's bound, and what an engine's random generator takes


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    def refuse_unsupported(self) -> None:
        extra = self.model_extra or {}
        for name, neutral in _UNSUPPORTED.items():
            if name in extra and extra[name] not in neutral:
                raise InvalidParameter(name, extra[name], "not supported by this server (unset)")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: str


class MessageToolCall(BaseModel):
    """A call in an assistant turn the client sends back (OpenAI's message tool call)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    """One chat turn. ``content`` may be OpenAI's list of parts; only text parts are served.

    The turns of a tool loop too: an assistant turn with ``tool_calls`` (its ``content`` may be
    null) and a ``tool`` turn answering one call (``tool_call_id``)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None

    def plain(self) -> dict[str, Any]:
        """The turn as the engine (and the cache key) takes it: every field that changes the
        prompt, nothing else."""
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        calls = self.tool_calls if self.role == "assistant" else None
        # null content stays null beside calls (templates write no text then), else ""
        empty = None if calls else ""
        turn: dict[str, Any] = {"role": self.role, "content": content or empty}
        if self.name:
            turn["name"] = self.name
        if calls:
            turn["tool_calls"] = [c.model_dump() for c in calls]
        if self.tool_call_id is not None:
            turn["tool_call_id"] = self.tool_call_id
        return turn


_SAMPLING = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stop",
    "seed",
    "response_format",
    "structured_outputs",
)


class _Sampling(_Body):
    """The sampling fields both OpenAI routes share (``top_k`` and ``ignore_eos`` are vLLM's
    extensions, accepted here as vLLM's server accepts them)."""

    model: str = Field(min_length=1)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, le=_SEED_MAX)
    ignore_eos: bool | None = None
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    """vLLM's extension: ``{"json" | "regex" | "choice" | "grammar": ...}``."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    _extra_sampling: ClassVar[tuple[str, ...]] = ()  # a route's own SamplingParams fields

    def sampling(self, limits: LimitsConfig) -> SamplingParams:
        """The validated sampling parameters (raises ``InvalidParameter`` naming the field)."""
        self.refuse_unsupported()
        params = {
            k: getattr(self, k)
            for k in (*_SAMPLING, *self._extra_sampling)
            if getattr(self, k) is not None
        }
        if self.ignore_eos:
            params["ignore_eos"] = True
        return check_params(params, limits)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    _extra_sampling: ClassVar[tuple[str, ...]] = ("tools", "tool_choice", "parallel_tool_calls")

    def sampling(self, limits: LimitsConfig) -> SamplingParams:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens  # OpenAI's newer name for it
        return super().sampling(limits)

    def turns(self) -> list[dict[str, Any]]:
        return [m.plain() for m in self.messages]


class CompletionRequest(_Sampling):
    """``POST /v1/completions``. One prompt string (a list of one string is accepted)."""

    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise InvalidParameter(
                "prompt", f"<{len(self.prompt)} prompts>", "one prompt per request"
            )
        return self.prompt[0]


class InvokeRequest(BaseModel):
    """``POST /v1/agents/{name}/invoke``.

    ``message`` is the JSON form of one of the agent's message types; ``type`` names which (the
    class name) when the agent accepts more than one. A streaming handler answers as SSE (one
    event per item), a returning one as JSON; ``stream`` overrides that (JSON of a stream is the
    list of its items).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    message: Any
    type: str | None = None
    timeout_s: float | None = Field(None, gt=0)
    stream: bool | None = None
    """SSE (one event per item) or JSON; unset: SSE exactly when the agent's handler streams."""


class TaskRequest(BaseModel):
    """``POST /v1/tasks/{queue}``: ``task`` is the JSON form of a worker's task type."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    task: Any
    type: str | None = None


class VariantWeightsRequest(BaseModel):
    """``PUT /admin/variants/{name}``: new weights of some or all of a name's arms."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weights: dict[str, float]
