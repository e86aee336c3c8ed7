"""What is sent: synthetic prompts of chosen token lengths, a JSONL dataset, conversations,
and repeats that produce a chosen cache-hit ratio.

A workload hands out *jobs*: a job is one conversation of one or more user turns (one turn for
ordinary requests). The runner sends a job's turns one after another, each with the history
so far including the assistant's actual replies, and records every turn as a request.

Sources:

* **synthetic** (default) -- prompts of ``--input-len`` tokens (uniform within
  ``+-range_ratio``) and ``max_tokens=--output-len``. With ``--tokenizer`` the prompt is random
  token ids of the model's vocabulary (special tokens excluded), decoded and re-encoded until it
  has exactly the length -- vLLM's ``--dataset-name random`` recipe, so the two benchmarks send
  comparable work. Without a tokenizer, random common English words (about one token each in
  the usual BPE vocabularies; the server's ``usage`` then reports the exact count).
* **dataset** (``--dataset FILE.jsonl``) -- one JSON object per line: ``{"prompt": "..."}``,
  ``{"messages": [...]}`` (sent as is) or ``{"turns": ["...", "..."], "system": "..."}`` (a
  conversation); ``max_tokens`` and ``model`` per line are optional. Lines are served in a
  seeded shuffled order, cycling.
* ``--turns K`` makes every synthetic job a K-turn conversation.

``--repeat-fraction F``: each new job is, with probability F, a repeat of a job that already
*completed* (a cache can only answer what it has stored), so with a cache that stores every
answer the hit ratio tends to F. Repeats are chosen with the seeded generator; which earlier
job is repeated depends on completion order, so it is reproducible only in distribution.

Example:
    >>> wl = SyntheticWorkload(WorkloadConfig(input_len=8, output_len=4, seed=1))
    >>> job = wl.next_job()
    >>> len(job.turns), job.max_tokens
    (1, 4)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.harness.errors import ConfigError, DatasetError

__all__ = [
    "DatasetWorkload",
    "Job",
    "SyntheticWorkload",
    "Workload",
    "WorkloadConfig",
    "build_body",
    "load_tokenizer",
    "make_workload",
]

_WORDS = (
    "time",
    "person",
    "year",
    "way",
    "day",
    "thing",
    "man",
    "world",
    "life",
    "hand",
    "part",
    "child",
    "eye",
    "woman",
    "place",
    "work",
    "week",
    "case",
    "point",
    "government",
    "company",
    "number",
    "group",
    "problem",
    "fact",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "president",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "information",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "agent",
    "model",
    "token",
    "cluster",
    "actor",
    "queue",
    "cache",
    "server",
    "request",
    "answer",
    "question",
    "system",
    "network",
)


@dataclass(slots=True)
class Job:
    """One conversation to send: ``turns`` are user contents (str) or, for a single request,
    a complete ``messages`` list."""

    id: int
    model: str
    turns: list[Any]
    max_tokens: int
    system: str | None = None
    repeated: bool = False


@dataclass
class WorkloadConfig:
    """The workload options (see the module docstring for their meaning)."""

    models: list[str] = field(default_factory=lambda: ["default"])
    endpoint: str = "chat"  # "chat" -> /v1/chat/completions, "completions" -> /v1/completions
    input_len: int = 128
    output_len: int = 64
    range_ratio: float = 0.0
    turns: int = 1
    dataset: Path | None = None
    tokenizer: str | None = None
    repeat_fraction: float = 0.0
    seed: int = 0
    system: str | None = None

    def validate(self) -> None:
        if self.endpoint not in ("chat", "completions"):
            raise ConfigError(f"--endpoint must be chat or completions (got {self.endpoint!r})")
        if self.input_len < 1 or self.output_len < 1:
            raise ConfigError(
                f"--input-len and --output-len must be >= 1 (got {self.input_len}, "
                f"{self.output_len})"
            )
        if not 0 <= self.range_ratio < 1:
            raise ConfigError(f"--range-ratio must be in [0, 1) (got {self.range_ratio})")
        if not 0 <= self.repeat_fraction < 1:
            raise ConfigError(f"--repeat-fraction must be in [0, 1) (got {self.repeat_fraction})")
        if self.turns < 1:
            raise ConfigError(f"--turns must be >= 1 (got {self.turns})")
        if self.turns > 1 and self.endpoint != "chat":
            raise ConfigError("--turns > 1 needs --endpoint chat (a conversation is messages)")
        if not self.models:
            raise ConfigError("--model needs at least one name")


def load_tokenizer(path: str) -> Any:
    """A Hugging Face tokenizer (``transformers.AutoTokenizer``), imported only when asked for:
    the harness itself does not need transformers."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ConfigError("--tokenizer needs the transformers package") from exc
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # transformers raises OSError, ValueError, ...
        raise ConfigError(f"--tokenizer {path!r} cannot be loaded: {exc}") from exc


class Workload:
    """The common part: job ids, models round-robin, and repeats of completed jobs."""

    def __init__(self, config: WorkloadConfig) -> None:
        config.validate()
        self.config = config
        self.rng = random.Random(config.seed)
        self._next_id = 0
        self._done: list[Job] = []

    def next_job(self) -> Job:
        """The next job to send: a repeat (``repeat_fraction`` of the time, once something
        completed) or a fresh one."""
        if (
            self._done
            and self.config.repeat_fraction
            and (self.rng.random() < self.config.repeat_fraction)
        ):
            return replace(self.rng.choice(self._done), repeated=True)
        job_id = self._next_id
        self._next_id += 1
        model = self.config.models[job_id % len(self.config.models)]
        return self._fresh(job_id, model)

    def completed(self, job: Job) -> None:
        """Tell the workload a job finished successfully: it may now be repeated."""
        if self.config.repeat_fraction and not job.repeated:
            self._done.append(job)

    def _fresh(self, job_id: int, model: str) -> Job:
        raise NotImplementedError


