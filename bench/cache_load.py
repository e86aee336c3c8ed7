"""``python -m bench.cache_load``: how long a Redis call takes *as an asyncio coroutine sees it*,
idle and on a busy machine -- the numbers behind the response cache's deadline and pool size.

What a gateway replica lives with: its event loop also runs the vLLM engine's output processing
and HTTP work, and on a 2-core machine the engine core and the rest of Ray compete for the CPU.
So each cell is one load on this process and machine:

* ``idle`` -- nothing else runs;
* ``loop`` -- a CPU-bound task on the same event loop, ``--hog-ms`` of work between awaits
  (the engine's output processing stealing slices);
* ``cpu`` -- one busy process per core (``os.cpu_count()``), Redis and this process competing;
* ``loop+cpu`` -- both.

Measured in each cell, with the hiredis parser and with redis-py's pure-Python one (when hiredis
is installed; ``parser`` in the results):

* **rtt** -- ``GET`` of a 1 KiB value on a warm pooled connection, from ``perf_counter`` before
  the call to the coroutine resuming after it: 1 caller in a loop, and 20 concurrent callers
  (``--concurrency``); with the percentage of calls slower than each deadline in
  ``--deadlines-ms``, which is the share a plain ``asyncio.timeout(d)`` would have cut off;
  and the most pool connections in use at once (what sizes ``max_connections``);
* **loop lag** -- how late a 1 ms ``asyncio.sleep`` wakes up (the loop's own lag);
* **cache** -- ``ResponseCache`` with the *default* config doing what the gateway does: rounds
  of 20 concurrent identical ``get_or_compute`` (temperature-0 requests), each round a new
  key: ``hit`` share after the first of a round, ``bypass`` (cache skipped), breaker opens,
  timeouts and excused timeouts (Redis answered other calls meanwhile).

Method (STYLE.md rule 12): ``time.perf_counter`` throughout; each cell starts with a warm-up trial
(``--warmup-s``, discarded) that also opens the pool's connections, then ``--trials`` trials of
``--trial-s``; a figure is the median over trials with its spread ``(max - min) / 2 / median``;
tails (p99.9, max, the share over a deadline) are over all trials' samples pooled. Results go to
JSON (``--out``, default ``bench/results/cache_load.json``) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

from bench.harness.metrics import percentile
from runtime.cache import CacheDecision, ResponseCache, cache_key
from runtime.config import CacheConfig

LOADS = ("idle", "loop", "cpu", "loop+cpu")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cache_load.json"
KEY = "raygent:bench:cache_load"
VALUE = b"x" * 1024
CACHEABLE = CacheDecision(lookup=True, store=True, reason="cacheable")
FORK = mp.get_context("fork")


# -- load ---------------------------------------------------------------------------------------


def _burn(stop: Any) -> None:
    while not stop.is_set():
        for _ in range(10_000):
            pass


class Load:
    """One cell's load: a CPU hog on this loop and/or a busy process per core."""

    def __init__(self, name: str, hog_ms: float) -> None:
        self.name = name
        self._hog_s = hog_ms / 1000
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._procs: list[Any] = []
        self._proc_stop = FORK.Event()

    async def __aenter__(self) -> Load:
        if "cpu" in self.name:
            for _ in range(os.cpu_count() or 1):
                p = FORK.Process(target=_burn, args=(self._proc_stop,), daemon=True)
                p.start()
                self._procs.append(p)
        if "loop" in self.name:
            self._task = asyncio.create_task(self._hog())
        await asyncio.sleep(0.1)  # let the load settle
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self._proc_stop.set()
        for p in self._procs:
            p.join(5)

    async def _hog(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < self._hog_s:
                pass
            await asyncio.sleep(0)


# -- measurements -------------------------------------------------------------------------------


async def _rtt_trial(client: aioredis.Redis, concurrency: int, seconds: float) -> dict:
    samples: list[float] = []
    inside = peak = 0  # calls under way at once: the connections they need
    end = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal inside, peak
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            inside += 1
            peak = max(peak, inside)
            try:
                await client.get(KEY)
            finally:
                inside -= 1
            samples.append(time.perf_counter() - t0)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {"samples": samples, "max_in_use": peak}


async def _connect_trial(url: str, seconds: float) -> dict:
    """A new connection's first GET: connect, CLIENT SETNAME, CLIENT SETINFO, then the GET."""
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        client = aioredis.Redis.from_url(url, client_name="raygent:bench")
        try:
            t0 = time.perf_counter()
            await client.get(KEY)
            samples.append(time.perf_counter() - t0)
        finally:
            await client.aclose()
    return {"samples": samples}


async def _parse_trial(client: aioredis.Redis, key: str, seconds: float) -> dict:
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await client.get(key)
        samples.append(time.perf_counter() - t0)
    return {"samples": samples}


async def _lag_trial(seconds: float) -> dict:
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append(time.perf_counter() - t0 - 0.001)
    return {"samples": samples}


async def _cache_trial(cache: ResponseCache, concurrency: int, seconds: float) -> dict:
    counts = {"hit": 0, "miss": 0, "bypass": 0, "followers": 0}
    end = time.perf_counter() + seconds
    rounds = 0

    async def produce() -> bytes:
        await asyncio.sleep(0.005)  # a model call; short, so that rounds are many
        return VALUE

    while time.perf_counter() < end:
        rounds += 1
        key = cache_key(
            target="bench",
            revision=None,
            kind="chat",
            prompt=f"{os.getpid()}-{time.perf_counter_ns()}",
            params={"temperature": 0},
            tenant="bench",
        )
        results = await asyncio.gather(
            *(cache.get_or_compute(key, produce, CACHEABLE) for _ in range(concurrency))
        )
        # every round: once more, what a repeated request gets (the entry is stored now)
        results.append(await cache.get_or_compute(key, produce, CACHEABLE))
        for _, status in results:
            counts[status] += 1
        counts["followers"] += len(results) - 1
    return {"rounds": rounds, **counts}


def _spread(values: list[float]) -> dict:
    med = statistics.median(values)
    return {
        "median": med,
        "spread": (max(values) - min(values)) / 2 / med if med else 0.0,
        "trials": values,
    }


def _summary(trials: list[dict], deadlines_ms: list[float]) -> dict:
    """Per-trial p50/p90/p99 (median, spread), pooled tails, and the share over each deadline."""
    pooled = [s for t in trials for s in t["samples"]]
    out: dict[str, Any] = {"n": len(pooled)}
    for p in (50, 90, 99):
        out[f"p{p}_ms"] = _spread([1000 * percentile(t["samples"], p) for t in trials])
    out["p99.9_ms"] = 1000 * percentile(pooled, 99.9)
    out["max_ms"] = 1000 * max(pooled)
    out["over_deadline_pct"] = {
        str(d): 100 * sum(s > d / 1000 for s in pooled) / len(pooled) for d in deadlines_ms
    }
    if "max_in_use" in trials[0]:
        out["max_connections_in_use"] = max(t["max_in_use"] for t in trials)
    return out


async def _cell(args, load: str, parser: str | None, results: dict) -> None:
    kwargs: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 10}
    if parser is not None:
        kwargs["parser_class"] = _AsyncHiredisParser if parser == "hiredis" else _AsyncRESP2Parser
    client = aioredis.Redis.from_url(args.url, max_connections=256, **kwargs)
    try:
        await client.set(KEY, VALUE)
        async with Load(load, args.hog_ms):
            for conc in (1, args.concurrency):
                await _rtt_trial(client, conc, args.warmup_s)  # warm-up: discarded
                trials = [await _rtt_trial(client, conc, args.trial_s) for _ in range(args.trials)]
                row = {"load": load, "parser": parser or "default", "concurrency": conc}
                row |= _summary(trials, args.deadlines_ms)
                results["rtt"].append(row)
                _progress(row)
            if parser == results["meta"]["parsers"][0]:  # once per load
                await _lag_trial(args.warmup_s)
                trials = [await _lag_trial(args.trial_s) for _ in range(args.trials)]
                row = {"load": load} | _summary(trials, args.deadlines_ms)
                results["loop_lag"].append(row)
                _progress(row, "lag")
                await _connect_trial(args.url, args.warmup_s)
                trials = [await _connect_trial(args.url, args.trial_s) for _ in range(args.trials)]
                row = {"load": load} | _summary(trials, args.deadlines_ms)
                results["connect"].append(row)
                _progress(row, "conn")
                await _cache_cell(args, load, results)
    finally:
        await client.aclose()


