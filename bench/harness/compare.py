"""Convert two result.json files --> their differences, as a table, JSON and an HTML page.

Steps are paired by position (the sweeps of A and B are expected to have the same shape, e.g.
raygent vs plain vLLM at the same concurrencies, or one commit before and after a change); the
extra steps of the longer run are ignored with a note. For each pair and key metric: A, B,
``B - A`` and ``(B - A) / A`` in percent, plus the ratios ``B / A`` of throughput, TTFT median
and TPOT median that the suite calls the *overhead ratios*.

Example:
    raygent-bench compare vllm/result.json raygent/result.json --out cmp/
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.harness.errors import BenchError
from bench.harness.report_html import page, table
from bench.harness.svg import bar_chart, line_chart

__all__ = ["KEY_METRICS", "compare_command", "compare_results", "load_result", "render_compare"]

# (label, path in a step summary, higher is better)
KEY_METRICS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("request throughput (req/s)", ("request_throughput",), True),
    ("output tok/s", ("output_token_throughput",), True),
    ("goodput (req/s)", ("goodput",), True),
    ("TTFT median (ms)", ("ttft_ms", "median"), False),
    ("TTFT p99 (ms)", ("ttft_ms", "p99"), False),
    ("TPOT median (ms)", ("tpot_ms", "median"), False),
    ("ITL median (ms)", ("itl_ms", "median"), False),
    ("E2E median (ms)", ("e2el_ms", "median"), False),
    ("E2E p99 (ms)", ("e2el_ms", "p99"), False),
    ("error rate", ("error_rate",), False),
    ("cache hit ratio", ("cache", "hit_ratio"), True),
)


def load_result(path: Path) -> dict[str, Any]:
    """A result.json written by ``raygent-bench run`` (or a directory holding one)."""
    if path.is_dir():
        path = path / "result.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc
    if data.get("meta", {}).get("tool") != "raygent-bench":
        raise BenchError(f"{path} is not a raygent-bench result (no meta.tool)")
    return data


def _get(summary: dict[str, Any], path: tuple[str, ...]) -> float | None:
    v: Any = summary
    for k in path:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per step pair and metric: ``a``, ``b``, ``diff``, ``pct`` (None when undefined) and
    ``better`` (whether B improves on A)."""
    n = min(len(a["steps"]), len(b["steps"]))
    pairs = []
    for i in range(n):
        sa, sb = a["steps"][i], b["steps"][i]
        rows = []
        for label, path, higher in KEY_METRICS:
            va, vb = _get(sa["summary"], path), _get(sb["summary"], path)
            diff = vb - va if va is not None and vb is not None else None
            pct = diff / va * 100 if diff is not None and va else None
            better = None if diff is None or diff == 0 else (diff > 0) == higher
            rows.append(
                {"metric": label, "a": va, "b": vb, "diff": diff, "pct": pct, "better": better}
            )
        thr_a = _get(sa["summary"], ("request_throughput",))
        thr_b = _get(sb["summary"], ("request_throughput",))
        ttft_a = _get(sa["summary"], ("ttft_ms", "median"))
        ttft_b = _get(sb["summary"], ("ttft_ms", "median"))
        tpot_a = _get(sa["summary"], ("tpot_ms", "median"))
        tpot_b = _get(sb["summary"], ("tpot_ms", "median"))
        pairs.append(
            {
                "step": i,
                "label_a": sa["shape"]["label"],
                "label_b": sb["shape"]["label"],
                "metrics": rows,
                "throughput_ratio": thr_b / thr_a if thr_a and thr_b is not None else None,
                "ttft_ratio": ttft_b / ttft_a if ttft_a and ttft_b is not None else None,
                "tpot_ratio": tpot_b / tpot_a if tpot_a and tpot_b is not None else None,
            }
        )
    return {
        "a": a["meta"]["label"],
        "b": b["meta"]["label"],
        "pairs": pairs,
        "unpaired_steps": abs(len(a["steps"]) - len(b["steps"])),
    }


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.1f}%" if pct else f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def print_compare(cmp: dict[str, Any]) -> None:
    """The comparison as rich tables, improvements green and regressions red."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for pair in cmp["pairs"]:
        t = Table(
            title=f"A={cmp['a']} vs B={cmp['b']}: step {pair['step']} "
            f"({pair['label_a']} | {pair['label_b']})",
            title_justify="left",
        )
        for col in ("metric", "A", "B", "B - A", "change"):
            t.add_column(col, justify="right")
        for r in pair["metrics"]:
            style = {True: "green", False: "red", None: ""}[r["better"]]
            change = _fmt(r["pct"], pct=True)
            t.add_row(
                r["metric"],
                _fmt(r["a"]),
                _fmt(r["b"]),
                _fmt(r["diff"]),
                f"[{style}]{change}[/{style}]" if style else change,
            )
        console.print(t)
    if cmp["unpaired_steps"]:
        console.print(f"{cmp['unpaired_steps']} step(s) of the longer run have no pair")


def render_compare(cmp: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> str:
    """The comparison page: per-step A/B bars and lines of the key metrics, then the tables."""
    labels = [p["label_a"] for p in cmp["pairs"]]
    charts = []
    for name, path in (
        ("Request throughput (req/s)", ("request_throughput",)),
        ("Output token throughput (tok/s)", ("output_token_throughput",)),
        ("TTFT median (ms)", ("ttft_ms", "median")),
        ("TTFT p99 (ms)", ("ttft_ms", "p99")),
        ("TPOT median (ms)", ("tpot_ms", "median")),
        ("E2E p99 (ms)", ("e2el_ms", "p99")),
    ):
        series = [
            (cmp[side], [_get(st["summary"], path) for st in res["steps"][: len(labels)]])
            for side, res in (("a", a), ("b", b))
        ]
        charts.append(bar_chart(labels, series, name, "", "step"))
    ratios = line_chart(
        [
            (
                "throughput B/A",
                list(range(len(labels))),
                [p["throughput_ratio"] for p in cmp["pairs"]],
            ),
            ("TTFT p50 B/A", list(range(len(labels))), [p["ttft_ratio"] for p in cmp["pairs"]]),
        ],
        "Ratios B / A per step (1 = equal)",
        "step index",
        "ratio",
    )
    tables = "".join(
        f"<h3>step {p['step']}: {p['label_a']} | {p['label_b']}</h3>"
        + table(
            ["metric", "A", "B", "B - A", "change"],
            [
                [r["metric"], _fmt(r["a"]), _fmt(r["b"]), _fmt(r["diff"]), _fmt(r["pct"], True)]
                for r in p["metrics"]
            ],
        )
        for p in cmp["pairs"]
    )
    body = (
        f"<h1>A = {cmp['a']} &nbsp; vs &nbsp; B = {cmp['b']}</h1>"
        f'<div class="charts">{"".join(charts)}{ratios}</div>{tables}'
    )
    return page(f"compare {cmp['a']} vs {cmp['b']}", body)


def compare_command(
    path_a: Path, path_b: Path, out: Path | None, fail_if_worse: float | None = None
) -> int:
    """``raygent-bench compare``: print, optionally write ``compare.json`` and
    ``compare.html``; exit 1 if ``fail_if_worse`` percent of regression is exceeded."""
    a, b = load_result(path_a), load_result(path_b)
    cmp = compare_results(a, b)
    print_compare(cmp)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(cmp, indent=1))
        (out / "compare.html").write_text(render_compare(cmp, a, b))
        print(f"wrote {out / 'compare.json'}, {out / 'compare.html'}")
    if fail_if_worse is not None:
        for p in cmp["pairs"]:
            thr, ttft = p["throughput_ratio"], p["ttft_ratio"]
            if (thr is not None and thr < 1 - fail_if_worse / 100) or (
                ttft is not None and ttft > 1 + fail_if_worse / 100
            ):
                print(f"FAIL step {p['step']}: B worse than A by more than {fail_if_worse:g}%")
                return 1
    return 0
