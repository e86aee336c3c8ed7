"""``python -m bench.selfcheck``: is the harness fast and exact enough to never be the bottleneck?

Against the no-op server (:mod:`bench.harness.noop_server`, a raw asyncio protocol in its own
process), in one run:

Each measurement runs ``--trials`` times (3), the arms interleaved; the table shows the trial
with the median throughput and the spread ``(max - min) / 2 / median``.

1. **capacity, one core** -- the harness (default client) in this process: one event loop on
   one thread, so at most one core (``--pin`` pins it to CPU 0 and the server to the last CPU;
   off by default because on a shared machine a pinned process cannot flee a busy core), closed
   loop at ``--concurrency`` (64) for ``--duration`` seconds against instant streamed
   answers of 8 chunks: requests/s the client sustains. Goal: >= 2,000.
2. **capacity, --workers 2** -- the same through two worker processes (not pinned).
3. **exactness under load** -- the no-op server now delays the first chunk by 20 ms and writes
   the 8 chunks 2 ms apart (each its own network read: 16,000 timed reads/s); the harness offers
   2,000 requests/s (open loop, Poisson, one core). It must deliver them (>= 97 %), and its
   TTFT and E2E percentiles must match what the server itself measured (request arrival to the
   write of the first / last token chunk, same clock; the server's millisecond timers fire
   late, so the configured 20 ms / 34 ms are not the truth): the client's median at most 1 ms
   above the server's, its p99 at most 5 ms above (the client's figure also holds the trip over
   loopback and its own wake-up), neither below by more than 0.2 ms. ITL and TPOT medians
   within [1.5, 3] ms of the 2 ms spacing.
4. **client choice** -- step 1 with aiohttp and with httpx, the measured alternatives.

Method (STYLE.md rule 12): warm-up requests excluded; ``time.perf_counter``; the server is a
no-op so the figure is the harness's own cost; the CPU seconds the client and the server used
are reported too (requests per client CPU-second is the figure that does not depend on the
machine's other load). The machine's other load is not controlled: on a shared box, read the
figures of one run together. Results: a table with PASS / FALL-SHORT and JSON (``--out``,
default ``bench/results/selfcheck.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness.config import RunConfig
from bench.harness.driver import run_benchmark
from bench.harness.loop import run_loop, uvloop_available
from bench.harness.runner import LoadShape, RunOptions
from bench.harness.servers import start_noop
from bench.harness.workload import WorkloadConfig

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "selfcheck.json"
GOAL_RPS = 2000.0
WARMUP = 500
TTFT_MS, ITL_MS, TOKENS = 20.0, 2.0, 8
E2E_MS = TTFT_MS + (TOKENS - 1) * ITL_MS


def _cpu_s(pid: int) -> float:
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        return sum(p.cpu_times().user + p.cpu_times().system for p in procs)
    except psutil.Error:
        return float("nan")


def _client_cpu_s() -> float:
    """This process plus its finished children (the --workers processes, once reaped)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _run(
    url: str, shape: LoadShape, client: str = "raw", workers: int = 1, server_pid: int = 0
) -> dict[str, Any]:
    """One measurement; with the CPU seconds this process (and its workers) and the server
    used, so a figure taken on a busy machine can be read as cost per request too."""
    cfg = RunConfig(
        url=url,
        steps=[shape],
        workload=WorkloadConfig(models=["noop"], endpoint="completions", input_len=16),
        options=RunOptions(endpoint="completions", warmup_requests=WARMUP),
        workers=workers,
        client=client,
        progress=False,
        timeout_s=30,
    )
    c0, s0, t0 = _client_cpu_s(), _cpu_s(server_pid) if server_pid else 0.0, time.perf_counter()
    summary = run_loop(run_benchmark(cfg))["steps"][0]["summary"]
    wall = time.perf_counter() - t0
    client_cpu = _client_cpu_s() - c0
    n = summary["completed"] + cfg.options.warmup_requests
    summary["cpu"] = {
        "client_cpu_s": client_cpu,
        "server_cpu_s": (_cpu_s(server_pid) - s0) if server_pid else None,
        "wall_s": wall,
        "client_cores_used": client_cpu / wall,
        "client_cpu_us_per_request": client_cpu / n * 1e6 if n else None,
        "requests_per_client_cpu_s": n / client_cpu if client_cpu else None,
        "loadavg_1m": os.getloadavg()[0],
    }
    return summary


