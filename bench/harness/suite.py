"""``raygent-bench suite``: the standard questions about a deployment, one HTML report.

Parts (each a set of ordinary ``run``s, written under ``--out`` as ``<part>/result.json`` ...):

1. **overhead** -- raygent (``--model``, default ``default``: the model path, no agent) against
   plain vLLM serving the same model (``--peer-url``/``--peer-model``), closed loop over the
   ``--sweep`` concurrencies; per step the overhead ratios raygent/vLLM of request throughput,
   TTFT median and TPOT median (:mod:`bench.harness.compare`).
2. **agent** -- the same sweep against ``--agent-model`` (default ``agent:assistant``, an agent
   that streams the model's answer): its throughput, TTFT and TPOT against the model path's.
3. **cache** -- raygent with ``--repeat-fraction`` of repeated requests at temperature 0: hit
   ratio and the latency of hits vs misses.
4. **cold start** -- with ``--start`` only: process start -> ready (``/readyz`` 200, or vLLM's
   ``/v1/models``) -> first token of one request, for raygent and for plain vLLM.
5. **saturation** -- raygent, a step ramp of concurrencies (``--ramp``, 1 -> 2 -> 4 -> ...)
   until throughput stops rising by 10 % or errors exceed 5 %.
6. **overload** -- raygent's capacity (closed loop), then three times that offered open loop:
   served latency and goodput against capacity, and how the excess is refused
   (:mod:`bench.harness.overload`).

``suite.json`` and the page open with the **goals** (:data:`GOALS`): each ratio the serving path
is held to, its value in this run, and whether it is met.

Without ``--start`` the suite starts nothing: ``--url`` is a running raygent, ``--peer-url`` a
running vLLM (the overhead part is skipped without one). With ``--start`` it brings up each
server in turn -- plain vLLM on the built-in tiny model with the engine arguments raygent gives
it (:func:`~bench.harness.servers.raygent_engine_flags`), then raygent (``serve run
serve_app:app`` from the repository root, waiting for ``/readyz``) -- never both at once, so
neither arm competes with the other for the CPU, and stops each after its parts.
"""

from __future__ import annotations

import argparse
import json
import time
from copy import deepcopy
from html import escape
from pathlib import Path
from typing import Any

from bench.harness.arrivals import parse_sweep
from bench.harness.client import ClientConfig, make_client
from bench.harness.compare import compare_results
from bench.harness.config import RunConfig
from bench.harness.driver import run_benchmark
from bench.harness.loop import run_loop
from bench.harness.metrics import RequestRecord, parse_slo
from bench.harness.overload import OVERLOAD_GOALS, add_overload_args, overload_part
from bench.harness.report import write_outputs
from bench.harness.report_html import page, render_sections, table
from bench.harness.runner import LoadShape, RunOptions
from bench.harness.servers import (
    ManagedServer,
    raygent_engine_flags,
    start_raygent,
    start_vllm,
)
from bench.harness.svg import bar_chart, line_chart
from bench.harness.workload import Job, WorkloadConfig, build_body

__all__ = ["GOALS", "add_suite_args", "goals", "suite_command"]

GOALS: tuple[tuple[str, str, float], ...] = (
    ("throughput", ">=", 0.9),  # raygent / plain vLLM, every step of the sweep
    ("ttft_p50", "<=", 1.3),
    ("tpot_p50", "<=", 1.2),
    ("cold_start", "<=", 1.2),  # start -> ready, raygent / plain vLLM
    ("agent_vs_model", ">=", 0.9),  # agent stream / model stream throughput, every step
    ("cache_hit_p50_ms", "<=", 2.0),  # E2E of a cache hit, milliseconds (not a ratio)
)
"""The serving path's goals: (name, comparison, bound)."""


def add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", action="store_true", help="start raygent and plain vLLM itself")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="raygent's base URL")
    p.add_argument("--peer-url", help="plain vLLM's base URL (overhead part)")
    p.add_argument("--model", default="default", help="raygent model for overhead and ramp")
    p.add_argument("--cache-model", help="model / agent for the cache part (default --model)")
    p.add_argument("--agent-model", default="agent:assistant", help="agent of the agent part")
    p.add_argument("--peer-model", help="the model name plain vLLM serves (default: tiny path)")
    p.add_argument("--api-key")
    p.add_argument("--sweep", default="1,2,4,8", help="concurrencies of the overhead part")
    p.add_argument("--ramp", default="1:64", help="concurrencies of the saturation ramp")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--repeat-fraction", type=float, default=0.5)
    p.add_argument("--slo", default="ttft_ms=1000,tpot_ms=100")
    p.add_argument("--parts", default="overhead,agent,cache,cold,saturation,overload")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    add_overload_args(p)


