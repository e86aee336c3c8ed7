"""The real ``builtin:tiny`` build: deterministic, safe under concurrent first use by several
processes, and a valid Hugging Face model directory with a chat template that speaks tools."""

from __future__ import annotations

import hashlib
import multiprocessing

import pytest

pytestmark = pytest.mark.integration

transformers = pytest.importorskip("transformers")


def _version() -> str:
    from runtime.models.tiny import TINY_VERSION

    return TINY_VERSION


def _ensure(cache_dir: str) -> str:
    from runtime.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(cache_dir))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_processes_racing_on_first_use_share_one_complete_build(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        paths = pool.map(_ensure, [str(tmp_path / "a")] * 3)
    assert len(set(paths)) == 1
    model = tmp_path / "a" / _version()
    assert paths[0] == str(model) and (model / ".complete").exists()
    assert not list((tmp_path / "a").glob(".*.tmp"))
    names = {p.name for p in model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names

    tok = transformers.AutoTokenizer.from_pretrained(model)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok.encode("Hello, agents! 42", add_special_tokens=False)) == (
        "Hello, agents! 42"
    )  # byte-level: every string round-trips
    config = transformers.AutoConfig.from_pretrained(model)
    assert config.head_dim == 64 and config.eos_token_id == [2, 4]

    # A second machine (another directory) generates the same bytes: fixed seed.
    other = _ensure(str(tmp_path / "b"))
    for name in ("model.safetensors", "tokenizer.json"):
        assert _digest(model / name) == _digest(tmp_path / "b" / _version() / name), name
    assert other.endswith(_version())


def test_the_chat_template_renders_tools_calls_and_results(tmp_path):
    """Hermes/Qwen style, what vLLM's hermes parser reads back: tools in the system turn,
    calls as <tool_call> JSON (content None beside them), results as <tool_response>."""
    model = _ensure(str(tmp_path))
    tok = transformers.AutoTokenizer.from_pretrained(model)
    for marker in ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"):
        assert marker in tok.all_special_tokens
        assert len(tok.encode(marker, add_special_tokens=False)) == 1
    tools = [{"type": "function", "function": {"name": "lamp", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "lamp", "arguments": {"on": 1}}}
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Lamp?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "on"},
    ]
    text = tok.apply_chat_template(turns, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert '<tools>\n{"type": "function", "function": {"name": "lamp"' in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "lamp", "arguments": {"on": 1}}\n'
        "</tool_call><|im_end|>\n"
    ) in text
    assert "<|im_start|>user\n<tool_response>\non\n</tool_response><|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
