"""``builtin:tiny``: a tiny Llama that the project generates on this machine, on first use.

No model hub is reachable on our machines and a user's first run must work offline, so the default
model is built here: a Llama-architecture network with random weights (fixed seed) and a byte-level
BPE tokenizer trained on a small generated corpus, with a ChatML chat template that speaks tools the
Hermes/Qwen way (see :data:`CHAT_TEMPLATE`). It is written as an
ordinary Hugging Face directory (``config.json``, ``model.safetensors``, ``tokenizer.json`` ...) and
loaded by vLLM through exactly the path a real model takes. Its answers are noise; its shapes,
tokenizer, chat template, stop tokens and speed are real.

Shape: vocab 2048, hidden 256, intermediate 512, 2 layers, 4 heads / 4 KV heads (head_dim 64 --
vLLM's CPU attention rejects head_dim 16), float32 weights (AVX2-only CPUs run float32 2-3x faster
than bfloat16), 2048 positions. Stop tokens are ``<|eos|>`` and ``<|im_end|>``; ``<tool_call>``,
``</tool_call>``, ``<tool_response>`` and ``</tool_response>`` are special tokens, as in Qwen's and
Hermes' tokenizers, so vLLM's ``hermes`` tool parser reads its calls.

Building takes a few seconds and happens once per cache directory. It is atomic and safe when
several processes (Serve replicas, test workers) ask at once:

1. fast path: ``<cache>/tiny-v2/.complete`` exists -- return;
2. take an exclusive ``flock`` on ``<cache>/tiny-v2.lock`` (the losers block here);
3. look again (a winner may have finished meanwhile);
4. build into ``<cache>/.tiny-v2.<pid>.tmp``, write ``.complete`` last, ``rename`` into place.

A crash leaves at most a ``.tmp`` directory, never a half-written ``tiny-v2``; the next build
removes stale temporaries. Bump ``TINY_VERSION`` whenever the recipe changes.

Example:
    >>> path = ensure_tiny_model()  # doctest: +SKIP
    >>> sorted(p.name for p in path.iterdir())  # doctest: +SKIP
    ['.complete', 'chat_template.jinja', 'config.json', 'generation_config.json', ...]
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import shutil
import time
from pathlib import Path

__all__ = ["TINY_SOURCE", "TINY_VERSION", "ensure_tiny_model"]

log = logging.getLogger(__name__)

TINY_SOURCE = "builtin:tiny"
TINY_VERSION = "tiny-v2"  # v2: tools in the chat template, <tool_call> special tokens
_COMPLETE = ".complete"

VOCAB_SIZE = 2048
SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>")
TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
# ChatML, with tools as Qwen 2.5 / Hermes 2 Pro write them: the tools' definitions in the system
# turn, the assistant's calls as <tool_call>{"name": .., "arguments": {..}}</tool_call>, the
# tools' answers as <tool_response> blocks in one user turn. An assistant turn that only calls
# has content None. Arguments arrive as a dict (vLLM's server and our engine parse the JSON
# string of the OpenAI form first) or, if they did not parse, as the string itself.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\n</tools>\n\nFor each function call, return a json object with function name and "
    'arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": '
    '<function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n\' }}'
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and loop.first %}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\n<tool_response>\n' + (message['content'] or '') + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message['content'] %}{{- '\n' + message['content'] }}{%- endif %}"
    "{%- for call in message['tool_calls'] %}"
    "{%- set fn = call['function'] if call.get('function') else call %}"
    "{{- '\n<tool_call>\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' }}"
    "{%- if fn['arguments'] is string %}{{- fn['arguments'] }}"
    "{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}"
    "{{- '}\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
_SEED = 0
_WORD_TEXT = (
    "the a an of to and in is was for on that with as by at from it this be are or have not agent "
    "agents ray actor actors task tasks model models token tokens runtime message messages system "
    "user assistant tool tools call calls result results plan plans memory state step steps "
    "worker workers queue queues request requests response responses server client cluster node "
    "nodes quick brown fox jumps over lazy dog river mountain city green blue red small large "
    "fast slow compute send receive schedule retry fail succeed observe think reason answer "
    "question write read data file files value values number numbers time day night morning "
    "evening today tomorrow one two three four five six seven eight nine ten hundred thousand "
    "first second last next hello please thanks sentence paragraph short long review draft topic"
)


def ensure_tiny_model(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory of the tiny model, generating it first if needed.

    Args:
        cache_dir: parent directory; default :func:`runtime.config.model_cache_dir`
            (``$RAYGENT_MODEL_CACHE`` or ``~/.cache/raygent/models``).

    Returns:
        ``<cache_dir>/<TINY_VERSION>``, complete.

    Raises:
        OSError: the cache directory cannot be created or written.
    """
    if cache_dir is None:
        from runtime.config import model_cache_dir

        cache_dir = model_cache_dir()
    root = Path(cache_dir).expanduser()
    target = root / TINY_VERSION
    if (target / _COMPLETE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{TINY_VERSION}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        try:
            if (target / _COMPLETE).exists():  # another process built it while we waited
                return target
            for stale in root.glob(f".{TINY_VERSION}.*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            if target.exists():  # not complete: a build from before rename-into-place existed
                shutil.rmtree(target)
            tmp = root / f".{TINY_VERSION}.{os.getpid()}.tmp"
            t0 = time.perf_counter()
            _build(tmp)
            (tmp / _COMPLETE).write_text(TINY_VERSION + "\n")
            os.rename(tmp, target)
            log.info("generated %s at %s in %.1fs", TINY_SOURCE, target, time.perf_counter() - t0)
            return target
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _corpus(n_lines: int = 20_000) -> list[str]:
    rng = random.Random(_SEED)
    vocab = _WORD_TEXT.split()
    lines = []
    for _ in range(n_lines):
        words = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 18)))
        line = words[0].upper() + words[1:] + rng.choice(".?!..")
        if rng.random() < 0.2:
            line += f" {rng.randint(0, 9999)}"
        lines.append(line)
    return lines


def _build(out: Path) -> None:
    """Write tokenizer and random-weight model into ``out`` (a fresh directory)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per file of a 10 MB model is noise
    out.mkdir(parents=True)
    # Tokenizer: byte-level BPE, so every string round-trips without an unknown token.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[*SPECIAL_TOKENS, *TOOL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>", *TOOL_TOKENS],
        model_max_length=2048,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    # Model: random weights from a fixed seed, so every machine generates the same network.
    torch.manual_seed(_SEED)
    cfg = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=ids["<|bos|>"],
        eos_token_id=[ids["<|eos|>"], ids["<|im_end|>"]],
        pad_token_id=ids["<|pad|>"],
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.config.dtype = torch.float32  # recorded in config.json; vLLM's dtype="auto" reads it
    # Explicit, so vLLM stops at both end tokens (the chat turn ends with <|im_end|>).
    model.generation_config = GenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id
    )
    model.save_pretrained(out)  # safetensors
