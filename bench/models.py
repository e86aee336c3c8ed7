"""``python -m bench.models``: ModelServer against the bare vLLM engine, on ``builtin:tiny``.

One run, one machine, the same engine arguments pinned on both arms (:data:`ENGINE_ARGS`):

* **cold start** -- a fresh process to its first token. Bare: ``python`` starts, imports vLLM,
  builds ``AsyncLLM``, streams one token. ModelServer: ``serve.run`` of an ``eager`` deployment
  (Serve starts a replica process, which imports vLLM, builds the engine and warms it up) and
  the first streamed token through a deployment handle. Ray and Serve are already running (a
  cluster's, not a request's, cost). Also the load alone: import + engine build, bare vs in the
  replica (``load`` in the replica's ``stats()``).
* **first request** -- time to first token (TTFT) of the first user request after a deploy,
  with warm-up (``warmup.requests=4``) and without (``0``), against the steady-state TTFT of
  the same replica (median of later requests). Before the first generation, one ``stats()``
  call sets up Serve's route from this process to the replica without touching the engine: that
  is a once-per-client cost (a long-lived gateway pays it at its own start), reported on its own
  as ``route_setup_s``.
* **steady state** -- completion tokens per second at concurrency 1, 8 and 32: whole
  (non-streamed) completions of ``MAX_TOKENS`` through a ModelServer replica via its handle,
  against the bare engine (``AsyncLLM.generate``) driven from this process; as a third arm, the
  same in-process engine through raygent's ``ModelEngine`` wrapper, which separates our own
  per-request cost from Serve's. The CPU each process used in the last trial is recorded.
  Same prompts (one per request, distinct), same parameters (temperature 1 with a seed per
  request -- the tiny model's greedy answers hit an end token after a few tokens, which would
  measure request overhead, not generation), so every arm generates the same tokens.

Method (STYLE.md rule 12): ``time.perf_counter``; throughput cells run one warm-up trial that is
discarded, then ``--trials`` trials with the arms interleaved (bare, server, bare, server ...);
a figure is the median with its spread ``(max - min) / 2 / median``. Cold starts cost an engine
start each: the bare one runs twice (before Ray starts and after it stops, medians reported),
the ModelServer one once per deploy (with and without warm-up; the load row is their median).
The machine's other load is not controlled: on a shared box, compare figures from one run only.
Results go to JSON (``--out``, default
``bench/results/models.json``) and a table with the peer figure and the ratio, then the issue's
goals with PASS / FALL-SHORT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "models.json"
ENGINE_ARGS: dict[str, Any] = {
    "max_model_len": 1024,
    "kv_cache_memory_bytes": 512 * 2**20,
    "enforce_eager": True,
    "dtype": "float32",
    "max_num_seqs": 64,
}
CONCURRENCY = (1, 8, 32)
MAX_TOKENS = 64
TTFT_SAMPLES = 15
GOALS = {"first_ttft_vs_steady": 1.5, "tokens_per_s_ratio": 0.97, "load_ratio": 1.1}


def _prompts(n: int, salt: str) -> list[str]:
    return [f"Agent {i} ({salt}) asks the cluster to schedule task number {i}." for i in range(n)]


def _spread(xs: list[float]) -> float:
    med = statistics.median(xs)
    return (max(xs) - min(xs)) / 2 / med if med else 0.0


# -- the bare arm ----------------------------------------------------------------------------------


def _bare_child(model_path: str) -> None:
    """Run in a fresh process: import vLLM, build the engine, stream one token, report."""
    t0 = time.perf_counter()
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    t_import = time.perf_counter()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model_path, **ENGINE_ARGS))
    t_build = time.perf_counter()

    async def first_token() -> None:
        sp = SamplingParams(max_tokens=1, output_kind=RequestOutputKind.DELTA)
        async for _ in engine.generate("Hello", sp, request_id="cold"):
            break

    asyncio.run(first_token())
    t_first = time.perf_counter()
    print(
        "RESULT "
        + json.dumps(
            {"import_s": t_import - t0, "build_s": t_build - t_import, "first_s": t_first - t0}
        ),
        flush=True,
    )
    engine.shutdown()


def bare_cold_start(model_path: str) -> dict[str, float]:
    """Process start -> first token of a bare AsyncLLM, measured from here."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.models", "--bare-child", model_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    result: dict[str, float] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result["cold_s"] = time.perf_counter() - t0
            break
    proc.wait(timeout=120)
    if not result:
        raise RuntimeError("the bare cold-start child produced no result")
    result["load_s"] = result["import_s"] + result["build_s"]
    return result


