"""Convert a RunConfig --> a result: warm-up, the steps of a sweep, summaries, gates.

The steps run in this process's event loop (``workers=1``) or in ``workers`` child processes
(:mod:`bench.harness.worker`), each taking an even share of every step
(:func:`~bench.harness.runner.split_shape`). With workers, this process only coordinates: it
starts every step at one ``perf_counter`` instant in all of them (the clock is system-wide),
sums their live counters for the progress display and merges their records.

The result (what ``--out`` writes as ``result.json``)::

    {"meta":  {tool, version, label, url, started_at, python, cpu_count, uvloop, config},
     "steps": [{"index", "shape", "started_s", "duration_s", "summary"}],
     "saturation": {"step", "request_throughput", "reason"} | null,
     "gates": {"conditions", "failures", "passed"},
     "requests": [RequestRecord.to_dict(), ...]}     # start_s relative to the first step
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness.client import ClientConfig, make_client
from bench.harness.config import RunConfig
from bench.harness.errors import BenchError
from bench.harness.loop import uvloop_available
from bench.harness.metrics import RequestRecord, check_gates, summarize
from bench.harness.progress import LiveDisplay
from bench.harness.runner import Counters, LoadShape, StepResult, run_step
from bench.harness.workload import load_tokenizer, make_workload

__all__ = ["RESULT_VERSION", "run_benchmark", "saturation_check", "shape_from_dict"]

RESULT_VERSION = 1
_START_LEAD_S = 0.3  # workers get this long to wake before a step begins


async def run_benchmark(cfg: RunConfig) -> dict[str, Any]:
    """Run every step of ``cfg`` and return the result dict (see the module docstring)."""
    cfg.validate()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    display = LiveDisplay(enabled=cfg.progress)
    try:
        if cfg.workers == 1:
            steps, warm = await _run_in_process(cfg, display)
        else:
            steps, warm = await _run_workers(cfg, display)
    finally:
        await display.stop()
    return _assemble(cfg, steps, warm, started_at)


def _assemble(
    cfg: RunConfig, steps: list[StepResult], warmup_count: int, started_at: str
) -> dict[str, Any]:
    t0 = min((s.started for s in steps), default=0.0)
    out_steps = []
    requests: list[dict[str, Any]] = []
    for i, s in enumerate(steps):
        summary = summarize(s.records, s.duration_s, cfg.slo, cfg.percentiles)
        out_steps.append(
            {
                "index": i,
                "shape": s.shape.to_dict(),
                "started_s": s.started - t0,
                "duration_s": s.duration_s,
                "summary": summary,
            }
        )
        requests.extend(r.to_dict(t0, cfg.options.keep_text) for r in s.records)
    saturation = saturation_check(out_steps, cfg.saturation_gain) if len(out_steps) > 1 else None
    failures = [f"step {st['index']}: {f}" for st in out_steps for f in _gate(cfg, st)]
    return {
        "meta": {
            "tool": "raygent-bench",
            "version": RESULT_VERSION,
            "label": cfg.label or cfg.url,
            "url": cfg.url,
            "started_at": started_at,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "uvloop": uvloop_available(),
            "warmup_requests_sent": warmup_count,
            "config": cfg.to_json(),
        },
        "steps": out_steps,
        "saturation": saturation,
        "gates": {
            "conditions": [str(g) for g in cfg.gates],
            "failures": failures,
            "passed": not failures,
        },
        "requests": requests,
    }


def _gate(cfg: RunConfig, step: dict[str, Any]) -> list[str]:
    return check_gates(cfg.gates, step["summary"]) if cfg.gates else []


def saturation_check(steps: list[dict[str, Any]], gain: float = 0.1) -> dict[str, Any] | None:
    """The saturation point of a ramp: the first step after which throughput stops rising by
    ``gain`` (10 %), an open-loop step that delivered under 90 % of its offered rate, or error
    rate above 5 %. None when every step still scaled."""
    best = None
    for i, st in enumerate(steps):
        s = st["summary"]
        thr = s["request_throughput"]
        offered = st["shape"].get("rate")
        reason = None
        if s["error_rate"] > 0.05:
            reason = f"error rate {s['error_rate']:.1%} > 5%"
        elif isinstance(offered, (int, float)) and thr < 0.9 * offered:
            reason = f"delivered {thr:.2f} req/s < 90% of offered {offered:g}"
        elif best is not None and thr < best[1] * (1 + gain):
            reason = f"throughput {thr:.2f} req/s rose < {gain:.0%} over the previous step"
        if reason:
            point = best if best is not None else (i, thr)
            return {
                "step": point[0],
                "label": steps[point[0]]["shape"]["label"],
                "request_throughput": point[1],
                "reason": f"step {i} ({st['shape']['label']}): {reason}",
            }
        best = (i, thr)
    return None


def _should_stop(cfg: RunConfig, done: list[StepResult]) -> bool:
    if not cfg.stop_at_saturation or len(done) < 2:
        return False
    steps = [
        {
            "shape": s.shape.to_dict(),
            "summary": summarize(s.records, s.duration_s, by_model=False),
        }
        for s in done
    ]
    return saturation_check(steps, cfg.saturation_gain) is not None


def _client_config(cfg: RunConfig, max_connections: int, tokenizer: Any) -> ClientConfig:
    return ClientConfig(
        cfg.url,
        api_key=cfg.api_key,
        headers=cfg.headers,
        timeout_s=cfg.timeout_s,
        connect_timeout_s=cfg.connect_timeout_s,
        max_connections=max_connections,
        tokenizer=tokenizer,
    )


def _max_connections(steps: list[LoadShape]) -> int:
    """Pool size: the largest number of requests any step keeps in flight (0 = unbounded,
    for an uncapped open loop)."""
    n = 0
    for s in steps:
        if s.concurrency is not None:
            n = max(n, s.concurrency)
        elif s.max_concurrency is not None:
            n = max(n, s.max_concurrency)
        else:
            return 0
    return n


async def _run_in_process(cfg: RunConfig, display: LiveDisplay) -> tuple[list[StepResult], int]:
    tokenizer = load_tokenizer(cfg.workload.tokenizer) if cfg.workload.tokenizer else None
    workload = make_workload(cfg.workload, tokenizer)  # one tokenizer: prompts and counts
    client = make_client(_client_config(cfg, _max_connections(cfg.steps), tokenizer), cfg.client)
    counters = Counters()
    display.start(lambda: [counters])
    results: list[StepResult] = []
    warm = 0
    try:
        if cfg.options.warmup_requests:
            shape = _warmup_shape(cfg)
            display.phase(-1, "warm-up", shape.num_requests, None)
            res = await run_step(client, workload, shape, cfg.options, counters, -1, warmup=True)
            warm = len(res.records)
        for i, shape in enumerate(cfg.steps):
            display.phase(i, shape.label, shape.num_requests, shape.duration_s)
            results.append(await run_step(client, workload, shape, cfg.options, counters, i))
            if _should_stop(cfg, results):
                break
    finally:
        await client.close()
    return results, warm


def _warmup_shape(cfg: RunConfig) -> LoadShape:
    first = cfg.steps[0]
    return LoadShape(
        concurrency=first.concurrency,
        rate=first.rate,
        burstiness=first.burstiness,
        max_concurrency=first.max_concurrency,
        num_requests=cfg.options.warmup_requests,
    )


# -- worker processes --------------------------------------------------------------------------


class _Worker:
    """One child process and the protocol lines it speaks (see bench.harness.worker)."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.proc = proc
        self.counters = Counters()
        self.done: asyncio.Future[tuple[str, float, float]] | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().strip()
            kind, _, rest = line.partition(" ")
            if kind == "P":
                done, errors, inflight = (int(x) for x in rest.split())
                self.counters.done, self.counters.errors = done, errors
                self.counters.inflight = inflight
            elif kind == "READY" and not self.ready.done():
                self.ready.set_result(None)
            elif kind == "DONE" and self.done is not None and not self.done.done():
                path, started, ended = rest.split()
                self.done.set_result((path, float(started), float(ended)))
            elif kind == "ERROR":
                exc = BenchError(f"worker {self.index}: {rest}")
                for fut in (self.ready, self.done):
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
        exc = BenchError(f"worker {self.index} exited (code {await self.proc.wait()})")
        for fut in (self.ready, self.done):
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")


