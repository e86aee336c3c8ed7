"""Per-request timings in, the report's figures out -- with ``vllm bench serve``'s definitions.

Every definition (also in ``bench/README.md``), per request, times from ``time.perf_counter``
(system-wide ``CLOCK_MONOTONIC`` on Linux, so records of several worker processes share one
clock):

* **start** -- the request is handed to the connection (after any ``--max-concurrency`` wait,
  which is recorded apart as ``queue_s``);
* **TTFT** -- start to the network read that completed the first *token chunk* (a completions
  chunk with ``choices``, or a chat chunk whose delta carries content, reasoning or tool calls);
* **ITL** -- the gaps between consecutive token chunks (a chunk may carry several tokens);
* **E2E latency** -- start to the last token chunk (streaming) or to the whole body (not
  streaming), as vLLM measures it; ``done_s`` keeps the end of the response as well;
* **TPOT** -- ``(E2E - TTFT) / (output tokens - 1)``, for requests with more than one token;
* **output tokens** -- the server's ``usage.completion_tokens`` when sent, else the
  ``--tokenizer`` count of the text, else the number of token chunks (flagged).

Over a run (a *step* of a sweep) of duration ``D`` -- first request sent to last one finished:
request throughput = completed / D; input / output / total token throughput = tokens / D;
goodput = completed requests meeting *every* ``--slo`` bound / D (a request with one output
token has TPOT 0 for this test, as in vLLM); error rate = failed / (completed + failed).
Percentiles interpolate linearly between order statistics (``numpy.percentile``'s default).

Example:
    >>> r = RequestRecord(start_s=0.0, ttft_s=0.1, e2el_s=0.5, output_tokens=5, itl_s=[0.1] * 4)
    >>> round(r.tpot_s, 3)
    0.1
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from bench.harness.errors import ConfigError

__all__ = [
    "BREAKDOWN_COLUMNS",
    "DEFAULT_PERCENTILES",
    "Gate",
    "RequestRecord",
    "breakdown_row",
    "check_gates",
    "describe",
    "flat_metrics",
    "parse_fail_if",
    "parse_slo",
    "percentile",
    "summarize",
]

DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)
SLO_KEYS = {"ttft_ms": "ttft_s", "tpot_ms": "tpot_s", "e2el_ms": "e2el_s", "itl_ms": "itl_s"}
CACHE_STATES = ("hit", "miss", "bypass")


@dataclass(slots=True)
class RequestRecord:
    """One request as the client saw it. Times are seconds; ``start_s`` is on the
    ``perf_counter`` clock while running and relative to the run's start once written out."""

    start_s: float = 0.0
    ttft_s: float | None = None
    e2el_s: float | None = None
    done_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    input_tokens: int | None = None
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, if sent
    output_tokens: int = 0
    tokens_source: str = ""  # "usage" | "tokenizer" | "chunks"
    status: int = 0
    error: str = ""  # "" = success; else a kind: http_<status>, timeout, connection, ...
    error_detail: str = ""
    cache: str = ""  # x-raygent-cache: hit | miss | bypass | "" (header absent)
    variant: str = ""  # x-raygent-variant: the arm that answered a name with variants
    retry_after: str = ""
    queue_s: float = 0.0
    model: str = ""
    step: int = 0
    worker: int = 0
    conversation: int = -1
    turn: int = 0
    repeated: bool = False
    warmup: bool = False
    text: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None unless more than one token came."""
        if self.ttft_s is None or self.e2el_s is None or self.output_tokens <= 1:
            return None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)

    def to_dict(self, t0: float = 0.0, keep_text: bool = False) -> dict[str, Any]:
        """A JSON-able row; ``start_s`` relative to ``t0``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["start_s"] = self.start_s - t0
        out["tpot_s"] = self.tpot_s
        if not keep_text:
            del out["text"]
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> RequestRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by ``numpy.percentile`` (linear interpolation between
    closest ranks, as vLLM's report computes it): the one definition every bench uses. NaN for
    no values."""
    if len(values) == 0:
        return math.nan
    return float(np.percentile(values, p))


def describe(values_s: Sequence[float], percentiles: Iterable[float]) -> dict[str, float]:
    """Mean, median, std, p90, p99 and the chosen percentiles of seconds, in milliseconds."""
    ms = sorted(v * 1000.0 for v in values_s)
    out: dict[str, float] = {"count": len(ms)}
    if not ms:
        return out | {"mean": math.nan, "median": math.nan, "std": math.nan}
    mean = statistics.fmean(ms)
    out["mean"] = mean
    out["median"] = percentile(ms, 50)
    # Population std in floats (statistics.pstdev is exact, and slow on 10^5 values).
    out["std"] = math.sqrt(max(0.0, statistics.fmean([x * x for x in ms]) - mean * mean))
    out["min"] = ms[0]
    out["max"] = ms[-1]
    for p in sorted({90.0, 99.0, *percentiles} - {50.0}):  # p50 is the median
        out[_pkey(p)] = percentile(ms, p)
    return out


def _pkey(p: float) -> str:
    return f"p{p:g}".replace(".", "_")


def parse_slo(text: str | None) -> dict[str, float]:
    """``"ttft_ms=500,tpot_ms=50"`` -> ``{"ttft_ms": 500.0, "tpot_ms": 50.0}``."""
    if not text:
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in SLO_KEYS:
            raise ConfigError(
                f"--slo: {part.strip()!r} is not KEY=MS with KEY one of {sorted(SLO_KEYS)}"
            )
        try:
            out[key] = float(value)
        except ValueError as exc:
            raise ConfigError(f"--slo: {key} needs a number of ms (got {value!r})") from exc
    return out


def _meets(r: RequestRecord, slo: dict[str, float]) -> bool:
    for key, bound_ms in slo.items():
        bound = bound_ms / 1000.0
        if key == "ttft_ms" and (r.ttft_s is None or r.ttft_s > bound):
            return False
        if key == "e2el_ms" and (r.e2el_s is None or r.e2el_s > bound):
            return False
        if key == "tpot_ms" and (r.tpot_s or 0.0) > bound:
            return False
        if key == "itl_ms" and r.itl_s and max(r.itl_s) > bound:
            return False
    return True


def _error_kinds(records: Iterable[RequestRecord]) -> dict[str, int]:
    return dict(Counter(r.error for r in records if r.error).most_common())


def _latency_block(ok: Sequence[RequestRecord], percentiles: Iterable[float]) -> dict[str, Any]:
    pcts = list(percentiles)
    return {
        "ttft_ms": describe([r.ttft_s for r in ok if r.ttft_s is not None], pcts),
        "tpot_ms": describe([t for r in ok if (t := r.tpot_s) is not None], pcts),
        "itl_ms": describe([g for r in ok for g in r.itl_s], pcts),
        "e2el_ms": describe([r.e2el_s for r in ok if r.e2el_s is not None], pcts),
    }


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    slo: dict[str, float] | None = None,
    percentiles: Iterable[float] = DEFAULT_PERCENTILES,
    by_model: bool = True,
) -> dict[str, Any]:
    """The figures of one step (warm-up records must already be left out).

    Args:
        records: the step's requests, successful and failed.
        duration_s: first request sent to last one finished (see the module docstring).
        slo: ``--slo`` bounds in ms for goodput; empty means goodput is not reported.
        percentiles: extra percentiles beyond median, p90 and p99.
        by_model: add a ``per_model`` breakdown (per agent, with ``model=agent:<name>``), and
            a ``per_variant`` one (``<model>/<variant>``) when the answers name variants.
    """
    pcts = list(percentiles)
    slo = slo or {}
    ok = [r for r in records if r.ok]
    failed = len(records) - len(ok)
    dur = duration_s if duration_s > 0 else math.nan
    in_tokens = sum(r.input_tokens or 0 for r in ok)
    out_tokens = sum(r.output_tokens for r in ok)
    good = sum(1 for r in ok if _meets(r, slo)) if slo else None
    out: dict[str, Any] = {
        "duration_s": duration_s,
        "requests": len(records),
        "completed": len(ok),
        "failed": failed,
        "error_rate": failed / len(records) if records else 0.0,
        "errors": _error_kinds(records),
        "request_throughput": len(ok) / dur,
        "input_token_throughput": in_tokens / dur,
        "output_token_throughput": out_tokens / dur,
        "total_token_throughput": (in_tokens + out_tokens) / dur,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "tokens_source": dict(Counter(r.tokens_source for r in ok if r.tokens_source)),
        "prompt_cached": _cached_share(ok),
        "slo": slo,
        "good_requests": good,
        "goodput": good / dur if good is not None else None,
        "goodput_ratio": good / len(records) if good is not None and records else None,
        **_latency_block(ok, pcts),
        "queue_ms": describe([r.queue_s for r in ok], pcts),
        "cache": _cache_block(ok, pcts),
    }
    if by_model:
        models = sorted({r.model for r in records})
        if len(models) > 1 or any(m.startswith("agent:") for m in models):
            out["per_model"] = {
                m: summarize(
                    [r for r in records if r.model == m], duration_s, slo, pcts, by_model=False
                )
                for m in models
            }
        turns = sorted({r.turn for r in records})
        if len(turns) > 1:  # multi-turn: later turns are where a prefix cache pays
            out["per_turn"] = {
                f"turn {t + 1}": summarize(
                    [r for r in records if r.turn == t], duration_s, slo, pcts, by_model=False
                )
                for t in turns
            }
        variants = sorted({(r.model, r.variant) for r in records if r.variant})
        if variants:  # requests that failed before an arm was chosen name none
            out["per_variant"] = {
                f"{m}/{v}": summarize(
                    [r for r in records if r.model == m and r.variant == v],
                    duration_s,
                    slo,
                    pcts,
                    by_model=False,
                )
                for m, v in variants
            }
    return out


BREAKDOWN_COLUMNS = (
    "ok", "failed", "error rate", "req/s", "goodput", "TTFT p50", "TPOT p50", "E2E p99",
    "prompt cached",
)  # fmt: skip


def breakdown_row(s: dict[str, Any]) -> list[Any]:
    """One line of a per-model, per-variant or per-turn table, in ``BREAKDOWN_COLUMNS``
    order."""
    return [
        s["completed"],
        s["failed"],
        s["error_rate"],
        s["request_throughput"],
        s["goodput"],
        s["ttft_ms"].get("median"),
        s["tpot_ms"].get("median"),
        s["e2el_ms"].get("p99"),
        s.get("prompt_cached"),
    ]


def _cached_share(ok: Sequence[RequestRecord]) -> float | None:
    """Share of prompt tokens the server found in its prefix cache, over the answers that said
    (``usage.prompt_tokens_details.cached_tokens``); None when none did."""
    said = [r for r in ok if r.cached_tokens is not None and r.input_tokens]
    total = sum(r.input_tokens or 0 for r in said)
    return sum(r.cached_tokens or 0 for r in said) / total if total else None


def _cache_block(ok: Sequence[RequestRecord], pcts: list[float]) -> dict[str, Any]:
    counts = Counter(r.cache for r in ok if r.cache)
    seen = counts["hit"] + counts["miss"]
    block: dict[str, Any] = {
        "hit": counts["hit"],
        "miss": counts["miss"],
        "bypass": counts["bypass"],
        "no_header": sum(1 for r in ok if not r.cache),
        # Bypassed requests were never cacheable: they are not part of the ratio.
        "hit_ratio": counts["hit"] / seen if seen else None,
    }
    for state in ("hit", "miss"):
        sub = [r for r in ok if r.cache == state]
        if sub:
            lat = _latency_block(sub, pcts)
            block[state + "_latency"] = {"ttft_ms": lat["ttft_ms"], "e2el_ms": lat["e2el_ms"]}
    return block


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Every scalar a ``--fail-if`` condition can name: top-level numbers as they are, the
    latency blocks as ``<stat>_<metric>`` (``p99_ttft_ms``, ``median_e2el_ms``, ``mean_itl_ms``)
    and ``cache_hit_ratio``."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "queue_ms"):
        for stat, value in summary.get(metric, {}).items():
            if stat != "count":
                out[f"{stat}_{metric}"] = value
    ratio = summary.get("cache", {}).get("hit_ratio")
    if ratio is not None:
        out["cache_hit_ratio"] = ratio
    return out


_GATE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+)\s*$")
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@dataclass(frozen=True, slots=True)
class Gate:
    """One ``--fail-if`` condition: the run fails when ``metric op value`` holds."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_fail_if(texts: Iterable[str] | None) -> list[Gate]:
    """``["p99_ttft_ms>500", "error_rate>0.01"]`` (or one comma-separated string each)."""
    gates = []
    for text in texts or ():
        for part in text.split(","):
            if not part.strip():
                continue
            m = _GATE.match(part)
            if not m:
                raise ConfigError(
                    f"--fail-if: {part.strip()!r} is not METRIC<op>NUMBER, "
                    "e.g. p99_ttft_ms>500 or error_rate>0.01"
                )
            gates.append(Gate(m.group(1), m.group(2), float(m.group(3))))
    return gates


def check_gates(gates: Sequence[Gate], summary: dict[str, Any]) -> list[str]:
    """The conditions that hold (each a failure, with the measured value), or that name a
    metric the summary lacks (also a failure: a CI gate must not pass by a typo)."""
    flat = flat_metrics(summary)
    failures = []
    for g in gates:
        if g.metric not in flat:
            failures.append(f"{g}: unknown metric {g.metric!r} (known: {', '.join(sorted(flat))})")
            continue
        value = flat[g.metric]
        if isinstance(value, float) and math.isnan(value):
            failures.append(f"{g}: {g.metric} has no value (no successful requests)")
        elif _OPS[g.op](value, g.value):
            failures.append(f"{g}: measured {g.metric}={value:.4g}")
    return failures
