"""The load generator: one event loop drives a load shape and collects a record per request.

Shapes (:class:`LoadShape`):

* **closed loop** -- ``concurrency`` slots; each sends its next job as soon as the previous one
  finished. Measures capacity at a fixed number of users.
* **open loop** -- jobs arrive at ``rate`` per second (Poisson, or gamma with ``burstiness``,
  see :mod:`bench.harness.arrivals`), regardless of how fast the server answers, optionally
  capped at ``max_concurrency`` in flight (a job over the cap waits; the wait is ``queue_s``
  and is *not* part of TTFT, as in vLLM).

A step ends after ``num_requests`` requests or, with ``duration_s``, when no new job may start
(in-flight ones are awaited: they count). Its duration is from the moment dispatching began
to the end of the last response -- ``vllm bench serve``'s definition.

Warm-up (:class:`RunOptions`): ``warmup_requests`` are sent with the first step's shape
before it and dropped from the results (counted in ``meta``).

Every task has an owner: the step keeps its tasks in a set and, if cancelled (Ctrl-C), cancels
and awaits them before re-raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.harness.arrivals import GammaArrivals, arrival_offsets
from bench.harness.client import Client
from bench.harness.errors import ConfigError
from bench.harness.metrics import RequestRecord
from bench.harness.workload import Job, Workload, build_body

__all__ = ["Counters", "LoadShape", "RunOptions", "StepResult", "run_step", "split_shape"]

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass
class LoadShape:
    """How requests are paced in one step (see the module docstring).

    Exactly one of ``concurrency`` (closed loop) and ``rate`` (open loop) is set, and one or
    both of ``duration_s`` and ``num_requests`` (whichever comes first ends the step).
    """

    concurrency: int | None = None
    rate: float | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    duration_s: float | None = None
    num_requests: int | None = None

    def validate(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ConfigError(
                "choose one load shape: --concurrency N (closed loop) or --rate R (open loop) "
                f"(got concurrency={self.concurrency}, rate={self.rate})"
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1 (got {self.concurrency})")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"--rate must be > 0 (got {self.rate})")
        if self.duration_s is None and self.num_requests is None:
            raise ConfigError("set --duration SECONDS or --num-requests N")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration must be > 0 s (got {self.duration_s})")
        if self.num_requests is not None and self.num_requests < 1:
            raise ConfigError(f"--num-requests must be >= 1 (got {self.num_requests})")
        if self.rate is not None and math.isinf(self.rate) and self.num_requests is None:
            raise ConfigError("--rate inf sends everything at once: it needs --num-requests")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError(f"--max-concurrency must be >= 1 (got {self.max_concurrency})")

    @property
    def label(self) -> str:
        if self.concurrency is not None:
            return f"concurrency {self.concurrency}"
        cap = f" (max {self.max_concurrency})" if self.max_concurrency else ""
        rate = "inf" if math.isinf(self.rate or 0) else f"{self.rate:g}"
        return f"rate {rate}/s{cap}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["label"] = self.label
        if self.rate is not None and math.isinf(self.rate):
            out["rate"] = "inf"
        return out


@dataclass
class RunOptions:
    """What every request of a run shares."""

    endpoint: str = "chat"
    stream: bool = True
    ignore_eos: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)
    warmup_requests: int = 0
    seed: int = 0
    keep_text: bool = False


@dataclass
class Counters:
    """Live figures for the progress display; updated by the runner, read by the display."""

    done: int = 0
    errors: int = 0
    inflight: int = 0
    step: int = 0
    step_label: str = ""
    total: int | None = None
    step_started: float = 0.0
    duration_s: float | None = None


@dataclass
class StepResult:
    """The records of one step and the instants it began dispatching and ended."""

    shape: LoadShape
    records: list[RequestRecord]
    started: float
    ended: float

    @property
    def duration_s(self) -> float:
        return self.ended - self.started


class _Step:
    """One step's state: owns the job tasks, the records and the stop condition."""

    def __init__(
        self,
        client: Client,
        workload: Workload,
        shape: LoadShape,
        opts: RunOptions,
        counters: Counters,
        step: int,
        worker: int,
        warmup: bool,
    ) -> None:
        self.client = client
        self.workload = workload
        self.shape = shape
        self.opts = opts
        self.counters = counters
        self.step = step
        self.worker = worker
        self.warmup = warmup
        self.records: list[RequestRecord] = []
        self.remaining = shape.num_requests if shape.num_requests is not None else math.inf
        self.deadline = math.inf
        self.path = PATHS[opts.endpoint]
        self.sem = asyncio.Semaphore(shape.max_concurrency) if shape.max_concurrency else None

    def _take(self) -> Job | None:
        """The next job, or None when the step must not start another."""
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return None
        job = self.workload.next_job()
        self.remaining -= len(job.turns)
        return job

    async def run_job(self, job: Job, arrival: float) -> None:
        history: list[dict[str, Any]] = []
        ok = True
        multi = len(job.turns) > 1
        c = self.counters
        for turn in range(len(job.turns)):
            body, messages = build_body(
                job,
                turn,
                history,
                self.opts.endpoint,
                self.opts.stream,
                self.opts.ignore_eos,
                self.opts.extra_body,
            )
            rec = RequestRecord(
                model=job.model,
                step=self.step,
                worker=self.worker,
                conversation=job.id if multi else -1,
                turn=turn,
                repeated=job.repeated,
                warmup=self.warmup,
            )
            c.inflight += 1
            try:
                await self.client.send(self.path, body, self.opts.stream, rec)
            finally:
                c.inflight -= 1
            if turn == 0:
                rec.queue_s = max(0.0, rec.start_s - arrival)
            c.done += 1
            self.records.append(rec)
            if not rec.ok:
                c.errors += 1
                ok = False
                break
            if multi:
                history = [*messages, {"role": "assistant", "content": rec.text}]
            if not self.opts.keep_text:
                rec.text = ""
        if ok:
            self.workload.completed(job)

    async def _limited(self, job: Job, arrival: float) -> None:
        if self.sem is None:
            await self.run_job(job, arrival)
            return
        async with self.sem:
            await self.run_job(job, arrival)

    async def closed_loop(self) -> None:
        async def slot() -> None:
            while (job := self._take()) is not None:
                await self.run_job(job, time.perf_counter())

        n = self.shape.concurrency or 1
        if self.shape.num_requests is not None:
            n = min(n, self.shape.num_requests)
        await asyncio.gather(*(slot() for _ in range(n)))

    async def open_loop(self) -> None:
        shape = self.shape
        rate = shape.rate or math.inf
        t0 = time.perf_counter()
        if shape.num_requests is not None:  # fixed count: rescaled like vLLM's
            offsets: Any = iter(
                arrival_offsets(
                    rate, shape.num_requests, shape.burstiness, self.opts.seed, normalize=True
                )
            )
        else:
            gaps = GammaArrivals(rate, shape.burstiness, self.opts.seed)

            def lazy() -> Any:
                t = 0.0
                while True:
                    t += next(gaps)
                    yield t

            offsets = lazy()
        tasks: set[asyncio.Task[None]] = set()
        try:
            for offset in offsets:
                delay = t0 + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                job = self._take()
                if job is None:
                    break
                task = asyncio.create_task(self._limited(job, time.perf_counter()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*tasks, return_exceptions=True)


async def run_step(
    client: Client,
    workload: Workload,
    shape: LoadShape,
    opts: RunOptions,
    counters: Counters | None = None,
    step: int = 0,
    worker: int = 0,
    warmup: bool = False,
    start_at: float | None = None,
) -> StepResult:
    """Drive ``shape`` against ``client`` until the step ends; return every request's record.

    Args:
        start_at: a ``perf_counter`` instant to begin at (several worker processes start a
            step together this way); now when None.
        warmup: mark the records as warm-up (the caller drops them).
    """
    shape.validate()
    counters = counters if counters is not None else Counters()
    if start_at is not None and (delay := start_at - time.perf_counter()) > 0:
        await asyncio.sleep(delay)
    s = _Step(client, workload, shape, opts, counters, step, worker, warmup)
    started = time.perf_counter()
    counters.step_started = started
    if shape.duration_s is not None:
        s.deadline = started + shape.duration_s
    if shape.concurrency is not None:
        await s.closed_loop()
    else:
        await s.open_loop()
    ended = max((r.start_s + (r.done_s or 0.0) for r in s.records), default=time.perf_counter())
    return StepResult(shape, s.records, started, max(ended, started))


def split_shape(shape: LoadShape, workers: int, index: int) -> LoadShape | None:
    """Worker ``index``'s share of ``shape`` among ``workers`` processes (None: no share).
    Concurrency, request count and the concurrency cap are divided as evenly as integers
    allow; the rate is divided evenly (the sum of independent Poisson processes is Poisson)."""

    def part(n: int | None) -> int | None:
        if n is None:
            return None
        return n // workers + (1 if index < n % workers else 0)

    out = replace(
        shape,
        concurrency=part(shape.concurrency),
        rate=shape.rate / workers if shape.rate is not None else None,
        max_concurrency=part(shape.max_concurrency),
        num_requests=part(shape.num_requests),
    )
    if out.concurrency == 0 or out.num_requests == 0 or out.max_concurrency == 0:
        return None
    return out
