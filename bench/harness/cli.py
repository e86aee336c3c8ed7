"""``raygent-bench`` (also ``python -m bench``): the load-test harness's command line.

Subcommands::

    raygent-bench run     --url http://127.0.0.1:8000 --model agent:assistant --concurrency 8 ...
    raygent-bench compare A/result.json B/result.json [--out DIR]
    raygent-bench suite   [--start | --url URL --peer-url URL] --out DIR

Exit codes: 0 success; 1 a ``--fail-if`` condition held; 2 invalid options; 3 not one request
succeeded (the endpoint is down or misconfigured -- a gate must not pass on nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.harness.arrivals import parse_sweep
from bench.harness.config import RunConfig
from bench.harness.errors import BenchError, ConfigError
from bench.harness.loop import run_loop
from bench.harness.metrics import DEFAULT_PERCENTILES, parse_fail_if, parse_slo
from bench.harness.runner import LoadShape, RunOptions
from bench.harness.workload import WorkloadConfig

__all__ = ["build_parser", "config_from_args", "main"]

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options of ``run`` (the suite reuses the workload ones)."""
    t = p.add_argument_group("target")
    t.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the endpoint")
    t.add_argument(
        "--model",
        default="default",
        help="model name, or agent:<name>; comma-separated names are used round-robin "
        "(per-agent figures then appear in the report)",
    )
    t.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    t.add_argument(
        "--api-key",
        default=os.environ.get("RAYGENT_API_KEY") or os.environ.get("OPENAI_API_KEY"),
        help="Bearer key (default: $RAYGENT_API_KEY or $OPENAI_API_KEY)",
    )
    t.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    t.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    t.add_argument("--connect-timeout", type=float, default=10.0)
    t.add_argument("--label", default="", help="name of this run in reports and compare")

    ld = p.add_argument_group("load shape")
    ld.add_argument("--concurrency", type=int, help="closed loop: N requests in flight")
    ld.add_argument("--rate", type=float, help="open loop: mean arrivals per second (or inf)")
    ld.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 = Poisson")
    ld.add_argument("--max-concurrency", type=int, help="open loop: cap on requests in flight")
    ld.add_argument(
        "--sweep",
        help="steps of the load: '1,2,4,8' or 'start:stop[:factor]' (doubling ramp); varies "
        "--rate if given, else --concurrency",
    )
    ld.add_argument(
        "--stop-at-saturation",
        action="store_true",
        help="end the sweep once throughput stops rising by 10%% (or errors > 5%%)",
    )
    ld.add_argument("--duration", type=float, help="seconds per step")
    ld.add_argument("--num-requests", type=int, help="requests per step")
    ld.add_argument(
        "--warmup", type=int, default=0, help="requests sent first and left out of results"
    )
    ld.add_argument("--workers", type=int, default=1, help="client processes")
    ld.add_argument(
        "--client",
        choices=("raw", "aiohttp", "httpx"),
        default="raw",
        help="HTTP client (raw: the built-in HTTP/1.1 client, fastest measured)",
    )

    w = p.add_argument_group("workload")
    w.add_argument("--input-len", type=int, default=128, help="synthetic prompt tokens")
    w.add_argument(
        "--output-len",
        "--max-tokens",
        dest="output_len",
        type=int,
        default=64,
        help="max_tokens of every request",
    )
    w.add_argument("--range-ratio", type=float, default=0.0, help="lengths vary +- this share")
    w.add_argument("--turns", type=int, default=1, help="user turns per conversation")
    w.add_argument("--dataset", type=Path, help="JSONL of prompts / messages / turns")
    w.add_argument("--tokenizer", help="HF tokenizer path: exact prompt lengths, token counts")
    w.add_argument("--repeat-fraction", type=float, default=0.0, help="share of repeated jobs")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--system", help="system prompt of synthetic chats")
    w.add_argument("--ignore-eos", action="store_true", help="ask the server to not stop early")
    w.add_argument("--temperature", type=float, help="sent as is (default: the server's)")
    w.add_argument("--extra-body", default="{}", help="JSON merged into every request body")
    w.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream tokens (needed for TTFT / ITL / TPOT)",
    )

    r = p.add_argument_group("results")
    r.add_argument("--slo", help="goodput bounds, e.g. ttft_ms=500,tpot_ms=50,e2el_ms=2000")
    r.add_argument(
        "--fail-if",
        action="append",
        default=[],
        help="exit 1 when it holds, e.g. 'p99_ttft_ms>500' 'error_rate>0.01' (repeatable)",
    )
    r.add_argument("--percentiles", default="50,90,99", help="extra percentiles to report")
    r.add_argument("--out", type=Path, help="directory for result.json, CSV and report.html")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--quiet", action="store_true", help="no terminal table")
    r.add_argument("--keep-text", action="store_true", help="keep generated text in result.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raygent-bench", description="Load-test an OpenAI-compatible endpoint."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_args(sub.add_parser("run", help="run a load test"))
    cmp_ = sub.add_parser("compare", help="differences between two result.json files")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    cmp_.add_argument("--out", type=Path, help="directory for compare.html / compare.json")
    cmp_.add_argument(
        "--fail-if-worse",
        type=float,
        metavar="PCT",
        help="exit 1 if B's throughput is more than PCT%% below A's or TTFT p50 PCT%% above",
    )
    from bench.harness.suite import add_suite_args

    add_suite_args(sub.add_parser("suite", help="the standard suite: raygent vs plain vLLM"))
    return parser


def _headers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header expects NAME:VALUE (got {item!r})")
        out[name.strip()] = value.strip()
    return out


def config_from_args(a: argparse.Namespace) -> RunConfig:
    """Validate and normalise the ``run`` options into a :class:`RunConfig`."""
    if a.concurrency is not None and a.rate is not None:
        raise ConfigError("give --concurrency (closed loop) or --rate (open loop), not both")
    if a.duration is None and a.num_requests is None:
        raise ConfigError("set --duration SECONDS or --num-requests N")
    base = LoadShape(
        concurrency=a.concurrency,
        rate=a.rate,
        burstiness=a.burstiness,
        max_concurrency=a.max_concurrency,
        duration_s=a.duration,
        num_requests=a.num_requests,
    )
    if a.sweep:
        values = parse_sweep(a.sweep)
        if a.rate is not None:
            steps = [LoadShape(**{**base.__dict__, "rate": v}) for v in values]
        else:
            steps = [
                LoadShape(**{**base.__dict__, "concurrency": int(v), "rate": None}) for v in values
            ]
    else:
        if a.concurrency is None and a.rate is None:
            base.concurrency = 1
        steps = [base]
    try:
        extra = json.loads(a.extra_body)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--extra-body is not JSON: {exc}") from exc
    if not isinstance(extra, dict):
        raise ConfigError("--extra-body must be a JSON object")
    if a.temperature is not None:
        extra["temperature"] = a.temperature
    try:
        pcts = sorted({float(p) for p in a.percentiles.split(",") if p.strip()})
    except ValueError as exc:
        raise ConfigError(f"--percentiles expects numbers (got {a.percentiles!r})") from exc
    if any(not 0 < p < 100 for p in pcts):
        raise ConfigError(f"--percentiles must be in (0, 100) (got {a.percentiles!r})")
    models = [m.strip() for m in a.model.split(",") if m.strip()]
    cfg = RunConfig(
        url=a.url,
        steps=steps,
        workload=WorkloadConfig(
            models=models,
            endpoint=a.endpoint,
            input_len=a.input_len,
            output_len=a.output_len,
            range_ratio=a.range_ratio,
            turns=a.turns,
            dataset=a.dataset,
            tokenizer=a.tokenizer,
            repeat_fraction=a.repeat_fraction,
            seed=a.seed,
            system=a.system,
        ),
        options=RunOptions(
            endpoint=a.endpoint,
            stream=a.stream,
            ignore_eos=a.ignore_eos,
            extra_body=extra,
            warmup_requests=a.warmup,
            seed=a.seed,
            keep_text=a.keep_text,
        ),
        api_key=a.api_key,
        headers=_headers(a.header),
        timeout_s=a.timeout,
        connect_timeout_s=a.connect_timeout,
        workers=a.workers,
        client=a.client,
        slo=parse_slo(a.slo),
        percentiles=pcts or list(DEFAULT_PERCENTILES),
        gates=parse_fail_if(a.fail_if),
        out=a.out,
        label=a.label,
        progress=not a.no_progress,
        stop_at_saturation=a.stop_at_saturation,
    )
    cfg.validate()
    return cfg


def run_command(cfg: RunConfig, quiet: bool = False) -> tuple[int, dict[str, Any]]:
    """Run, print, write; returns the exit code and the result."""
    from bench.harness.driver import run_benchmark
    from bench.harness.report import print_summary, write_outputs

    result = run_loop(run_benchmark(cfg))
    if not quiet:
        print_summary(result)
    if cfg.out is not None:
        paths = write_outputs(result, cfg.out)
        if not quiet:
            print("wrote " + ", ".join(str(p) for p in paths.values()))
    if not any(st["summary"]["completed"] for st in result["steps"]):
        errors = [st["summary"]["errors"] for st in result["steps"]]
        print(f"raygent-bench: no request succeeded; errors by kind: {errors}", file=sys.stderr)
        return EXIT_NOTHING, result
    return (EXIT_OK if result["gates"]["passed"] else EXIT_GATE), result


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if a.command == "run":
            code, _ = run_command(config_from_args(a), quiet=a.quiet)
            return code
        if a.command == "compare":
            from bench.harness.compare import compare_command

            return compare_command(a.a, a.b, a.out, a.fail_if_worse)
        from bench.harness.suite import suite_command

        return suite_command(a)
    except ConfigError as exc:
        print(f"raygent-bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BenchError as exc:
        print(f"raygent-bench: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