async def _parser_cells(args, results: dict) -> None:
    """hiredis against redis-py's own parser on an idle loop, by value size: the parse's own
    cost, which the loads above would drown."""
    for parser in results["meta"]["parsers"]:
        kwargs: dict[str, Any] = {}
        if parser is not None:
            cls = _AsyncHiredisParser if parser == "hiredis" else _AsyncRESP2Parser
            kwargs["parser_class"] = cls
        client = aioredis.Redis.from_url(args.url, **kwargs)
        try:
            for kib in args.value_kib:
                key = f"{KEY}:{kib}"
                await client.set(key, b"x" * int(kib * 1024))
                await _parse_trial(client, key, args.warmup_s)
                trials = [await _parse_trial(client, key, args.trial_s) for _ in range(args.trials)]
                row = {"parser": parser or "default", "value_kib": kib}
                row |= _summary(trials, args.deadlines_ms)
                results["parser"].append(row)
                _progress(row | {"load": f"{kib:g}KiB"}, "parse")
                await client.delete(key)
        finally:
            await client.aclose()


async def _cache_cell(args, load: str, results: dict) -> None:
    cfg = CacheConfig(url=args.url)
    cache = ResponseCache.from_config(cfg)
    try:
        await cache.start()
        await _cache_trial(cache, args.concurrency, args.warmup_s)
        before = cache.stats()
        trials = []
        for _ in range(args.trials):
            trials.append(await _cache_trial(cache, args.concurrency, args.trial_s))
        after = cache.stats()
    finally:
        await cache.close()
    total = {k: sum(t[k] for t in trials) for k in ("rounds", "hit", "miss", "bypass", "followers")}
    delta = {
        k: after.get(k, 0) - before.get(k, 0)
        for k in ("errors", "breaker_opens", "timeouts", "excused_timeouts", "lookups")
    }
    row = {
        "load": load,
        "breaker_opens_total": after["breaker_opens"],
        "socket_timeout_ms": cfg.socket_timeout_ms,
        "hit_pct_after_first": 100 * total["hit"] / max(1, total["followers"]),
        "bypass": total["bypass"],
        **total,
        **delta,
    }
    results["cache"].append(row)
    _progress(row, "cache")


