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
``batch_queue_share`` of the bound, so under overload batch work is shed first. Among queued
requests, freed slots go by weighted share (:class:`runtime.core.mailbox.WeightedShare`, the same
rule as an agent's mailbox): while both classes wait, interactive requests get
``interactive_share`` of the slots (0.7 by default), so interactive work keeps most of the
engine and batch work is never starved; 1.0 is strict priority.

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
from runtime.core.mailbox import WeightedShare

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

_OTHER: dict[Priority, Priority] = {"interactive": "batch", "batch": "interactive"}

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
        interactive_share: the share of freed slots interactive requests get while both
            classes wait, in (0, 1]; 1.0 is strict priority.
        clock: monotonic seconds (tests inject one).
        on_refuse: called with the priority of each refused request (a metric).
    """

    def __init__(
        self,
        name: str,
        max_inflight: int,
        max_queue_wait_s: float,
        batch_queue_share: float = 0.5,
        interactive_share: float = 0.7,
        clock: Callable[[], float] = time.monotonic,
        on_refuse: Callable[[Priority], None] | None = None,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.name = name
        self.max_inflight = max_inflight
        self.max_queue_wait_s = max_queue_wait_s
        self.batch_queue_share = batch_queue_share
        self._share = WeightedShare(interactive_share)
        self._clock = clock
        self._on_refuse = on_refuse
        self.inflight = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {
            "interactive": collections.deque(),
            "batch": collections.deque(),
        }
        self._released: collections.deque[float] = collections.deque()
        self._refused_at: collections.deque[float] = collections.deque()
        self._born = clock()

    # -- state -----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return sum(len(q) for q in self._waiting.values())

    def drain_rate(self) -> float:
        """Slots released per second over the last :data:`DRAIN_WINDOW_S` (or since the gate
        was made, when that is shorter; at least a second); 0.0 when none were."""
        return self._rate(self._released)

    def demand(self) -> float:
        """Requests this engine would hold if it refused none -- what queue-depth autoscaling
        sizes the model for (``runtime.serve.autoscaling``): those admitted and queued now, plus
        the refused ones by Little's law, their rate over the last :data:`DRAIN_WINDOW_S`
        times how long a request holds a slot (slots over drain rate; 1 s unmeasured)."""
        refused = self._rate(self._refused_at)
        drain = self.drain_rate()
        held_s = self.inflight / drain if drain > 0 else 1.0
        return self.inflight + self.queued + refused * held_s

    def _rate(self, events: collections.deque[float]) -> float:
        now = self._clock()
        while events and events[0] < now - DRAIN_WINDOW_S:
            events.popleft()
        return len(events) / max(1.0, min(DRAIN_WINDOW_S, now - self._born))

    def predicted_wait_s(self, ahead: float) -> float:
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

    def _ahead_of(self, priority: Priority) -> float:
        """Slots that go to others before a new request of ``priority`` gets one: its own
        class's waiters, stretched by the other class's share while that class waits too
        (never more than every waiter)."""
        mine, other = self._waiting[priority], self._waiting[_OTHER[priority]]
        if not other:
            return len(mine)
        share = self._share.share if priority == "interactive" else 1.0 - self._share.share
        everyone = len(mine) + len(other)
        return min(everyone, len(mine) / share) if share > 0 else everyone

    def _release(self) -> None:
        self._released.append(self._clock())
        while self.queued:
            waiter = self._next_waiter()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: inflight is unchanged
                return
        self.inflight -= 1

    def _next_waiter(self) -> asyncio.Future[None]:
        """The waiter a freed slot goes to: by weighted share while both classes wait."""
        fg, bg = self._waiting["interactive"], self._waiting["batch"]
        if fg and (not bg or self._share.first()):
            return fg.popleft()
        return bg.popleft()

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
        self._refused_at.append(self._clock())
        if self._on_refuse is not None:
            self._on_refuse(priority)
        retry = min(_MAX_RETRY_AFTER_S, wait_s) if math.isfinite(wait_s) else 1.0
        return Overloaded(
            self.name,
            inflight=self.inflight,
            queued=self.queued,
            retry_after_s=max(1.0, math.ceil(retry)),
        )
