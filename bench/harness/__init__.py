"""raygent's load-test harness: drive an OpenAI-compatible endpoint, report what it can carry.

The command line is ``raygent-bench`` / ``python -m bench`` (:mod:`bench.harness.cli`); this
package is its library. The pieces, in the order a run uses them:

* :class:`RunConfig` -- what to run: target, :class:`LoadShape` steps, :class:`WorkloadConfig`;
* :func:`run_benchmark` -- runs it (one loop, or ``workers`` processes) and returns the result;
* :func:`summarize` / :func:`check_gates` -- the metrics and ``--fail-if`` gates;
* :func:`write_outputs` / :func:`render_report` -- JSON, CSV and the HTML report;
* :func:`compare_results` -- two results side by side.

Example:
    >>> import asyncio
    >>> from bench.harness import LoadShape, RunConfig, run_benchmark
    >>> cfg = RunConfig(url="http://127.0.0.1:8000", steps=[LoadShape(concurrency=4, duration_s=3)])
    >>> result = asyncio.run(run_benchmark(cfg))  # doctest: +SKIP
    >>> result["steps"][0]["summary"]["request_throughput"]  # doctest: +SKIP
    41.7
"""

from bench.harness.arrivals import GammaArrivals, arrival_offsets, parse_sweep, step_ramp
from bench.harness.client import AiohttpClient, Client, ClientConfig, HttpxClient, make_client
from bench.harness.compare import compare_results, load_result
from bench.harness.config import RunConfig
from bench.harness.driver import run_benchmark, saturation_check
from bench.harness.errors import BenchError, ConfigError, DatasetError, ServerStartError
from bench.harness.metrics import (
    Gate,
    RequestRecord,
    check_gates,
    flat_metrics,
    parse_fail_if,
    parse_slo,
    percentile,
    summarize,
)
from bench.harness.report import print_summary, write_outputs
from bench.harness.report_html import render_report
from bench.harness.runner import Counters, LoadShape, RunOptions, StepResult, run_step
from bench.harness.sse import SSEParser
from bench.harness.workload import (
    DatasetWorkload,
    Job,
    SyntheticWorkload,
    Workload,
    WorkloadConfig,
    make_workload,
)

__all__ = [
    "AiohttpClient",
    "BenchError",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Counters",
    "DatasetError",
    "DatasetWorkload",
    "GammaArrivals",
    "Gate",
    "HttpxClient",
    "Job",
    "LoadShape",
    "RequestRecord",
    "RunConfig",
    "RunOptions",
    "SSEParser",
    "ServerStartError",
    "StepResult",
    "SyntheticWorkload",
    "Workload",
    "WorkloadConfig",
    "arrival_offsets",
    "check_gates",
    "compare_results",
    "flat_metrics",
    "load_result",
    "make_client",
    "make_workload",
    "parse_fail_if",
    "parse_slo",
    "parse_sweep",
    "percentile",
    "print_summary",
    "render_report",
    "run_benchmark",
    "run_step",
    "saturation_check",
    "step_ramp",
    "summarize",
    "write_outputs",
]
