"""Convert a result dict --> one self-contained HTML page (inline CSS and SVG, no scripts).

Sections, in order: the run (target, configuration, gate verdict); the summary table per step;
latency percentiles and throughput per sweep step (or per-percentile bars for one step); TTFT
and ITL distributions; timelines of completed requests, errors and cache hits/misses per
second with in-flight requests; the cache (hit ratio, latency of hits vs misses); per model /
agent figures with goodput; errors by kind with sample messages; the definitions.

:func:`render_sections` returns the pieces so the suite and ``compare`` reuse the layout.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from html import escape
from typing import Any

from bench.harness.metrics import BREAKDOWN_COLUMNS, breakdown_row
from bench.harness.svg import bar_chart, histogram, line_chart

__all__ = ["CSS", "page", "render_report", "render_sections", "table"]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid
#ddd;padding-bottom:4px}h3{font-size:14px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;
padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{
text-align:left}.pass{color:#fff;background:#3ca951;padding:2px 8px;border-radius:3px}
.fail{color:#fff;background:#d0342c;padding:2px 8px;border-radius:3px}
.muted{color:#777;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:12px}
pre{background:#f7f7f7;padding:8px;font-size:11px;overflow-x:auto}dt{font-weight:bold;
margin-top:6px}dd{margin-left:16px}
"""

