"""Variants side by side: one workload, repeated, each variant's figures with a 95% interval.

``python -m bench.variants --repeat 5 --url http://127.0.0.1:8000 --model chat --duration 30
--concurrency 8 --slo ttft_ms=500`` runs the same ``bench run`` workload ``--repeat`` times
against a name with variants. Within a run, every answer says which arm served it (its
``x-raygent-variant`` header, the same as the body's ``variant`` field), so both arms see the
same load at the same moments; across runs, each arm's TTFT p50, TPOT p50, goodput, request
rate and error rate get a mean and a 95% confidence interval (Student's t over the runs).
Arms whose intervals do not overlap differ by more than this machine's run-to-run noise.

Writes ``variants.json`` under ``--out`` (default ``bench/results/variants``) and prints the
table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.cli import add_run_args, config_from_args
from bench.harness.loop import run_loop

__all__ = ["METRICS", "interval", "main", "per_variant_figures"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "variants"

METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("TTFT p50 (ms)", ("ttft_ms", "median")),
    ("TPOT p50 (ms)", ("tpot_ms", "median")),
    ("goodput (req/s)", ("goodput",)),
    ("requests (req/s)", ("request_throughput",)),
    ("error rate", ("error_rate",)),
)
"""What is compared, and where it is in a step's per-variant summary."""

# Student's t, two-sided 95%, by degrees of freedom (1-30); beyond that the normal's 1.96
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% confidence interval of ``values`` (one per run; NaNs left out)."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return {"n": 1, "mean": mean, "low": None, "high": None}
    t = _T975[len(xs) - 2] if len(xs) - 1 <= len(_T975) else 1.96
    half = t * statistics.stdev(xs) / math.sqrt(len(xs))
    return {"n": len(xs), "mean": mean, "low": mean - half, "high": mean + half}


def _get(summary: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


def per_variant_figures(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """By step label and ``<model>/<variant>``: each metric's interval over the runs."""
    out: dict[str, Any] = {}
    for i, step in enumerate(results[0]["steps"] if results else []):
        runs = [r["steps"][i]["summary"].get("per_variant") or {} for r in results]
        out[step["shape"]["label"]] = {
            name: {
                metric: interval([_get(run[name], path) for run in runs if name in run])
                for metric, path in METRICS
            }
            for name in sorted(set().union(*runs))
        }
    return out


def _fmt(i: dict[str, Any]) -> str:
    if i["mean"] is None:
        return "-"
    if i["low"] is None:
        return f"{i['mean']:.3g}"
    return f"{i['mean']:.3g} [{i['low']:.3g}, {i['high']:.3g}]"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.variants", description=__doc__)
    p.add_argument("--repeat", type=int, default=3, help="runs of the workload (>= 2)")
    add_run_args(p)
    args = p.parse_args(argv)
    if args.repeat < 2:
        p.error("--repeat: at least 2 runs make an interval")
    out = Path(args.out) if args.out else DEFAULT_OUT
    args.out = None  # the runs' own files are not written; their figures are, below
    cfg = config_from_args(args)

    from bench.harness.driver import run_benchmark

    results = []
    for i in range(args.repeat):
        result = run_loop(run_benchmark(cfg))
        steps = result["steps"]
        if not any(st["summary"].get("per_variant") for st in steps):
            print(
                "bench.variants: no answer named a variant (is --model a name with variants?)",
                file=sys.stderr,
            )
            return 3
        results.append(result)
        print(f"run {i + 1}/{args.repeat} done", file=sys.stderr)
    figures = per_variant_figures(results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "variants.json"
    path.write_text(json.dumps({"repeat": args.repeat, "steps": figures}, indent=2) + "\n")
    for label, arms in figures.items():
        print(f"\n{label}: mean [95% interval] over {args.repeat} runs")
        print("variant".ljust(24) + "".join(m.ljust(30) for m, _ in METRICS))
        for name, metrics in arms.items():
            print(name.ljust(24) + "".join(_fmt(metrics[m]).ljust(30) for m, _ in METRICS))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