class SyntheticWorkload(Workload):
    """Random prompts of controlled token length (see the module docstring)."""

    def __init__(self, config: WorkloadConfig, tokenizer: Any = None) -> None:
        super().__init__(config)
        self.tokenizer = tokenizer
        self._pool = self.rng.choices(_WORDS, k=max(1 << 16, 2 * config.input_len + 2))
        if tokenizer is not None:
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            self._ids = [i for i in range(tokenizer.vocab_size) if i not in special]

    def _length(self, n: int) -> int:
        r = self.config.range_ratio
        return max(1, self.rng.randint(int(n * (1 - r)), int(n * (1 + r)))) if r else n

    def prompt(self, n_tokens: int) -> str:
        """A fresh random prompt of ``n_tokens`` tokens (exactly, with a tokenizer)."""
        if self.tokenizer is None:
            # A slice of a seeded pool of random words: drawing n words per request costs more
            # CPU than sending it. The caller's job id in front keeps prompts distinct.
            pool = self._pool
            start = self.rng.randrange(len(pool) - n_tokens) if len(pool) > n_tokens else 0
            return " ".join(pool[start : start + n_tokens])
        tok = self.tokenizer
        # The server adds the tokenizer's special tokens (BOS): leave room for them, as vLLM's
        # random dataset does, so the server's prompt_tokens is n_tokens.
        n_tokens = max(1, n_tokens - int(tok.num_special_tokens_to_add()))
        ids = self.rng.choices(self._ids, k=n_tokens)
        text = tok.decode(ids)
        for _ in range(4):  # decode/encode does not round-trip exactly: adjust, as vLLM does
            ids = tok.encode(text, add_special_tokens=False)
            if len(ids) == n_tokens:
                break
            if len(ids) > n_tokens:
                ids = ids[:n_tokens]
            else:
                ids = ids + self.rng.choices(self._ids, k=n_tokens - len(ids))
            text = tok.decode(ids)
        return text

    def _fresh(self, job_id: int, model: str) -> Job:
        c = self.config
        turns = [self.prompt(self._length(c.input_len)) for _ in range(c.turns)]
        if self.tokenizer is None:  # the id replaces the first word: same length, unique
            turns = [f"{job_id}{t[t.find(' ') :] if ' ' in t else ''}" for t in turns]
        return Job(job_id, model, turns, self._length(c.output_len), system=c.system)


class DatasetWorkload(Workload):
    """Prompts, message lists or conversations from a JSONL file."""

    def __init__(self, config: WorkloadConfig) -> None:
        super().__init__(config)
        assert config.dataset is not None
        self.rows = self._read(config.dataset)
        self.order = list(range(len(self.rows)))
        self.rng.shuffle(self.order)

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise DatasetError(f"--dataset {path}: {exc}") from exc
        rows = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not JSON ({exc})") from exc
            if not isinstance(row, dict) or not ({"prompt", "messages", "turns"} & row.keys()):
                raise DatasetError(f"{path}:{n}: needs a 'prompt', 'messages' or 'turns' key")
            rows.append(row)
        if not rows:
            raise DatasetError(f"--dataset {path}: no rows")
        return rows

    def _fresh(self, job_id: int, model: str) -> Job:
        row = self.rows[self.order[job_id % len(self.order)]]
        if "turns" in row:
            turns = [str(t) for t in row["turns"]]
        elif "messages" in row:
            turns = [list(row["messages"])]
        else:
            turns = [str(row["prompt"])]
        if len(turns) > 1 and self.config.endpoint != "chat":
            raise ConfigError("the dataset has conversations ('turns'): use --endpoint chat")
        return Job(
            job_id,
            str(row.get("model", model)),
            turns,
            int(row.get("max_tokens", self.config.output_len)),
            system=row.get("system", self.config.system),
        )


def make_workload(config: WorkloadConfig, tokenizer: Any = None) -> Workload:
    """The workload for ``config``: :class:`DatasetWorkload` with a dataset, else
    :class:`SyntheticWorkload` (with ``tokenizer``, or the ``--tokenizer`` loaded here)."""
    config.validate()
    if config.dataset is not None:
        return DatasetWorkload(config)
    if tokenizer is None and config.tokenizer:
        tokenizer = load_tokenizer(config.tokenizer)
    return SyntheticWorkload(config, tokenizer)


def build_body(
    job: Job,
    turn: int,
    history: list[dict[str, Any]],
    endpoint: str,
    stream: bool,
    ignore_eos: bool,
    extra: dict[str, Any] | None = None,
) -> tuple[bytes, list[dict[str, Any]]]:
    """The JSON body of ``job``'s turn ``turn``, and the chat messages it sends (the history
    the next turn builds on). ``extra`` (``--temperature``, ``--extra-body``) is merged last."""
    content = job.turns[turn]
    # one user per conversation (OpenAI's ``user``): a server that keeps a caller on one variant
    # or replica by it sees the turns of a conversation as one caller, and the others as many
    body: dict[str, Any] = {
        "model": job.model,
        "max_tokens": job.max_tokens,
        "user": f"bench-{job.id}",
    }
    if endpoint == "completions":
        body["prompt"] = content if isinstance(content, str) else json.dumps(content)
        messages: list[dict[str, Any]] = []
    else:
        if isinstance(content, list):  # a complete message list from the dataset
            messages = content
        else:
            messages = list(history)
            if not messages and job.system:
                messages.append({"role": "system", "content": job.system})
            messages.append({"role": "user", "content": content})
        body["messages"] = messages
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if ignore_eos:
        body["ignore_eos"] = True
    if extra:
        body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode(), messages
