"""Pure checks and defaults of the model servers: no vLLM, no Ray, so unit tests cover them.

* :func:`check_params` -- request keyword arguments -> :class:`~agents.model.SamplingParams`,
  within ``limits`` (``max_tokens``, ``n``); raises :class:`~agents.errors.InvalidParameter`
  naming the field before anything reaches an engine.
* :func:`check_context` -- prompt length and ``max_tokens`` against the model's context.
* :func:`engine_args_with_defaults` -- the user's vLLM engine arguments, untouched, plus CPU
  defaults for the arguments the user did not set.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.errors import InvalidParameter
from agents.model import SamplingParams
from runtime.config import LimitsConfig

__all__ = [
    "CPU_DEFAULT_KV_CACHE_BYTES",
    "check_context",
    "check_params",
    "cpu_has_fast_bf16",
    "engine_args_with_defaults",
]

_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))

CPU_DEFAULT_KV_CACHE_BYTES = 512 * 2**20
"""KV cache of a CPU engine whose config sets neither ``kv_cache_memory_bytes`` nor
``VLLM_CPU_KVCACHE_SPACE`` (vLLM's own default, 4 GiB, would cost every replica that much RAM)."""


def check_params(params: Mapping[str, Any], limits: LimitsConfig) -> SamplingParams:
    """Validate request parameters: their types and ranges, then the deployment's limits.

    A request without ``max_tokens`` gets the SDK default (256) or ``limits.max_tokens``,
    whichever is lower.

    Args:
        params: keyword arguments of a ``chat``/``complete``/``stream`` call.
        limits: ``limits`` of the config (``max_tokens``, ``max_n``).

    Raises:
        InvalidParameter: an unknown name, a value out of range, or over a limit; the message
            names the field, the value and what is allowed.
    """
    unknown = sorted(set(params) - set(_FIELDS))
    if unknown:
        raise InvalidParameter(unknown[0], params[unknown[0]], f"a field of {', '.join(_FIELDS)}")
    if "max_tokens" not in params:  # the SDK's default, capped by this deployment's limit
        default = SamplingParams.__dataclass_fields__["max_tokens"].default
        params = {**params, "max_tokens": min(default, limits.max_tokens)}
    sp = SamplingParams(**params)
    if sp.max_tokens > limits.max_tokens:
        raise InvalidParameter(
            "max_tokens", sp.max_tokens, f"at most {limits.max_tokens} (limits.max_tokens)"
        )
    if sp.n > limits.max_n:
        raise InvalidParameter("n", sp.n, f"at most {limits.max_n} (limits.max_n)")
    if sp.n > 1 and sp.temperature == 0:
        # Greedy decoding gives n identical answers; vLLM rejects it, and so do we, earlier.
        raise InvalidParameter("n", sp.n, "1 when temperature is 0 (greedy)")
    return sp


def check_context(
    prompt_tokens: int, max_tokens: int, *, max_model_len: int, limits: LimitsConfig
) -> None:
    """Check that the prompt fits and leaves room for ``max_tokens``.

    Raises:
        InvalidParameter: ``prompt`` over ``limits.max_prompt_tokens`` or the context, or
            ``max_tokens`` more than the context leaves after the prompt.
    """
    if prompt_tokens > limits.max_prompt_tokens:
        raise InvalidParameter(
            "prompt",
            f"<{prompt_tokens} tokens>",
            f"at most {limits.max_prompt_tokens} tokens (limits.max_prompt_tokens)",
        )
    left = max_model_len - prompt_tokens
    if left < 1:
        raise InvalidParameter(
            "prompt",
            f"<{prompt_tokens} tokens>",
            f"fewer than the model's context of {max_model_len} tokens",
        )
    if max_tokens > left:
        raise InvalidParameter(
            "max_tokens",
            max_tokens,
            f"at most {left}: the context is {max_model_len} tokens and the prompt takes "
            f"{prompt_tokens}",
        )


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX), from ``/proc/cpuinfo``."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def engine_args_with_defaults(
    engine_args: Mapping[str, Any],
    *,
    is_cpu: bool,
    cpu_has_fast_bf16: bool = False,
    kv_cache_env_set: bool = False,
    sleep_for_idle: bool = False,
) -> dict[str, Any]:
    """The user's engine arguments, untouched, plus defaults for what they left out.

    Every default below applies only when the user did not set that argument.

    * ``enable_sleep_mode=True`` when ``sleep_for_idle`` (the platform has vLLM sleep mode and
      the model has ``idle_unload_s``): idle engines then sleep (level 1) and wake in seconds
      instead of being rebuilt.

    CPU defaults:

    * ``enforce_eager=True`` -- ``torch.compile`` adds ~25 s to a ~20 s load for a small gain;
    * ``kv_cache_memory_bytes`` = :data:`CPU_DEFAULT_KV_CACHE_BYTES` -- unless
      ``VLLM_CPU_KVCACHE_SPACE`` is set (``kv_cache_env_set``);
    * ``dtype="float32"`` -- on CPUs without native bfloat16 (no AVX512-BF16/AMX), where vLLM's
      ``auto`` would cast to bfloat16 and run 2-3x slower.

    Args:
        engine_args: ``ModelConfig.engine_args``.
        is_cpu: whether vLLM runs on its CPU platform.
        cpu_has_fast_bf16: whether the CPU computes bfloat16 natively.
        kv_cache_env_set: whether ``VLLM_CPU_KVCACHE_SPACE`` is set.
        sleep_for_idle: whether idle engines should sleep rather than unload.
    """
    out = dict(engine_args)
    if sleep_for_idle:
        out.setdefault("enable_sleep_mode", True)
    if not is_cpu:
        return out
    out.setdefault("enforce_eager", True)
    if not kv_cache_env_set:
        out.setdefault("kv_cache_memory_bytes", CPU_DEFAULT_KV_CACHE_BYTES)
    if not cpu_has_fast_bf16:
        out.setdefault("dtype", "float32")
    return out
