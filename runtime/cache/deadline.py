"""The deadline of one Redis call: time Redis had to answer, not time our event loop was away.

Why not ``asyncio.timeout(T)``: it fires once T of wall time has passed, whatever the loop did
meanwhile. A gateway replica's loop also runs the engine's output processing, HTTP parsing and
rendering; on a busy 2-core machine one loop iteration can take tens of milliseconds, and the
process itself is preempted. The reply is then in the socket buffer, and the coroutine that
would read it has not run yet: the timer and the reader's wake-up come due in the same
iteration, and the timer's cancel wins. ``python -m bench.cache_load`` measures it: with the
loop busy, a warm Redis GET as a coroutine sees it takes 60-110 ms, while Redis answers in well
under one (a GET resumes the caller through ~4 loop iterations). Those timeouts say nothing
about Redis.

How (:class:`Deadline`, pure, so tests drive it with an injected clock): while the call waits,
a timer ticks every ``tick_s`` and measures how late it fires -- the loop's own lag, the one
thing a timer measures for free. Only ticks that fire on time (at most ``slack_s`` late) count
towards ``budget_s``: that was time the loop was polling the socket. A late tick counts nothing:
the loop was elsewhere, and a reply may be sitting unread.

=====================================================  =====================================
a tick finds                                           then
=====================================================  =====================================
the loop on time, less than ``budget_s`` counted       count the tick; tick again
the loop late                                          count nothing; tick again
``budget_s`` counted, the loop on time                 expired -- but only on the tick
                                                       *after* the one that completed the
                                                       budget, so that one more poll of the
                                                       socket has run (a reply that came in
                                                       the iteration before is read first, on
                                                       asyncio's loop and on uvloop alike)
``cap_s`` of wall time since the start                 expired, whatever the loop did: a loop
                                                       that never catches up must not hold a
                                                       request forever
=====================================================  =====================================

A call that finishes in time never sees a tick (the first comes after ``tick_s``): the cost
falls on slow calls only. A timeout is not blame: whether it counts against Redis is the
breaker's decision (:meth:`~runtime.cache.core.ResponseCache._call`: only when Redis answered
no other call while this one waited).

Example (a 2 s budget in 1 s ticks, to keep the numbers round):
    >>> d = Deadline(budget_s=2.0, tick_s=1.0, slack_s=0.5, cap_s=100.0, start=0.0)
    >>> d.check(3.0)  # 2 s late: the loop was busy; counts nothing
    4.0
    >>> d.check(4.0), d.check(5.0), d.credit_s  # on time twice: the budget is counted
    (5.0, 6.0, 2.0)
    >>> d.check(6.0) is None  # on time once more, after the budget: expired
    True
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Deadline", "DeadlineExpired", "DeadlinePolicy", "run_within"]

T = TypeVar("T")


class DeadlineExpired(TimeoutError):
    """A backend call did not finish within its deadline. Recoverable: the request goes
    uncached.

    Attributes:
        waited_s: wall time from the start of the call to its cancellation.
        loop_late: some tick found the event loop late (the wait was stretched for it).
        capped: the wall-clock cap ended it, not the budget.
    """

    def __init__(self, waited_s: float, loop_late: bool, capped: bool) -> None:
        super().__init__(f"no answer within {waited_s * 1000:.0f} ms")
        self.waited_s = waited_s
        self.loop_late = loop_late
        self.capped = capped


@dataclass(frozen=True)
class DeadlinePolicy:
    """The numbers of a :class:`Deadline` (seconds; see the module docstring)."""

    budget_s: float
    tick_s: float
    slack_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not 0 < self.budget_s <= self.cap_s:
            raise ValueError(f"need 0 < budget_s <= cap_s, got {self.budget_s}, {self.cap_s}")
        if self.tick_s <= 0 or self.slack_s < 0:
            raise ValueError(f"need tick_s > 0 and slack_s >= 0, got {self}")


class Deadline:
    """One call's deadline: when to look next, what has counted, whether it has expired.

    Args:
        budget_s: loop-on-time seconds Redis has to answer.
        tick_s: how often the loop's lag is sampled while the call waits.
        slack_s: timer lateness that still counts as "on time".
        cap_s: wall-clock bound of the whole call.
        start: loop time at the start of the call.

    Attributes:
        due: loop time of the next look.
        credit_s: on-time seconds counted so far.
        loop_late: some look found the loop late.
        capped: ``cap_s`` ended it.
    """

    def __init__(
        self, *, budget_s: float, tick_s: float, slack_s: float, cap_s: float, start: float
    ) -> None:
        self.credit_s = 0.0
        self.loop_late = False
        self.capped = False
        self._budget_s = budget_s
        self._tick_s = tick_s
        self._slack_s = slack_s
        self._end = start + cap_s
        self._armed = start
        self._final = False  # the budget is spent: the next on-time look expires
        self.due = min(start + min(tick_s, budget_s), self._end)

    def check(self, now: float) -> float | None:
        """The timer set for :attr:`due` fired at ``now``: the next time to look, or None when
        the call has expired."""
        if now >= self._end:
            self.capped = True
            return None
        on_time = now - self.due <= self._slack_s
        if not on_time:
            self.loop_late = True
        elif self._final:
            return None
        else:
            self.credit_s += self.due - self._armed
            self._final = self.credit_s >= self._budget_s - 1e-9
        step = self._tick_s if self._final else min(self._tick_s, self._budget_s - self.credit_s)
        self._armed = now
        self.due = min(now + step, self._end)
        return self.due


async def run_within(policy: DeadlinePolicy, op: Callable[[], Awaitable[T]]) -> T:
    """``await op()`` under a :class:`Deadline`.

    Raises:
        DeadlineExpired: the deadline expired (the op was cancelled).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    if sys.version_info < (3, 11):  # no Task.uncancel: a plain wall-clock deadline
        try:
            return await asyncio.wait_for(op(), policy.budget_s)
        except asyncio.TimeoutError:
            raise DeadlineExpired(loop.time() - start, False, False) from None
    d = Deadline(
        budget_s=policy.budget_s,
        tick_s=policy.tick_s,
        slack_s=policy.slack_s,
        cap_s=policy.cap_s,
        start=start,
    )
    # asyncio.timeout does the cancelling (and tells our cancel from anybody else's); the
    # ticks only decide when it fires.
    try:
        async with asyncio.timeout(None) as timeout:

            def tick() -> None:
                nonlocal handle
                nxt = d.check(loop.time())
                if nxt is None:
                    timeout.reschedule(loop.time())
                else:
                    handle = loop.call_at(nxt, tick)

            handle = loop.call_at(d.due, tick)
            try:
                return await op()
            finally:
                handle.cancel()
    except TimeoutError:
        if timeout.expired():
            raise DeadlineExpired(loop.time() - start, d.loop_late, d.capped) from None
        raise
