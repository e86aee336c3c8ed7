"""A result, written for people and machines: the terminal table, JSON, CSV and HTML files.

``--out DIR`` writes:

* ``result.json`` -- the whole result (meta, per-step summaries, every request's timings);
* ``requests.csv`` -- one row per request (ITL gaps as a ``;``-separated list in ms);
* ``summary.csv`` -- one row per step: the flat metrics (``metrics.flat_metrics``);
* ``report.html`` -- :mod:`bench.harness.report_html`.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from bench.harness.metrics import BREAKDOWN_COLUMNS, breakdown_row, flat_metrics

__all__ = ["print_summary", "write_outputs"]


def _n(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _detail_rows(s: dict[str, Any], pcts: list[float]) -> list[tuple[str, str]]:
    rows = [
        ("Successful requests", _n(s["completed"])),
        ("Failed requests", _n(s["failed"])),
        ("Error rate", f"{s['error_rate']:.2%}"),
        ("Duration (s)", _n(s["duration_s"])),
        ("Total input tokens", _n(s["total_input_tokens"])),
        ("Total output tokens", _n(s["total_output_tokens"])),
        ("Request throughput (req/s)", _n(s["request_throughput"])),
        ("Output token throughput (tok/s)", _n(s["output_token_throughput"])),
        ("Total token throughput (tok/s)", _n(s["total_token_throughput"])),
    ]
    if s.get("goodput") is not None:
        rows.append(("Request goodput (req/s)", _n(s["goodput"])))
        rows.append(("Requests meeting every SLO", f"{s['goodput_ratio']:.1%}"))
    keys = ["mean", "median", "p90", "p99"] + [
        f"p{p:g}".replace(".", "_") for p in pcts if p not in (50, 90, 99)
    ]
    for metric, name in (
        ("ttft_ms", "TTFT"),
        ("tpot_ms", "TPOT"),
        ("itl_ms", "ITL"),
        ("e2el_ms", "E2E latency"),
    ):
        d = s[metric]
        rows.append((f"{name} (ms)", "  ".join(f"{k} {_n(d.get(k))}" for k in keys)))
    c = s["cache"]
    if c["hit"] or c["miss"] or c["bypass"]:
        ratio = "-" if c["hit_ratio"] is None else f"{c['hit_ratio']:.1%}"
        rows.append(("Cache hit|miss|bypass", f"{c['hit']}|{c['miss']}|{c['bypass']} ({ratio})"))
        for state in ("hit", "miss"):
            lat = c.get(state + "_latency")
            if lat:
                rows.append(
                    (
                        f"  {state}: TTFT / E2E median (ms)",
                        f"{_n(lat['ttft_ms'].get('median'))} / {_n(lat['e2el_ms'].get('median'))}",
                    )
                )
    if s["errors"]:
        rows.append(("Errors by kind", ", ".join(f"{k}: {v}" for k, v in s["errors"].items())))
    if s["tokens_source"] and set(s["tokens_source"]) != {"usage"}:
        rows.append(("Output tokens counted from", json.dumps(s["tokens_source"])))
    return rows


def print_summary(result: dict[str, Any], console: Any = None) -> None:
    """The terminal report: a sweep table when there are several steps, the detailed table
    of each step (per model / agent too), the saturation point and the gates."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: wide enough for the sweep table
            console = Console(width=150)
    meta = result["meta"]
    pcts = meta["config"]["percentiles"]
    steps = result["steps"]
    if len(steps) > 1:
        t = Table(title=f"{meta['label']}: sweep", title_justify="left")
        for col in (
            "step",
            "req/s",
            "out tok/s",
            "TTFT p50",
            "TTFT p99",
            "TPOT p50",
            "ITL p50",
            "E2E p50",
            "E2E p99",
            "goodput",
            "errors",
            "cache hit",
        ):
            t.add_column(col, justify="right")
        for st in steps:
            s = st["summary"]
            hit = s["cache"]["hit_ratio"]
            t.add_row(
                st["shape"]["label"],
                _n(s["request_throughput"]),
                _n(s["output_token_throughput"], 1),
                _n(s["ttft_ms"].get("median")),
                _n(s["ttft_ms"].get("p99")),
                _n(s["tpot_ms"].get("median")),
                _n(s["itl_ms"].get("median")),
                _n(s["e2el_ms"].get("median")),
                _n(s["e2el_ms"].get("p99")),
                _n(s["goodput"]),
                str(s["failed"]),
                "-" if hit is None else f"{hit:.0%}",
            )
        console.print(t)
    for st in steps:
        s = st["summary"]
        t = Table(
            title=f"{meta['label']}: step {st['index']} ({st['shape']['label']})",
            title_justify="left",
            show_header=False,
        )
        t.add_column("metric")
        t.add_column("value")
        for k, v in _detail_rows(s, pcts):
            t.add_row(k, v)
        console.print(t)
        for key, title in (
            ("per_model", "per model / agent"),
            ("per_variant", "per variant"),
            ("per_turn", "per turn"),
        ):
            if s.get(key):
                console.print(_breakdown(title, s[key]))
    if len(steps) > 1 and not result.get("saturation"):
        console.print("[bold]saturation:[/bold] not reached (every step still scaled)")
    if result.get("saturation"):
        sat = result["saturation"]
        console.print(
            f"[bold]saturation:[/bold] {sat['label']} at {sat['request_throughput']:.2f} req/s "
            f"({sat['reason']})"
        )
    gates = result["gates"]
    if gates["conditions"]:
        if gates["passed"]:
            console.print(f"[green]PASS[/green] fail-if: {', '.join(gates['conditions'])}")
        else:
            for f in gates["failures"]:
                console.print(f"[red]FAIL[/red] {f}")


_CSV_FIELDS = (
    "step",
    "worker",
    "model",
    "start_s",
    "queue_s",
    "ttft_s",
    "tpot_s",
    "e2el_s",
    "done_s",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "tokens_source",
    "status",
    "error",
    "cache",
    "variant",
    "retry_after",
    "conversation",
    "turn",
    "repeated",
    "itl_ms",
    "error_detail",
)


def _breakdown(title: str, parts: dict[str, dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("name", *BREAKDOWN_COLUMNS):
        t.add_column(col, justify="right")
    for name, s in parts.items():
        t.add_row(name, *(_n(v) if not isinstance(v, int) else str(v) for v in breakdown_row(s)))
    return t


def write_outputs(result: dict[str, Any], out_dir: Path, html: bool = True) -> dict[str, Path]:
    """Write the files listed in the module docstring; returns their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "result.json",
        "requests_csv": out_dir / "requests.csv",
        "summary_csv": out_dir / "summary.csv",
    }
    # NaN (a latency of no successful request) is not JSON: written as null.
    clean = {k: (v if k == "requests" else _finite(v)) for k, v in result.items()}
    paths["json"].write_text(json.dumps(clean, indent=1, default=_json_default, allow_nan=False))
    with paths["requests_csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in result["requests"]:
            row = dict(r)
            row["itl_ms"] = ";".join(f"{g * 1000:.3f}" for g in r["itl_s"])
            w.writerow(row)
    flat = [
        {"step": st["index"], "label": st["shape"]["label"], **flat_metrics(st["summary"])}
        for st in result["steps"]
    ]
    fields: list[str] = []
    for row in flat:
        fields += [k for k in row if k not in fields]
    with paths["summary_csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(flat)
    if html:
        from bench.harness.report_html import render_report

        paths["html"] = out_dir / "report.html"
        paths["html"].write_text(render_report(result))
    return paths


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")