class InProcessArms:
    """One engine in this process, driven two ways: bare (``AsyncLLM.generate``, the peer)
    and through raygent's :class:`~runtime.models.engine.ModelEngine` (validation,
    tokenization, error translation -- everything ModelServer adds except Serve)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @classmethod
    async def start(cls) -> InProcessArms:
        from runtime.config import LimitsConfig, ModelConfig
        from runtime.models.engine import ModelEngine

        cfg = ModelConfig(engine_args=ENGINE_ARGS)  # every CPU default pinned: none added
        return cls(await ModelEngine.start("bench", cfg, LimitsConfig()))

    async def bare(self, prompt: str, seed: int) -> int:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        sp = SamplingParams(
            max_tokens=MAX_TOKENS,
            temperature=1.0,
            seed=seed,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        async for out in self.engine.llm.generate(prompt, sp, request_id=uuid.uuid4().hex):
            final = out
        assert final is not None
        return len(final.outputs[0].token_ids)

    async def wrapped(self, prompt: str, seed: int) -> int:
        from agents.model import SamplingParams

        sp = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=seed)
        return (await self.engine.generate(prompt, sp)).usage.completion_tokens

    def shutdown(self) -> None:
        self.engine.shutdown()


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of the processes in a request's path, by role."""
    import psutil

    roles = {"caller": os.getpid()}
    out: dict[str, float] = {}
    for p in psutil.process_iter(["pid", "name"]):
        name = p.info["name"] or ""
        if p.info["pid"] == roles["caller"]:
            role = "caller"
        elif name.startswith("VLLM::EngineCore"):
            role = "engine_core"
        elif name.startswith("VLLM::Worker"):
            role = "engine_worker"
        elif name.startswith("ray::ServeReplica"):
            role = "replica"
        else:
            continue
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


# -- the ModelServer arm ---------------------------------------------------------------------------


def deploy(name: str, warmup_requests: int, env: dict[str, str]):
    from ray import serve

    from runtime.config import LimitsConfig, ModelConfig, WarmupConfig
    from runtime.models import ModelServerClient, model_deployment

    cfg = ModelConfig(
        placement="deployment",
        load="eager",
        engine_args=ENGINE_ARGS,
        warmup=WarmupConfig(requests=warmup_requests),
        resources={"num_cpus": 1},
        max_ongoing_requests=64,
    )
    app = model_deployment(name, cfg, LimitsConfig(), runtime_env={"env_vars": env})
    handle = serve.run(app, name=f"bench-{name}", route_prefix=None)
    return handle, ModelServerClient(handle, name)


async def ttft(client, prompt: str) -> float:
    t0 = time.perf_counter()
    async for _ in client.stream_deltas(prompt, max_tokens=8, temperature=0):
        return time.perf_counter() - t0
    raise RuntimeError("empty stream")


async def server_cold_start(name: str, warmup_requests: int, env: dict[str, str]):
    """Deploy, set up this process's route to the replica with one ``stats()`` call (it
    reaches the replica, not the engine), then time the first generation."""
    t0 = time.perf_counter()
    handle, client = await asyncio.to_thread(deploy, name, warmup_requests, env)
    deployed = time.perf_counter()
    await handle.stats.remote()
    routed = time.perf_counter()
    first = await ttft(client, "Hello")
    cold = time.perf_counter() - t0
    stats = await handle.stats.remote()
    t1 = time.perf_counter()
    await handle.stats.remote()
    stats_call_s = time.perf_counter() - t1
    return (
        handle,
        client,
        {
            "cold_s": cold,
            "deploy_s": deployed - t0,
            "route_setup_s": routed - deployed,
            "stats_call_s": stats_call_s,
            "first_ttft_s": first,
            "load_s": stats["load_s"],
            "engine_build_s": stats["engine_build_s"],
            "warmup_s": stats["warmup_s"],
        },
    )


# -- throughput ------------------------------------------------------------------------------------


async def run_load(complete, concurrency: int, prompts: list[str]) -> tuple[float, int]:
    """Complete every prompt, ``concurrency`` at a time; returns (seconds, completion tokens)."""
    queue = list(reversed(list(enumerate(prompts))))
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            seed, prompt = queue.pop()
            n = await complete(prompt, seed)  # not `tokens += await ...`: that reads first
            tokens += n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, tokens