async def _run_workers(cfg: RunConfig, display: LiveDisplay) -> tuple[list[StepResult], int]:
    payload = cfg.to_json()
    payload["api_key"] = cfg.api_key
    payload["headers"] = cfg.headers
    workers: list[_Worker] = []
    tmp = Path(tempfile.mkdtemp(prefix="raygent-bench-"))
    try:
        for i in range(cfg.workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.harness.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            w = _Worker(i, proc)
            w.reader = asyncio.create_task(w.read())
            w.send(json.dumps({"config": payload, "index": i, "tmp": str(tmp)}))
            workers.append(w)
        await asyncio.gather(*(w.ready for w in workers))
        display.start(lambda: [w.counters for w in workers])
        warm = 0
        if cfg.options.warmup_requests:
            warm = len((await _worker_step(cfg, workers, -1, _warmup_shape(cfg), display)).records)
        results: list[StepResult] = []
        for i, shape in enumerate(cfg.steps):
            results.append(await _worker_step(cfg, workers, i, shape, display))
            if _should_stop(cfg, results):
                break
        for w in workers:
            w.send("BYE")
        return results, warm
    finally:
        await _stop_workers(workers)
        shutil.rmtree(tmp, ignore_errors=True)  # noqa: ASYNC240 -- a few small files, at exit


async def _worker_step(
    cfg: RunConfig, workers: list[_Worker], index: int, shape: LoadShape, display: LiveDisplay
) -> StepResult:
    loop = asyncio.get_running_loop()
    start_at = time.perf_counter() + _START_LEAD_S
    for w in workers:
        w.done = loop.create_future()
        w.counters = Counters()
    display.phase(
        index, shape.label if index >= 0 else "warm-up", shape.num_requests, shape.duration_s
    )
    for w in workers:
        w.send(json.dumps({"step": index, "start_at": start_at, "shape": shape.to_dict()}))
    outs = await asyncio.gather(*(w.done for w in workers if w.done is not None))
    records: list[RequestRecord] = []
    starts, ends = [], []
    for path, started, ended in outs:
        if path != "-":
            rows = json.loads(Path(path).read_bytes())  # noqa: ASYNC240 -- local, after the step
            records.extend(RequestRecord.from_dict(r) for r in rows)
            starts.append(started)
            ends.append(ended)
    started = min(starts, default=start_at)
    return StepResult(shape, records, started, max(ends, default=started))


async def _stop_workers(workers: list[_Worker]) -> None:
    for w in workers:
        if w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if w.proc.stdin is not None:
                    w.proc.stdin.close()
                try:
                    await asyncio.wait_for(w.proc.wait(), 5)
                except asyncio.TimeoutError:
                    w.proc.kill()
                    await w.proc.wait()
        if w.reader is not None:
            w.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, BenchError):
                await w.reader


def shape_from_dict(d: dict[str, Any]) -> LoadShape:
    """Inverse of :meth:`LoadShape.to_dict` (``"inf"`` rates included)."""
    rate = d.get("rate")
    return LoadShape(
        concurrency=d.get("concurrency"),
        rate=math.inf if rate == "inf" else rate,
        burstiness=d.get("burstiness", 1.0),
        max_concurrency=d.get("max_concurrency"),
        duration_s=d.get("duration_s"),
        num_requests=d.get("num_requests"),
    )