def _pin(cpus: set[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=GOAL_RPS, help="offered rate of step 3")
    parser.add_argument("--trials", type=int, default=3, help="trials per measurement")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--pin", action="store_true", help="pin the client to CPU 0 and the server to the last"
    )
    a = parser.parse_args(argv)
    t_start = time.perf_counter()
    ncpu = os.cpu_count() or 1
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    # Pinning is opt-in: on a shared machine a pinned process cannot move off a core someone
    # else is using. One event loop on one thread never uses more than one core anyway (the
    # "client cores" column shows what it used).
    server_cpu = ncpu - 1 if ncpu >= 2 and a.pin else None
    client_cpus = {0} if ncpu >= 2 and a.pin else None
    res: dict[str, Any] = {
        "uvloop": uvloop_available(),
        "cpu_count": ncpu,
        "loadavg_at_start": os.getloadavg(),
    }
    closed = LoadShape(concurrency=a.concurrency, duration_s=a.duration)
    half = LoadShape(concurrency=a.concurrency, duration_s=a.duration / 2)

    trials: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("one_core", "aiohttp_one_core", "httpx_one_core", "workers_2", "timed")
    }
    timed_shape = LoadShape(rate=a.rate, duration_s=a.duration)
    with (
        start_noop(TOKENS, cpu=server_cpu) as srv,
        start_noop(TOKENS, TTFT_MS, ITL_MS, cpu=server_cpu) as slow,
    ):
        srv.wait_ready(30)
        slow.wait_ready(30)
        pid = srv.proc.pid
        for t in range(a.trials):  # interleaved: drift in the machine's load hits every arm
            print(f"trial {t + 1}/{a.trials} ...", flush=True)
            _pin(client_cpus)
            try:
                trials["one_core"].append(_run(srv.base_url, closed, server_pid=pid))
                trials["aiohttp_one_core"].append(
                    _run(srv.base_url, half, "aiohttp", server_pid=pid)
                )
                trials["httpx_one_core"].append(_run(srv.base_url, half, "httpx", server_pid=pid))
                _get(slow.base_url + "/reset")
                timed = _run(slow.base_url, timed_shape, server_pid=slow.proc.pid)
                timed["server_side"] = json.loads(_get(f"{slow.base_url}/stats?skip={WARMUP}"))
                trials["timed"].append(timed)
            finally:
                _pin(all_cpus)
            trials["workers_2"].append(_run(srv.base_url, closed, workers=2, server_pid=pid))
    for key, runs in trials.items():
        # The trial with the median throughput stands for the arm; every trial is kept.
        runs.sort(key=lambda r: r["request_throughput"])
        res[key] = _pick(runs[len(runs) // 2])
        res[key]["trials_req_per_s"] = [r["request_throughput"] for r in runs]
        res[key]["spread"] = _spread(res[key]["trials_req_per_s"])
    res["truth_ms"] = {"ttft": TTFT_MS, "itl": ITL_MS, "tpot": ITL_MS, "e2el": E2E_MS}
    one, timed = res["one_core"], res["timed"]
    checks = [
        ("one core >= 2,000 req/s", one["request_throughput"] >= GOAL_RPS,
         f"{one['request_throughput']:,.0f} req/s"),
        (f"delivers >= 97% of {a.rate:g} req/s offered",
         timed["request_throughput"] >= 0.97 * a.rate, f"{timed['request_throughput']:,.0f} req/s"),
    ]  # fmt: skip
    srv_side = timed["server_side"]
    for metric in ("ttft", "e2el"):
        d, sd = timed[f"{metric}_ms"], srv_side[f"{metric}_ms"]
        for stat, hi in (("median", 1.0), ("p99", 5.0)):
            diff = d[stat] - sd[stat]
            checks.append(
                (f"{metric.upper()} {stat}: client - server-side in [-0.2, {hi:g}] ms",
                 -0.2 <= diff <= hi,
                 f"client {d[stat]:.2f} ms, server {sd[stat]:.2f} ms ({diff:+.2f})")
            )  # fmt: skip
    for metric in ("itl", "tpot"):
        med = timed[f"{metric}_ms"]["median"]
        checks.append(
            (f"{metric.upper()} median in [1.5, 3] ms (server spaces chunks {ITL_MS:g} ms)",
             1.5 <= med <= 3.0, f"{med:.2f} ms")
        )  # fmt: skip
    failed = sum(res[k]["failed"] for k in ("one_core", "workers_2", "timed"))
    checks.append(("no errors", not failed, f"{failed} failed"))
    res["checks"] = [{"check": c, "pass": ok, "measured": m} for c, ok, m in checks]
    res["wall_s"] = time.perf_counter() - t_start

    print()
    print(
        f"{'measurement (median trial)':<44}{'req/s':>9}{'spread':>8}{'TTFT p50':>10}"
        f"{'TTFT p99':>10}{'errors':>7}"
        f"{'client cores':>13}{'req/client-CPU-s':>18}{'server cores':>13}{'load':>6}"
    )
    for name, key in (
        ("raw client, one core, closed loop", "one_core"),
        ("raw client, --workers 2, closed loop", "workers_2"),
        ("aiohttp, one core, closed loop", "aiohttp_one_core"),
        ("httpx, one core, closed loop", "httpx_one_core"),
        (f"raw client, one core, {a.rate:g}/s, 20 ms server", "timed"),
    ):
        r = res[key]
        cpu = r["cpu"]
        server_cores = (cpu["server_cpu_s"] or float("nan")) / cpu["wall_s"]
        print(
            f"{name:<44}{r['request_throughput']:>9,.0f}{r['spread']:>8.0%}"
            f"{r['ttft_ms']['median']:>10.2f}"
            f"{r['ttft_ms']['p99']:>10.2f}{r['failed']:>7}{cpu['client_cores_used']:>13.2f}"
            f"{cpu['requests_per_client_cpu_s'] or 0:>18,.0f}{server_cores:>13.2f}"
            f"{cpu['loadavg_1m']:>6.1f}"
        )
    print()
    for c in res["checks"]:
        print(f"  {'PASS' if c['pass'] else 'FALL-SHORT':<10} {c['check']}: {c['measured']}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(f"\nwall time {res['wall_s']:.0f}s; results in {a.out}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def _spread(xs: list[float]) -> float:
    med = statistics.median(xs)
    return (max(xs) - min(xs)) / 2 / med if med else 0.0


def _pick(s: dict[str, Any]) -> dict[str, Any]:
    keep = ("request_throughput", "completed", "failed", "errors", "duration_s", "cpu")
    out = {k: s[k] for k in keep}
    if "server_side" in s:
        out["server_side"] = s["server_side"]
    for m in ("ttft_ms", "itl_ms", "tpot_ms", "e2el_ms"):
        out[m] = {k: s[m].get(k) for k in ("mean", "median", "p90", "p99")}
    return out


if __name__ == "__main__":
    main()