def _cfg(
    a: argparse.Namespace, url: str, model: str, steps: list[LoadShape], **kw: Any
) -> RunConfig:
    extra = kw.pop("extra", {})
    cfg = RunConfig(
        url=url,
        steps=steps,
        workload=WorkloadConfig(
            models=[model],
            endpoint="chat",
            input_len=a.input_len,
            output_len=kw.pop("output_len", a.output_len),
            repeat_fraction=kw.pop("repeat_fraction", 0.0),
            seed=0,
        ),
        options=RunOptions(endpoint="chat", ignore_eos=True, extra_body=extra, warmup_requests=4),
        api_key=a.api_key,
        slo=parse_slo(a.slo),
        label=kw.pop("label", url),
        progress=not a.no_progress,
        **kw,
    )
    cfg.validate()
    return cfg


def _run(cfg: RunConfig, out: Path) -> dict[str, Any]:
    print(f"== {cfg.label}: {', '.join(s.label for s in cfg.steps)}", flush=True)
    result = run_loop(run_benchmark(cfg))
    write_outputs(result, out)
    return result


async def _first_token(url: str, model: str, api_key: str | None) -> RequestRecord:
    client = make_client(ClientConfig(url, api_key=api_key, timeout_s=600))
    try:
        rec = RequestRecord(model=model)
        body, _ = build_body(
            Job(0, model, ["Hello, who are you?"], 8), 0, [], "chat", True, False, None
        )
        await client.send("/v1/chat/completions", body, True, rec)
        return rec
    finally:
        await client.close()


def _cold(server: ManagedServer, model: str, a: argparse.Namespace) -> dict[str, Any]:
    """Start -> ready -> first token. The first request is retried (1 s apart, within
    ``--ready-timeout``) until it streams a token: "ready" is a claim, a token is proof."""
    ready_s = server.wait_ready(a.ready_timeout)
    attempts, errors = 0, []
    while True:
        attempts += 1
        rec = run_loop(_first_token(server.base_url, model, a.api_key))
        if rec.ttft_s is not None or time.perf_counter() - server.started > a.ready_timeout:
            break
        errors.append(rec.error)
        time.sleep(1.0)
    first = rec.start_s + rec.ttft_s - server.started if rec.ttft_s is not None else None
    return {
        "server": server.name,
        "ready_s": ready_s,
        "first_token_s": first,
        "first_request_ttft_ms": rec.ttft_s * 1000 if rec.ttft_s is not None else None,
        "first_request_error": rec.error,
        "attempts": attempts,
        "errors_before_first_token": errors,
    }


