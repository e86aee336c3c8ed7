"""``python -m bench.runtime``: agent→agent messaging on one node, raygent against its peers.

Measured in one run, same machine, same message (a small dataclass with a timestamp):

* publish delivery — one-way latency (p50/p99, messages sent 2 ms apart, below every arm's
  saturation) and burst throughput, from an agent's ``ctx.publish`` to a co-located
  subscriber's handler;
* send round trip — an agent's ``await ctx.send(...)`` to another agent and back;

for: raygent ``RayRuntime`` (publish rides the shm ring), a plain async Ray actor calling
another (``.remote()``; one-way for publish), Ray Compiled Graphs (a two-actor graph; its hop
latency is the one-way figure, ``execute`` + ``get`` the round trip), and ``LocalRuntime``
(everything in one process: the floor).

Warm-up rounds are excluded; each figure is the median of ``--trials`` trials, with the spread
(min–max of the trial medians). Goals (from the issue; ratios to the plain Ray call):
publish p50 ≤ 0.1×, and ≤ 1× Compiled Graphs; send round trip ≤ 1.1×.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import ray

from bench._runtime_agents import (
    BenchSink,
    BenchSource,
    Collect,
    PlainSink,
    PlainSource,
    Pump,
)
from bench.harness.metrics import percentile
from runtime import LocalRuntime, RayRuntime
from runtime.config import AgentConfig, RaygentConfig

AGENTS = [BenchSource, BenchSink]


def _config() -> RaygentConfig:
    return RaygentConfig(
        agents=[
            AgentConfig(
                import_path=f"{c.__module__}:{c.__qualname__}",
                mailbox_size=100_000,
                max_concurrency=4,
                resources={"num_cpus": 0.1},
            )
            for c in AGENTS
        ]
    )


def _summary(lat_ns: list[int]) -> dict[str, float]:
    us = [v / 1000 for v in lat_ns]
    return {
        "p50_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.mean(us),
    }


async def _measure_runtime(rt: Any, n_lat: int, n_burst: int) -> dict[str, Any]:
    """One trial against anything with ``send`` (RayRuntime, LocalRuntime)."""
    await rt.send("bench_source", Pump("publish", n_lat, gap_us=2000))
    pub = await rt.send("bench_sink", Collect(n_lat))
    burst = await rt.send("bench_source", Pump("publish", n_burst))
    got = await rt.send("bench_sink", Collect(n_burst))
    rtt = await rt.send("bench_source", Pump("send", n_lat))
    return {
        "publish": _summary(pub["lat_ns"]),
        "publish_msgs_per_s": len(got["lat_ns"]) / ((got["last_ns"] - burst["start_ns"]) / 1e9),
        "send_rtt": _summary(rtt["rtt_ns"]),
    }


async def _measure_plain(source: Any, sink: Any, n_lat: int, n_burst: int) -> dict[str, Any]:
    await source.pump.remote("publish", n_lat, 2000)
    pub = await sink.collect.remote(n_lat)
    burst = await source.pump.remote("publish", n_burst)
    got = await sink.collect.remote(n_burst)
    rtt = await source.pump.remote("send", n_lat)
    return {
        "publish": _summary(pub["lat_ns"]),
        "publish_msgs_per_s": len(got["lat_ns"]) / ((got["last_ns"] - burst["start_ns"]) / 1e9),
        "send_rtt": _summary(rtt["rtt_ns"]),
    }


def _measure_compiled(n_lat: int) -> dict[str, Any] | None:
    try:
        from ray.dag import InputNode
    except ImportError:
        return None
    source = ray.remote(PlainSource).remote(None)
    sink = ray.remote(PlainSink).remote()
    with InputNode() as inp:
        dag = sink.stamp_in.bind(source.stamp_out.bind(inp))
    compiled = dag.experimental_compile()
    try:
        for i in range(50):  # warm-up
            ray.get(compiled.execute(i))
        hops, rtts = [], []
        for i in range(n_lat):
            t0 = time.monotonic_ns()
            hops.append(ray.get(compiled.execute(i)))
            rtts.append(time.monotonic_ns() - t0)
            time.sleep(0.002)
        return {"publish": _summary(hops), "send_rtt": _summary(rtts)}
    finally:
        compiled.teardown()
        ray.kill(source)
        ray.kill(sink)


def _median_of(trials: list[dict[str, Any]], *path: str) -> dict[str, float]:
    values = []
    for t in trials:
        v: Any = t
        for p in path:
            v = v[p]
        values.append(v)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def _run(trials: int, n_lat: int, n_burst: int) -> dict[str, Any]:
    arms: dict[str, list[dict[str, Any]]] = {"raygent": [], "plain_ray": [], "local": []}
    async with RayRuntime(AGENTS, _config()) as rt:
        await _measure_runtime(rt, 50, 200)  # warm-up
        for _ in range(trials):
            arms["raygent"].append(await _measure_runtime(rt, n_lat, n_burst))
    sink = ray.remote(PlainSink).options(num_cpus=0.1).remote()
    source = ray.remote(PlainSource).options(num_cpus=0.1).remote(sink)
    await _measure_plain(source, sink, 50, 200)
    for _ in range(trials):
        arms["plain_ray"].append(await _measure_plain(source, sink, n_lat, n_burst))
    ray.kill(source)
    ray.kill(sink)
    async with LocalRuntime(AGENTS, config=_config()) as local:
        await _measure_runtime(local, 50, 200)
        for _ in range(trials):
            arms["local"].append(await _measure_runtime(local, n_lat, n_burst))
    compiled = [c for _ in range(trials) if (c := _measure_compiled(n_lat)) is not None]
    if compiled:
        arms["compiled_graph"] = compiled
    out: dict[str, Any] = {}
    for arm, ts in arms.items():
        out[arm] = {
            "publish_p50_us": _median_of(ts, "publish", "p50_us"),
            "publish_p99_us": _median_of(ts, "publish", "p99_us"),
            "send_rtt_p50_us": _median_of(ts, "send_rtt", "p50_us"),
            "send_rtt_p99_us": _median_of(ts, "send_rtt", "p99_us"),
        }
        if "publish_msgs_per_s" in ts[0]:
            out[arm]["publish_msgs_per_s"] = _median_of(ts, "publish_msgs_per_s")
    return out


def _table(res: dict[str, Any]) -> str:
    arms = [a for a in ("raygent", "plain_ray", "compiled_graph", "local") if a in res]
    metrics = [
        "publish_p50_us",
        "publish_p99_us",
        "publish_msgs_per_s",
        "send_rtt_p50_us",
        "send_rtt_p99_us",
    ]
    lines = [f"{'metric':<20}" + "".join(f"{a:>16}" for a in arms) + f"{'raygent/ray':>14}"]
    for m in metrics:
        row = f"{m:<20}"
        for a in arms:
            v = res[a].get(m)
            row += f"{v['median']:>16,.1f}" if v else f"{'-':>16}"
        ours, peer = res["raygent"].get(m), res["plain_ray"].get(m)
        row += f"{ours['median'] / peer['median']:>14.3f}" if ours and peer else ""
        lines.append(row)
    p50 = res["raygent"]["publish_p50_us"]["median"]
    ray_p50 = res["plain_ray"]["publish_p50_us"]["median"]
    rtt = (
        res["raygent"]["send_rtt_p50_us"]["median"] / res["plain_ray"]["send_rtt_p50_us"]["median"]
    )
    goals = [
        ("publish p50 <= 0.1x plain Ray call", p50 / ray_p50, p50 / ray_p50 <= 0.1),
        ("send round trip <= 1.1x plain Ray call", rtt, rtt <= 1.1),
    ]
    if "compiled_graph" in res:
        cg = p50 / res["compiled_graph"]["publish_p50_us"]["median"]
        goals.append(("publish p50 <= 1x Compiled Graphs", cg, cg <= 1.0))
    lines.append("")
    for name, ratio, ok in goals:
        lines.append(f"{name:<42} ratio {ratio:6.3f}  {'PASS' if ok else 'FALL SHORT'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer messages, one trial")
    parser.add_argument("--out", default="bench/results/runtime.json")
    args = parser.parse_args(argv)
    n_lat, n_burst, trials = (200, 1000, 1) if args.quick else (1000, 5000, args.trials)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        res = asyncio.run(_run(trials, n_lat, n_burst))
    finally:
        ray.shutdown()
    res["_meta"] = {
        "trials": trials,
        "latency_messages": n_lat,
        "burst_messages": n_burst,
        "cpus": __import__("os").cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(_table(res))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