def _progress(row: dict, what: str = "rtt") -> None:
    if what == "cache":
        print(
            f"  cache {row['load']:<9} rounds {row['rounds']:>4}"
            f"  hit {row['hit_pct_after_first']:.2f}%  bypass {row['bypass']}"
            f"  opens {row['breaker_opens_total']}  errors {row['errors']}",
            file=sys.stderr,
        )
        return
    label = f"{what:<5}{row['load']:<9}{row.get('parser', ''):>8} c={row.get('concurrency', 1):<3}"
    print(
        f"  {label} p50 {row['p50_ms']['median']:7.2f}  p99 {row['p99_ms']['median']:7.2f}"
        f"  p99.9 {row['p99.9_ms']:7.2f}  max {row['max_ms']:7.2f} ms  n={row['n']}",
        file=sys.stderr,
    )


def render(results: dict) -> str:
    deadlines = results["meta"]["deadlines_ms"]
    head = "".join(f" >{d:g}ms" for d in deadlines)
    lines = [
        "REDIS GET AS A COROUTINE SEES IT (ms; p50/p90/p99 median of trials, tails pooled)",
        f"{'load':<10}{'parser':<9}{'conc':>5}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}"
        f"{'max':>8}{'pool':>6}{head}",
    ]
    for r in results["rtt"]:
        over = "".join(
            f"{r['over_deadline_pct'][str(d)]:>{len(f' >{d:g}ms')}.2f}" for d in deadlines
        )
        lines.append(
            f"{r['load']:<10}{r['parser']:<9}{r['concurrency']:>5}{r['p50_ms']['median']:>8.2f}"
            f"{r['p90_ms']['median']:>8.2f}{r['p99_ms']['median']:>8.2f}{r['p99.9_ms']:>8.2f}"
            f"{r['max_ms']:>8.2f}{r['max_connections_in_use']:>6}{over}"
        )
    for title, rows, label in (
        ("LOOP LAG (a 1 ms sleep's overshoot, ms)", results["loop_lag"], "load"),
        ("NEW CONNECTION'S FIRST GET (ms)", results["connect"], "load"),
        ("PARSER, IDLE LOOP, BY VALUE SIZE (ms)", results["parser"], "parser"),
    ):
        lines += ["", title]
        for r in rows:
            name = r[label] + (f" {r['value_kib']:g} KiB" if "value_kib" in r else "")
            lines.append(
                f"{name:<18} p50 {r['p50_ms']['median']:.3f}  p99 {r['p99_ms']['median']:.3f}"
                f"  p99.9 {r['p99.9_ms']:.3f}  max {r['max_ms']:.3f}"
            )
    lines += ["", "RESPONSECACHE, DEFAULT CONFIG (rounds of concurrent identical requests)"]
    for r in results["cache"]:
        lines.append(
            f"{r['load']:<10} timeout {r['socket_timeout_ms']} ms  rounds {r['rounds']}  "
            f"hit after first {r['hit_pct_after_first']:.2f}%  bypass {r['bypass']}  "
            f"breaker opens {r['breaker_opens_total']}  errors {r['errors']}  "
            f"timeouts {r['timeouts']} (excused {r['excused_timeouts']})"
        )
    return "\n".join(lines)