def suite_command(a: argparse.Namespace) -> int:
    """Run the parts asked for, write ``suite.json`` and ``suite.html`` under ``--out``."""
    parts = {p.strip() for p in a.parts.split(",")}
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    sweep = [LoadShape(concurrency=int(c), duration_s=a.duration) for c in parse_sweep(a.sweep)]
    ramp = [LoadShape(concurrency=int(c), duration_s=a.duration) for c in parse_sweep(a.ramp)]
    res: dict[str, Any] = {"config": {k: str(v) for k, v in vars(a).items() if k != "api_key"}}
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()

    peer_model = a.peer_model
    if a.start and not peer_model:
        from runtime.models import ensure_tiny_model

        peer_model = str(ensure_tiny_model())

    # -- plain vLLM ------------------------------------------------------------------------
    if "overhead" in parts or ("cold" in parts and a.start):
        if a.start:
            print("starting plain vLLM ...", flush=True)
            # The engine raygent runs for its default model, with the same arguments.
            with start_vllm(peer_model, flags=raygent_engine_flags()) as vllm:
                if "cold" in parts:
                    res.setdefault("cold_start", []).append(_cold(vllm, peer_model, a))
                else:
                    vllm.wait_ready(a.ready_timeout)
                if "overhead" in parts:
                    results["peer"] = _run(
                        _cfg(a, vllm.base_url, peer_model, sweep, label="plain vLLM"),
                        out / "overhead-vllm",
                    )
        elif a.peer_url and "overhead" in parts:
            results["peer"] = _run(
                _cfg(a, a.peer_url, peer_model or a.model, sweep, label="plain vLLM"),
                out / "overhead-vllm",
            )

    # -- raygent ---------------------------------------------------------------------------
    server = start_raygent() if a.start else None
    url = server.base_url if server else a.url
    try:
        if server is not None:
            print("starting raygent (serve run serve_app:app) ...", flush=True)
            if "cold" in parts:
                res.setdefault("cold_start", []).append(_cold(server, a.model, a))
            else:
                server.wait_ready(a.ready_timeout, "--ready-timeout")
        if ("overhead" in parts and "peer" in results) or "agent" in parts:
            results["raygent"] = _run(
                _cfg(a, url, a.model, sweep, label="raygent"), out / "overhead-raygent"
            )
            if "peer" in results:
                res["overhead"] = compare_results(results["peer"], results["raygent"])
        if "agent" in parts:
            results["agent"] = _run(
                _cfg(a, url, a.agent_model, sweep, label=f"raygent {a.agent_model}"),
                out / "agent",
            )
            res["agent"] = compare_results(results["raygent"], results["agent"])
        if "cache" in parts:
            results["cache"] = _run(
                _cfg(
                    a,
                    url,
                    a.cache_model or a.model,
                    [LoadShape(concurrency=4, duration_s=a.duration)],
                    repeat_fraction=a.repeat_fraction,
                    extra={"temperature": 0},
                    label=f"raygent cache, repeat {a.repeat_fraction:.0%}",
                ),
                out / "cache",
            )
        if "overload" in parts:
            over = overload_part(a, url, _run, _cfg, out)
            results["overload"] = over["overload"]
            res["overload"] = over["summary"]
        if "saturation" in parts:
            results["saturation"] = _run(
                _cfg(a, url, a.model, ramp, label="raygent ramp", stop_at_saturation=True),
                out / "saturation",
            )
    finally:
        if server is not None:
            server.stop()
    res["wall_s"] = time.perf_counter() - t0
    res["goals"] = goals(res, results.get("cache"))
    _print_goals(res["goals"])
    res["runs"] = {k: str(out / d) for k, d in _DIRS.items() if k in results}
    (out / "suite.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "suite.html").write_text(render_suite(res, results))
    print(f"wrote {out / 'suite.json'}, {out / 'suite.html'}")
    return 0


_DIRS = {
    "peer": "overhead-vllm",
    "raygent": "overhead-raygent",
    "agent": "agent",
    "cache": "cache",
    "saturation": "saturation",
    "overload": "overload",
}


def goals(res: dict[str, Any], cache: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each goal of :data:`GOALS` per step it applies to: ``value`` (None if not measured in
    this run) and ``met``."""
    values: dict[str, list[tuple[str, float | None]]] = {}
    for name, key, source in (
        ("throughput", "throughput_ratio", "overhead"),
        ("ttft_p50", "ttft_ratio", "overhead"),
        ("tpot_p50", "tpot_ratio", "overhead"),
        ("agent_vs_model", "throughput_ratio", "agent"),
    ):
        pairs = (res.get(source) or {}).get("pairs", [])
        values[name] = [(p["label_a"], p[key]) for p in pairs] or [("-", None)]
    cold = {c["server"]: c["ready_s"] for c in res.get("cold_start", [])}
    ratio = cold["raygent"] / cold["vllm"] if cold.get("raygent") and cold.get("vllm") else None
    values["cold_start"] = [("start -> ready", ratio)]
    hit = None
    if cache is not None:
        hit = _dig(cache["steps"][0]["summary"], ("cache", "hit_latency", "e2el_ms", "median"))
    values["cache_hit_p50_ms"] = [("concurrency 4, repeats", hit)]
    over = res.get("overload") or {}
    for name, _, _ in OVERLOAD_GOALS:
        values[name] = [(f"offered {over.get('offered_rate', 0):.3g} req/s", over.get(name))]
    out = []
    for name, op, bound in (*GOALS, *OVERLOAD_GOALS):
        for where, value in values[name]:
            met = None if value is None else value >= bound if op == ">=" else value <= bound
            out.append(
                {"goal": name, "where": where, "value": value, "op": op, "bound": bound, "met": met}
            )
    return out


def _print_goals(rows: list[dict[str, Any]]) -> None:
    print("goals (raygent / plain vLLM unless stated):")
    goal_w = max((len(g["goal"]) for g in rows), default=0) + 2  # the overload goals are long
    where_w = max((len(g["where"]) for g in rows), default=0) + 2
    for g in rows:
        value = "-" if g["value"] is None else f"{g['value']:.3g}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[g["met"]]
        print(
            f"  {g['goal']:<{goal_w}}{g['where']:<{where_w}}{value:>8}  "
            f"{g['op']} {g['bound']:<5} {verdict}"
        )


def render_suite(res: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    """One page: overhead (ratios and A/B charts), cache, cold start, saturation ramp."""
    body = ["<h1>raygent-bench suite</h1>", "<h2>Goals</h2>"]
    body.append(
        table(
            ["goal", "where", "value", "goal", "met"],
            [
                [
                    g["goal"],
                    g["where"],
                    g["value"],
                    f"{g['op']} {g['bound']:g}",
                    {True: "yes", False: "NO", None: "-"}[g["met"]],
                ]
                for g in res.get("goals", [])
            ],
        )
    )
    ov = res.get("overhead")
    body.append("<h2>raygent vs plain vLLM</h2>")
    if ov:
        labels = [p["label_a"] for p in ov["pairs"]]
        xs = [float(lbl.split()[-1]) for lbl in labels]
        peer, ray = results["peer"]["steps"], results["raygent"]["steps"]
        body.append('<div class="charts">')
        body.append(
            line_chart(
                [
                    ("throughput ratio", xs, [p["throughput_ratio"] for p in ov["pairs"]]),
                    ("TTFT p50 ratio", xs, [p["ttft_ratio"] for p in ov["pairs"]]),
                    ("TPOT p50 ratio", xs, [p["tpot_ratio"] for p in ov["pairs"]]),
                ],
                "Overhead ratios raygent / vLLM (1 = no overhead)",
                "concurrency",
                "ratio",
            )
        )
        for name, key in (
            ("req/s", ("request_throughput",)),
            ("TTFT p50 ms", ("ttft_ms", "median")),
        ):
            body.append(
                bar_chart(
                    labels,
                    [
                        (who, [_dig(st["summary"], key) for st in steps])
                        for who, steps in (("plain vLLM", peer), ("raygent", ray))
                    ],
                    name,
                    name,
                    "step",
                )
            )
        body.append("</div>")
        body.append(
            table(
                [
                    "step",
                    "vLLM req/s",
                    "raygent req/s",
                    "ratio",
                    "vLLM TTFT p50",
                    "raygent TTFT p50",
                    "ratio",
                    "vLLM TPOT p50",
                    "raygent TPOT p50",
                    "ratio",
                ],
                _ratio_rows(ov),
            )
        )
    else:
        body.append('<p class="muted">Not run (no --peer-url, or part not selected).</p>')
    body.append("<h2>Agent stream vs model stream</h2>")
    if res.get("agent"):
        body.append(
            table(
                [
                    "step",
                    "model req/s",
                    "agent req/s",
                    "ratio",
                    "model TTFT p50",
                    "agent TTFT p50",
                    "ratio",
                    "model TPOT p50",
                    "agent TPOT p50",
                    "ratio",
                ],
                _ratio_rows(res["agent"]),
            )
        )
    else:
        body.append('<p class="muted">Not run.</p>')
    body.append("<h2>Cold start</h2>")
    cold = res.get("cold_start")
    if cold:
        body.append(
            table(
                [
                    "server",
                    "start -> ready (s)",
                    "start -> first token (s)",
                    "first TTFT (ms)",
                    "error",
                ],
                [
                    [
                        c["server"],
                        c["ready_s"],
                        c["first_token_s"],
                        c["first_request_ttft_ms"],
                        c["first_request_error"] or "-",
                    ]
                    for c in cold
                ],
            )
        )
    else:
        body.append('<p class="muted">Measured only with --start.</p>')
    body.append("<h2>Overload</h2>")
    over = res.get("overload")
    if over:
        body.append(table(["figure", "value"], [[k, v] for k, v in over.items()]))
    else:
        body.append('<p class="muted">Not run.</p>')
    for key, title in (("cache", "Cache: hit vs miss"), ("saturation", "Step ramp to saturation")):
        body.append(f"<h2>{escape(title)}</h2>")
        if key not in results:
            body.append('<p class="muted">Not run.</p>')
            continue
        for h, html in render_sections(deepcopy(results[key])):
            if h in ("Definitions",):
                continue
            body.append(f"<h3>{escape(h)}</h3>{html}")
    return page("raygent-bench suite", "".join(body))


def _ratio_rows(cmp: dict[str, Any]) -> list[list[Any]]:
    """Per step: A and B and B/A of throughput, TTFT p50 and TPOT p50."""
    rows = []
    for p in cmp["pairs"]:
        m = {r["metric"]: r for r in p["metrics"]}
        row: list[Any] = [p["label_a"]]
        for metric, ratio in (
            ("request throughput (req/s)", "throughput_ratio"),
            ("TTFT median (ms)", "ttft_ratio"),
            ("TPOT median (ms)", "tpot_ratio"),
        ):
            row += [m[metric]["a"], m[metric]["b"], p[ratio]]
        rows.append(row)
    return rows


def _dig(d: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d if isinstance(d, (int, float)) else None  # type: ignore[return-value]