async def throughput(arms_in: InProcessArms, client, trials: int) -> dict[str, Any]:
    async def via_server(prompt: str, seed: int) -> int:
        reply = await client.complete(prompt, max_tokens=MAX_TOKENS, temperature=1.0, seed=seed)
        return reply.usage.completion_tokens

    arms = {"bare": arms_in.bare, "engine": arms_in.wrapped, "server": via_server}
    out: dict[str, Any] = {}
    for c in CONCURRENCY:
        n = max(8, 4 * c)
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        counts: dict[str, set[int]] = {arm: set() for arm in arms}
        cpu: dict[str, dict[str, float]] = {}
        for trial in range(trials + 1):  # trial 0 is the warm-up
            for arm, complete in arms.items():
                before = _cpu_seconds()
                secs, tokens = await run_load(complete, c, _prompts(n, f"{c}/{trial}"))
                if trial:
                    rates[arm].append(tokens / secs)
                    counts[arm].add(tokens)
                if trial == trials:  # cores each process used during the last trial
                    after = _cpu_seconds()
                    cpu[arm] = {k: (after[k] - before.get(k, 0.0)) / secs for k in after}
        cell: dict[str, Any] = {
            arm: {
                "tokens_per_s": statistics.median(rates[arm]),
                "spread": _spread(rates[arm]),
                "trials": rates[arm],
                "tokens_per_trial": sorted(counts[arm]),
                "cores_used": cpu.get(arm, {}),
            }
            for arm in arms
        }
        cell["ratio"] = cell["server"]["tokens_per_s"] / cell["bare"]["tokens_per_s"]
        cell["engine_ratio"] = cell["engine"]["tokens_per_s"] / cell["bare"]["tokens_per_s"]
        out[str(c)] = cell
        print(
            f"  concurrency {c:>2}: bare {cell['bare']['tokens_per_s']:6.0f}, "
            f"ModelEngine {cell['engine']['tokens_per_s']:6.0f}, "
            f"ModelServer {cell['server']['tokens_per_s']:6.0f} tok/s",
            flush=True,
        )
    return out


# -- report ----------------------------------------------------------------------------------------


def _table(res: dict[str, Any]) -> str:
    cold, ttft_ = res["cold_start"], res["first_request"]
    rows = [
        (
            "cold start: process -> first token (s)",
            cold["server"]["cold_s"],
            cold["bare"]["cold_s"],
        ),
        ("load: import + engine build (s)", cold["server_load_s_median"], cold["bare"]["load_s"]),
        (
            "engine build alone (s)",
            cold["server"]["engine_build_s"],
            cold["bare"]["build_s"],
        ),
        (
            "first-request TTFT, with warm-up (s)",
            ttft_["with_warmup_s"],
            ttft_["steady_ttft_s"],
        ),
        (
            "first-request TTFT, no warm-up (s)",
            ttft_["without_warmup_s"],
            ttft_["steady_ttft_s"],
        ),
    ]
    lines = [
        f"{'measure':<42}{'ModelServer':>14}{'peer':>14}{'ratio':>9}   peer",
        "-" * 96,
    ]
    peers = ["bare vLLM", "bare vLLM", "bare vLLM", "steady TTFT", "steady TTFT"]
    for (label, ours, peer), who in zip(rows, peers, strict=True):
        lines.append(f"{label:<42}{ours:>14.3f}{peer:>14.3f}{ours / peer:>9.2f}   {who}")
    for c, cell in res["steady_state"].items():
        b = cell["bare"]
        for arm, label, ratio in (
            ("server", "ModelServer", cell["ratio"]),
            ("engine", "ModelEngine, no Serve", cell["engine_ratio"]),
        ):
            s = cell[arm]
            lines.append(
                f"{f'tokens/s c={c}: {label}':<42}{s['tokens_per_s']:>9.0f} ±{s['spread']:4.0%}"
                f"{b['tokens_per_s']:>9.0f} ±{b['spread']:4.0%}{ratio:>9.2f}   bare AsyncLLM"
            )
    top = res["steady_state"][str(CONCURRENCY[-1])]
    lines.append("")
    lines.append(f"cores used at concurrency {CONCURRENCY[-1]} (last trial), by process:")
    for arm in ("bare", "engine", "server"):
        used = top[arm]["cores_used"]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(used.items()))
        lines.append(f"  {arm:<7} total {sum(used.values()):.2f}: {parts}")
    lines.append(
        f"{'route setup, first call of a new client (s)':<42}"
        f"{cold['server']['route_setup_s']:>14.3f}{cold['server']['stats_call_s']:>14.3f}"
        f"{cold['server']['route_setup_s'] / cold['server']['stats_call_s']:>9.2f}"
        "   later call"
    )
    return "\n".join(lines)