DEFINITIONS = (
    (
        "Request throughput",
        "completed requests / step duration (first request sent to last response finished).",
    ),
    ("Output token throughput", "output tokens of completed requests / step duration."),
    (
        "TTFT",
        "time to first token: request sent to the network read holding the first token "
        "chunk (after any --max-concurrency wait).",
    ),
    ("TPOT", "time per output token after the first: (E2E - TTFT) / (output tokens - 1)."),
    ("ITL", "inter-token latency: each gap between consecutive streamed token chunks."),
    ("E2E latency", "request sent to the last token chunk (the whole body without --stream)."),
    ("Goodput", "completed requests meeting every --slo bound / step duration."),
    ("Cache hit ratio", "x-raygent-cache: hit / (hit + miss); bypassed requests are left out."),
    ("Percentiles", "linear interpolation between order statistics (numpy.percentile)."),
)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table of already formatted cells."""
    h = "".join(f"<th>{escape(str(c))}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:,.2f}"
    return str(v)


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body``."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{CSS}</style></head><body>{body}</body></html>"
    )


def _x_of(step: dict[str, Any]) -> float:
    shape = step["shape"]
    if shape.get("concurrency") is not None:
        return float(shape["concurrency"])
    rate = shape.get("rate")
    return float("inf") if rate == "inf" else float(rate)


def _x_label(steps: list[dict[str, Any]]) -> str:
    return "concurrency" if steps[0]["shape"].get("concurrency") is not None else "rate (req/s)"


def _summary_table(steps: list[dict[str, Any]]) -> str:
    rows = []
    for st in steps:
        s = st["summary"]
        hit = s["cache"]["hit_ratio"]
        rows.append(
            [
                st["shape"]["label"],
                s["completed"],
                s["failed"],
                s["request_throughput"],
                s["output_token_throughput"],
                s["ttft_ms"].get("median"),
                s["ttft_ms"].get("p99"),
                s["tpot_ms"].get("median"),
                s["itl_ms"].get("median"),
                s["e2el_ms"].get("median"),
                s["e2el_ms"].get("p99"),
                s["goodput"],
                "-" if hit is None else f"{hit:.1%}",
            ]
        )
    return table(
        [
            "step",
            "ok",
            "failed",
            "req/s",
            "out tok/s",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "TPOT p50 ms",
            "ITL p50 ms",
            "E2E p50 ms",
            "E2E p99 ms",
            "goodput req/s",
            "cache hit",
        ],
        rows,
    )


def _per_step_charts(steps: list[dict[str, Any]]) -> str:
    xs = [_x_of(st) for st in steps]
    xl = _x_label(steps)
    log_x = len(xs) > 2 and all(x > 0 and math.isfinite(x) for x in xs) and max(xs) / min(xs) >= 8
    lat = []
    for metric, name in (("ttft_ms", "TTFT"), ("e2el_ms", "E2E"), ("tpot_ms", "TPOT")):
        for stat in ("median", "p90", "p99"):
            lat.append((f"{name} {stat}", xs, [st["summary"][metric].get(stat) for st in steps]))
    charts = [
        line_chart(lat[:6], "TTFT and E2E latency per step", xl, "ms", log_x=log_x),
        line_chart(lat[6:], "TPOT per step", xl, "ms", log_x=log_x),
        line_chart(
            [
                ("requests/s", xs, [st["summary"]["request_throughput"] for st in steps]),
                ("goodput", xs, [st["summary"]["goodput"] for st in steps]),
            ],
            "Request throughput per step",
            xl,
            "req/s",
            log_x=log_x,
        ),
        line_chart(
            [("output tok/s", xs, [st["summary"]["output_token_throughput"] for st in steps])],
            "Output token throughput per step",
            xl,
            "tokens/s",
            log_x=log_x,
        ),
    ]
    return '<div class="charts">' + "".join(charts) + "</div>"


def _single_step_charts(step: dict[str, Any], pcts: list[float]) -> str:
    s = step["summary"]
    keys = ["median", "p90", "p99"] + [
        f"p{p:g}".replace(".", "_") for p in pcts if p not in (50, 90, 99)
    ]
    series = [
        (name, [s[m].get(k) for k in keys])
        for m, name in (
            ("ttft_ms", "TTFT"),
            ("tpot_ms", "TPOT"),
            ("itl_ms", "ITL"),
            ("e2el_ms", "E2E"),
        )
    ]
    return bar_chart(keys, series, "Latency percentiles", "ms")


def _timelines(requests: list[dict[str, Any]]) -> str:
    if not requests:
        return ""
    end = max(r["start_s"] + (r["done_s"] or 0.0) for r in requests)
    n = max(1, math.ceil(end))
    bucket = 1.0 if n <= 300 else n / 300
    nb = math.ceil(end / bucket) + 1
    done, errs, hits, misses = ([0] * nb for _ in range(4))
    inflight = [0.0] * nb
    for r in requests:
        fin = r["start_s"] + (r["done_s"] or 0.0)
        b = min(nb - 1, int(fin / bucket))
        if r["error"]:
            errs[b] += 1
        else:
            done[b] += 1
            if r["cache"] == "hit":
                hits[b] += 1
            elif r["cache"] == "miss":
                misses[b] += 1
        s0, s1 = int(r["start_s"] / bucket), min(nb - 1, int(fin / bucket))
        for i in range(max(0, s0), s1 + 1):  # time-weighted in-flight per bucket
            lo = max(r["start_s"], i * bucket)
            hi = min(fin, (i + 1) * bucket)
            if hi > lo:
                inflight[i] += (hi - lo) / bucket
    ts = [(i + 0.5) * bucket for i in range(nb)]
    per = f"per {bucket:g} s"
    charts = [
        line_chart(
            [
                ("completed", ts, [d / bucket for d in done]),
                ("errors", ts, [e / bucket for e in errs]),
            ],
            f"Completed and failed requests ({per}, by finish time)",
            "time (s)",
            "requests/s",
            markers=False,
        ),
        line_chart(
            [("in flight", ts, inflight)],
            "Requests in flight (time-weighted mean per bucket)",
            "time (s)",
            "requests",
            markers=False,
        ),
    ]
    if any(hits) or any(misses):
        charts.append(
            line_chart(
                [
                    ("hit", ts, [h / bucket for h in hits]),
                    ("miss", ts, [m / bucket for m in misses]),
                ],
                f"Cache hits and misses ({per})",
                "time (s)",
                "requests/s",
                markers=False,
            )
        )
    return '<div class="charts">' + "".join(charts) + "</div>"


def _distributions(steps: list[dict[str, Any]], requests: list[dict[str, Any]]) -> str:
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in requests:
        if not r["error"]:
            by_step.setdefault(r["step"], []).append(r)
    labels = {st["index"]: st["shape"]["label"] for st in steps}
    chosen = sorted(by_step)[-6:]
    ttft = [
        (labels.get(i, str(i)), [r["ttft_s"] * 1000 for r in by_step[i] if r["ttft_s"] is not None])
        for i in chosen
    ]
    itl = [
        (labels.get(i, str(i)), [g * 1000 for r in by_step[i] for g in r["itl_s"]]) for i in chosen
    ]
    return (
        '<div class="charts">'
        + histogram(ttft, "TTFT distribution", "TTFT (ms)")
        + histogram(itl, "ITL distribution", "ITL (ms)")
        + "</div>"
    )


def _cache_section(steps: list[dict[str, Any]]) -> str:
    rows = []
    for st in steps:
        c = st["summary"]["cache"]
        if not (c["hit"] or c["miss"] or c["bypass"]):
            continue
        hl, ml = c.get("hit_latency", {}), c.get("miss_latency", {})
        rows.append(
            [
                st["shape"]["label"],
                c["hit"],
                c["miss"],
                c["bypass"],
                "-" if c["hit_ratio"] is None else f"{c['hit_ratio']:.1%}",
                hl.get("ttft_ms", {}).get("median"),
                ml.get("ttft_ms", {}).get("median"),
                hl.get("e2el_ms", {}).get("median"),
                ml.get("e2el_ms", {}).get("median"),
            ]
        )
    if not rows:
        return '<p class="muted">No x-raygent-cache header was seen.</p>'
    return table(
        [
            "step",
            "hit",
            "miss",
            "bypass",
            "hit ratio",
            "TTFT p50 hit",
            "TTFT p50 miss",
            "E2E p50 hit",
            "E2E p50 miss",
        ],
        rows,
    )


def _breakdown(steps: list[dict[str, Any]], key: str, what: str, none: str) -> str:
    rows = [
        [st["shape"]["label"], name, *breakdown_row(s)]
        for st in steps
        for name, s in (st["summary"].get(key) or {}).items()
    ]
    if not rows:
        return f'<p class="muted">{none}</p>'
    return table(["step", what, *BREAKDOWN_COLUMNS], rows)


def _errors(steps: list[dict[str, Any]], requests: list[dict[str, Any]]) -> str:
    rows = [
        [st["shape"]["label"], k, v] for st in steps for k, v in st["summary"]["errors"].items()
    ]
    if not rows:
        return "<p>No failed requests.</p>"
    samples = Counter((r["error"], r["error_detail"][:160]) for r in requests if r["error"])
    sample_rows = [[k, d, n] for (k, d), n in samples.most_common(10)]
    return table(["step", "kind", "count"], rows) + table(["kind", "detail", "count"], sample_rows)


def render_sections(result: dict[str, Any]) -> list[tuple[str, str]]:
    """``(heading, html)`` pairs of the report body (see the module docstring)."""
    meta, steps, requests = result["meta"], result["steps"], result["requests"]
    cfg = meta["config"]
    gates = result["gates"]
    verdict = ""
    if gates["conditions"]:
        cls = "pass" if gates["passed"] else "fail"
        verdict = (
            f'<p>Gates <span class="{cls}">{"PASS" if gates["passed"] else "FAIL"}</span> '
            f"{escape(', '.join(gates['conditions']))}</p>"
        )
        if gates["failures"]:
            verdict += (
                "<ul>" + "".join(f"<li>{escape(f)}</li>" for f in gates["failures"]) + "</ul>"
            )
    wl = cfg["workload"]
    run = (
        f"<p>{escape(meta['url'])} &middot; models {escape(', '.join(wl['models']))} &middot; "
        f"/v1/{'chat/completions' if wl['endpoint'] == 'chat' else 'completions'} &middot; "
        f"{'streaming' if cfg['options']['stream'] else 'not streaming'} &middot; "
        f"{cfg['workers']} worker(s), client {escape(cfg['client'])}, "
        f"uvloop {'on' if meta['uvloop'] else 'off'} &middot; started {escape(meta['started_at'])}"
        "</p>"
        f"{verdict}<pre>{escape(json.dumps(cfg, indent=1, default=str))}</pre>"
    )
    sat = result.get("saturation")
    if not sat and len(result["steps"]) > 1:
        run += (
            "<p><b>Saturation point:</b> not reached &mdash; every step raised throughput by "
            "10 % or more with under 5 % errors; extend the ramp.</p>"
        )
    if sat:
        run += (
            f"<p><b>Saturation point:</b> {escape(sat['label'])} at "
            f"{sat['request_throughput']:.2f} req/s &mdash; {escape(sat['reason'])}</p>"
        )
    if len(steps) > 1:
        per_step = _per_step_charts(steps)
    elif steps:
        per_step = _single_step_charts(steps[0], cfg["percentiles"])
    else:
        per_step = ""
    defs = (
        "<dl>"
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in DEFINITIONS)
        + "</dl><p class='muted'>Full definitions, and the names GuideLLM and llmperf use: "
        "bench/README.md.</p>"
    )
    return [
        ("Run", run),
        ("Summary", _summary_table(steps)),
        ("Latency and throughput per step", per_step),
        ("Distributions", _distributions(steps, requests)),
        ("Timelines", _timelines(requests)),
        ("Cache", _cache_section(steps)),
        (
            "Per model / agent",
            _breakdown(
                steps, "per_model", "model / agent", "One model, no agents: see the summary."
            ),
        ),
        (
            "Per variant",
            _breakdown(steps, "per_variant", "model / variant", "No answer named a variant."),
        ),
        (
            "Per turn",
            _breakdown(steps, "per_turn", "turn", "One turn per conversation (--turns 1)."),
        ),
        ("Errors", _errors(steps, requests)),
        ("Definitions", defs),
    ]


def render_report(result: dict[str, Any]) -> str:
    """The complete HTML page of one run."""
    title = f"raygent-bench: {result['meta']['label']}"
    body = f"<h1>{escape(title)}</h1>" + "".join(
        f'<h2 id="{escape(h.lower().replace(" ", "-"))}">{escape(h)}</h2>{html}'
        for h, html in render_sections(result)
    )
    return page(title, body)
