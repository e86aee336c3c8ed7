"""Pure logic of the model servers: parameter checks, context checks, engine-arg defaults.
No vLLM, no Ray."""

from __future__ import annotations

import pytest

from agents.errors import InvalidParameter
from runtime.config import LimitsConfig
from runtime.models._params import (
    CPU_DEFAULT_KV_CACHE_BYTES,
    check_context,
    check_params,
    engine_args_with_defaults,
)

LIMITS = LimitsConfig(max_tokens=100, max_n=2, max_prompt_tokens=50)


def test_valid_parameters_become_sampling_params():
    sp = check_params({"max_tokens": 100, "n": 2, "temperature": 0.5, "stop": "\n"}, LIMITS)
    assert sp.max_tokens == 100 and sp.n == 2 and sp.stop == ("\n",)
    assert check_params({}, LIMITS).max_tokens == 100  # the default, capped by the limit
    assert check_params({}, LimitsConfig()).max_tokens == 256


@pytest.mark.parametrize(
    ("params", "field", "allowed"),
    [
        ({"max_tokens": 101}, "max_tokens", "limits.max_tokens"),
        ({"n": 3, "temperature": 1.0}, "n", "limits.max_n"),
        ({"n": 2, "temperature": 0}, "n", "greedy"),
        ({"max_tokens": 0}, "max_tokens", ">= 1"),
        ({"top_k": 0}, "top_k", "-1"),
        ({"logprobs": 3}, "logprobs", "a field of"),
        ({"seed": "x"}, "seed", "integer"),
    ],
)
def test_bad_parameters_name_the_field_and_the_limit(params, field, allowed):
    with pytest.raises(InvalidParameter) as raised:
        check_params(params, LIMITS)
    assert raised.value.field == field and allowed in str(raised.value)


def test_context_checks_prompt_and_room_left():
    check_context(10, 90, max_model_len=100, limits=LIMITS)  # exactly fits
    with pytest.raises(InvalidParameter, match=r"at most 90: the context is 100 tokens") as e:
        check_context(10, 91, max_model_len=100, limits=LIMITS)
    assert e.value.field == "max_tokens"
    with pytest.raises(InvalidParameter, match="limits.max_prompt_tokens") as e:
        check_context(51, 1, max_model_len=1000, limits=LIMITS)
    assert e.value.field == "prompt"
    with pytest.raises(InvalidParameter, match="context of 40 tokens") as e:
        check_context(45, 1, max_model_len=40, limits=LIMITS)
    assert e.value.field == "prompt"


def test_engine_args_pass_through_untouched_on_gpu():
    user = {"dtype": "bfloat16", "max_num_seqs": 8, "enable_prefix_caching": True}
    assert engine_args_with_defaults(user, is_cpu=False) == user
    assert engine_args_with_defaults({}, is_cpu=False) == {}


def test_cpu_defaults_fill_only_what_the_user_left_out():
    assert engine_args_with_defaults({}, is_cpu=True) == {
        "enforce_eager": True,
        "kv_cache_memory_bytes": CPU_DEFAULT_KV_CACHE_BYTES,
        "dtype": "float32",
    }
    user = {"enforce_eager": False, "kv_cache_memory_bytes": 1, "dtype": "bfloat16", "x": 1}
    assert engine_args_with_defaults(user, is_cpu=True) == user
    fast = engine_args_with_defaults({}, is_cpu=True, cpu_has_fast_bf16=True)
    assert "dtype" not in fast  # vLLM's auto picks bfloat16, which is fast there
    env = engine_args_with_defaults({}, is_cpu=True, kv_cache_env_set=True)
    assert "kv_cache_memory_bytes" not in env  # VLLM_CPU_KVCACHE_SPACE decides


def test_idle_unload_on_a_sleep_capable_platform_enables_sleep_mode_unless_set():
    assert engine_args_with_defaults({}, is_cpu=False, sleep_for_idle=True) == {
        "enable_sleep_mode": True
    }
    off = {"enable_sleep_mode": False}
    assert engine_args_with_defaults(off, is_cpu=False, sleep_for_idle=True) == off