def _goals(res: dict[str, Any]) -> list[str]:
    cold, first = res["cold_start"], res["first_request"]
    checks = [
        (
            "first user request TTFT <= 1.5x steady state (with warm-up)",
            first["with_warmup_s"] / first["steady_ttft_s"],
            GOALS["first_ttft_vs_steady"],
            "<=",
        ),
        (
            "load time <= 1.1x bare vLLM (import + build, medians)",
            cold["server_load_s_median"] / cold["bare"]["load_s"],
            GOALS["load_ratio"],
            "<=",
        ),
    ]
    for c, cell in res["steady_state"].items():
        checks.append(
            (
                f"ModelServer tokens/s >= 0.97x bare at concurrency {c}",
                cell["ratio"],
                GOALS["tokens_per_s_ratio"],
                ">=",
            )
        )
    out = []
    for label, value, goal, op in checks:
        ok = value <= goal if op == "<=" else value >= goal
        out.append(
            f"  {'PASS' if ok else 'FALL-SHORT':<10} {label}: {value:.2f} (goal {op} {goal})"
        )
    return out


async def _main(args: argparse.Namespace, env: dict[str, str], model_path: str) -> dict[str, Any]:
    from ray import serve

    res: dict[str, Any] = {"engine_args": ENGINE_ARGS, "max_tokens": MAX_TOKENS}

    print("cold start + first request: ModelServer with warm-up ...", flush=True)
    handle, client, warm = await server_cold_start("warm", 4, env)
    for _ in range(3):  # the replica's own warm-up covered this; these settle the client path
        await ttft(client, "Settle the route.")
    steady = [await ttft(client, f"Steady request {i}.") for i in range(TTFT_SAMPLES)]
    serve.delete("bench-warm")

    print("cold start + first request: ModelServer without warm-up ...", flush=True)
    handle, client, cold = await server_cold_start("cold", 0, env)

    res["cold_start"] = {"server": warm, "server_no_warmup": cold}
    res["first_request"] = {
        "with_warmup_s": warm["first_ttft_s"],
        "without_warmup_s": cold["first_ttft_s"],
        "steady_ttft_s": statistics.median(steady),
        "steady_ttft_spread": _spread(steady),
    }

    print("steady state: bare AsyncLLM, ModelEngine (same engine), ModelServer ...", flush=True)
    in_process = await InProcessArms.start()
    try:
        res["steady_state"] = await throughput(in_process, client, args.trials)
    finally:
        in_process.shutdown()
        serve.delete("bench-cold")
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="measured trials per cell")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--bare-child", metavar="MODEL_PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_child:
        _bare_child(args.bare_child)
        return

    import ray
    from ray import serve

    from runtime.models import ensure_tiny_model

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="raygent-bench-models-"))
    env = {
        "RAYGENT_MODEL_CACHE": str(root / "raygent"),
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
    }
    os.environ.update(env)  # this process and the bare child
    model_path = str(ensure_tiny_model())  # generated once, outside every measurement
    # Before Ray starts: its start-up (workers, Serve controller) would compete for the CPUs.
    # Bare cold starts run while Ray is down (its start-up would compete for the CPUs): one
    # before everything and one after, so drift in the machine's load shows as spread.
    print("cold start: bare vLLM in a fresh process (1/2) ...", flush=True)
    bare_runs = [bare_cold_start(model_path)]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    try:
        res = asyncio.run(_main(args, env, model_path))
    finally:
        serve.shutdown()
        ray.shutdown()
    print("cold start: bare vLLM in a fresh process (2/2) ...", flush=True)
    bare_runs.append(bare_cold_start(model_path))
    res["cold_start"]["bare_runs"] = bare_runs
    res["cold_start"]["bare"] = {
        k: statistics.median(r[k] for r in bare_runs) for k in bare_runs[0]
    }
    servers = [res["cold_start"]["server"], res["cold_start"]["server_no_warmup"]]
    res["cold_start"]["server_load_s_median"] = statistics.median(r["load_s"] for r in servers)
    res["machine"] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    res["wall_s"] = time.perf_counter() - t_start
    table = _table(res)
    goals = _goals(res)
    res["goals"] = goals
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print()
    print(table)
    print()
    print("goals:")
    print("\n".join(goals))
    print(f"\nwall time {res['wall_s']:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
