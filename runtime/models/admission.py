"""Admission control in front of one engine: bounded work, a short queue, fast refusals.

An engine that takes every request it is offered serves none of them well once the offer
passes its capacity: each new request joins the running batch, every step gets slower, and
latency grows without bound while throughput stays flat. So each process that holds an
engine admits at most ``max_inflight`` requests to it at once (the concurrency past which
throughput stops rising), and lets a few more wait -- but only as long as this gate predicts
it can start them soon::

    request ─► slot free? ──yes──► engine ─► release() hands the slot to the next waiter
                  │ no
                  ▼
      predicted wait = (waiters ahead + 1) / drain rate
                  │
        ≤ max_queue_wait_s ──► queue (interactive ahead of batch) ──► slot
        >                  ──► Overloaded at once: 429 + Retry-After = predicted wait

The **drain rate** is measured, not configured: the slots released per second over the last
:data:`DRAIN_WINDOW_S`. Until there is a measurement (a cold gate, or one that sat idle),
``max_inflight`` more requests may queue. ``Retry-After`` is the predicted wait of one more
request, rounded up to whole seconds (what the header can say).

**Priorities.** ``batch`` requests queue only while the predicted wait is within
``batch_queue_share`` of the bound, and every queued interactive request starts before any
queued batch one, so under contention batch work is shed first and interactive work keeps its
latency.

A refusal costs no engine work and no await: it is decided on arrival, which is what keeps
refusals fast under overload (the caller can retry elsewhere at once). A request admitted to
the queue keeps its place until a slot frees, its client goes away (cancellation), or its
own deadline passes (``timeout_s``, then it is refused): a queued request was promised a
start, and refusing it later -- the first version gave up at twice the bound -- turned a
fluctuation of the drain into one-second refusals (measured at 3x overload: p99 1.1 s).

Example:
    >>> gate = AdmissionGate("default", max_inflight=2, max_queue_wait_s=1.0)
    >>> async def answer():  # doctest: +SKIP
    ...     async with gate.slot("interactive"):
    ...         ...  # the engine works on the request
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from agents.errors import Overloaded

__all__ = [
    "CPU_INFLIGHT_PER_CORE",
    "DRAIN_WINDOW_S",
    "AdmissionGate",
    "Priority",
    "default_max_inflight",
]

Priority = Literal["interactive", "batch"]

DRAIN_WINDOW_S = 10.0
"""Seconds of slot releases the drain rate is measured over."""

_MAX_RETRY_AFTER_S = 60.0

CPU_INFLIGHT_PER_CORE = 16
"""Requests per core a CPU engine works on at once by default: on 2 cores the tiny model's
throughput rises by under 10 % from 16 to 32 concurrent requests while TTFT grows."""


def default_max_inflight(max_num_seqs: int, cpu_cores: int | None) -> int:
    """``admission.max_inflight`` when unset: the engine's batch (``max_num_seqs``), and on a
    CPU engine (``cpu_cores`` given) no more than :data:`CPU_INFLIGHT_PER_CORE` per core."""
    if cpu_cores is None:
        return max_num_seqs
    return max(1, min(max_num_seqs, CPU_INFLIGHT_PER_CORE * cpu_cores))


class AdmissionGate:
    """At most ``max_inflight`` requests at once, a queue bounded by predicted wait.

    Args:
        name: what the gate guards (a model name), for messages and metrics.
        max_inflight: slots: requests admitted to the engine at once.
        max_queue_wait_s: the longest predicted wait a request may queue for; 0 disables
            the queue (a request either gets a slot at once or is refused).
        batch_queue_share: the share of ``max_queue_wait_s`` batch requests may queue for.
        clock: monotonic seconds (tests inject one).
        on_refuse: called with the priority of each refused request (a metric).
    """

    def __init__(
        self,
        name: str,
        max_inflight: int,
        max_queue_wait_s: float,
        batch_queue_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_refuse: Callable[[Priority], None] | None = None,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.name = name
        self.max_inflight = max_inflight
        self.max_queue_wait_s = max_queue_wait_s
        self.batch_queue_share = batch_queue_share
        self._clock = clock
        self._on_refuse = on_refuse
        self.inflight = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {
            "interactive": collections.deque(),
            "batch": collections.deque(),
        }
        self._released: collections.deque[float] = collections.deque()
        self._born = clock()

    # -- state -----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return sum(len(q) for q in self._waiting.values())

    def drain_rate(self) -> float:
        """Slots released per second over the last :data:`DRAIN_WINDOW_S` (or since the gate
        was made, when that is shorter; at least a second); 0.0 when none were."""
        now = self._clock()
        released = self._released
        while released and released[0] < now - DRAIN_WINDOW_S:
            released.popleft()
        span = max(1.0, min(DRAIN_WINDOW_S, now - self._born))
        return len(released) / span

    def predicted_wait_s(self, ahead: int) -> float:
        """Seconds until a request with ``ahead`` waiters in front of it gets a slot."""
        rate = self.drain_rate()
        if rate <= 0.0:
            # Nothing measured yet: as many may queue as there are slots, then none.
            return 0.0 if ahead < self.max_inflight else math.inf
        return (ahead + 1) / rate

    # -- admission -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(
        self, priority: Priority = "interactive", timeout_s: float | None = None
    ) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``; wait in the queue at most
        ``timeout_s`` (the request's own deadline; None: until a slot frees).

        Raises:
            Overloaded: no slot now and the predicted wait is over the bound (at once), or
                ``timeout_s`` passed in the queue (retryable: ``retry_after_s``).
        """
        await self._acquire(priority, timeout_s)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: Priority, timeout_s: float | None) -> None:
        if self.inflight < self.max_inflight and not self._ahead_of(priority):
            self.inflight += 1
            return
        ahead = self._ahead_of(priority)
        wait = self.predicted_wait_s(ahead)
        bound = self.max_queue_wait_s * (
            1.0 if priority == "interactive" else self.batch_queue_share
        )
        if bound <= 0 or wait > bound:
            raise self._refuse(priority, wait)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except asyncio.TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the slot arrived as the timer fired: keep it
            waiter.cancel()
            raise self._refuse(priority, self.predicted_wait_s(self.queued)) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot while being cancelled: pass it on
            else:
                waiter.cancel()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiting[priority].remove(waiter)

    def _ahead_of(self, priority: Priority) -> int:
        """Waiters that would start before a new request of ``priority``."""
        interactive = len(self._waiting["interactive"])
        return (
            interactive if priority == "interactive" else interactive + len(self._waiting["batch"])
        )

    def _release(self) -> None:
        self._released.append(self._clock())
        for queue in (self._waiting["interactive"], self._waiting["batch"]):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes on: inflight is unchanged
                    return
        self.inflight -= 1

    def stats(self) -> dict[str, object]:
        """Limit, occupancy, queue, drain rate and refusals so far (for ``stats()``)."""
        return {
            "max_inflight": self.max_inflight,
            "inflight": self.inflight,
            "queued": self.queued,
            "drain_rate": round(self.drain_rate(), 3),
            "rejected": dict(self.rejected),
        }

    def _refuse(self, priority: Priority, wait_s: float) -> Overloaded:
        self.rejected[priority] += 1
        if self._on_refuse is not None:
            self._on_refuse(priority)
        retry = min(_MAX_RETRY_AFTER_S, wait_s) if math.isfinite(wait_s) else 1.0
        return Overloaded(
            self.name,
            inflight=self.inflight,
            queued=self.queued,
            retry_after_s=max(1.0, math.ceil(retry)),
        )