async def run(args) -> dict:
    try:
        import hiredis  # noqa: F401

        parsers: list[str | None] = ["hiredis", "python"]
    except ImportError:
        parsers = [None]
    results: dict[str, Any] = {
        "meta": {
            "python": sys.version.split()[0],
            "redis_py": redis.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loop": args.loop,
            "hog_ms": args.hog_ms,
            "trials": args.trials,
            "trial_s": args.trial_s,
            "deadlines_ms": args.deadlines_ms,
            "parsers": parsers,
            "loads": args.loads,
            "url": args.url,
        },
        "rtt": [],
        "loop_lag": [],
        "connect": [],
        "cache": [],
        "parser": [],
    }
    await _parser_cells(args, results)
    for load in args.loads:
        for parser in parsers:
            await _cell(args, load, parser, results)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.cache_load", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    ap.add_argument("--loads", type=lambda s: s.split(","), default=list(LOADS))
    ap.add_argument("--hog-ms", type=float, default=20.0, help="loop hog's work between awaits")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--trial-s", type=float, default=2.0)
    ap.add_argument("--warmup-s", type=float, default=0.5)
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    ap.add_argument("--deadlines-ms", type=floats, default=[25, 50, 100, 250])
    ap.add_argument("--value-kib", type=floats, default=[1, 16, 256], help="parser cells")
    ap.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop; Ray (so Serve replicas and the gateway) runs uvloop when installed",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        results = uvloop.run(run(args))
    else:
        results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(render(results))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
