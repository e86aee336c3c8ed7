"""Background loops with an owner: started, watched, restarted when they die, awaited on close.

A replica runs a few loops for its whole life: the registry's membership and state feeds, a
task queue's claimers and lease reaper. Each is an ``async`` function meant never to return.
If one dies on an error nobody expected, it must not die silently: a membership feed that
stopped leaves its replica routing to the dead, a claimer that stopped leaves a queue unworked
while the replica still looks healthy. :class:`Loops` is their one owner:

* it logs the error with the loop's name and starts the loop again after a jittered,
  exponential backoff (:func:`backoff`): a loop that fails at once every time does not spin;
* a loop that ran for a while before it failed starts over from the short delay;
* a loop that ends on a ``CancelledError`` that was not sent to its owner is restarted too.
  Each run is a task of its own, under the watch's: a cancel that library code sends to the task
  it runs in (the run's), or re-raises on its own (the task queue re-raises a cancel that
  redis-py's ``wait_for`` swallowed, and has once seen one mid-failover of a Redis Cluster that
  no caller sent), ends the run, not the watch; only ``close()``, or a cancel of the watch itself
  (the event loop shutting down), ends the loop;
* a loop that returns is finished, and is not started again;
* ``close()`` cancels every loop and waits until each has ended.

``restarts`` counts the restarts by loop name, for ``stats()`` and tests.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["Loops", "backoff"]

log = logging.getLogger(__name__)


def backoff(first_s: float, max_s: float) -> Iterator[float]:
    """Delays for retry after retry: "equal jitter" (uniform in [d/2, d]) over an exponential
    ``d`` = first_s, 2 x first_s, ... up to ``max_s``, so that callers which failed together do
    not retry together, and none retries at once."""
    delay = first_s
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(delay * 2, max_s)


class Loops:
    """The owner of an object's long-running tasks.

    Args:
        owner: named in the log lines (e.g. ``"cluster client gateway/1"``).
        first_backoff_s: the wait before the first restart of a failed loop.
        max_backoff_s: the longest wait between restarts; a loop that ran this long before it
            failed is restarted after ``first_backoff_s`` again.
    """

    def __init__(self, owner: str, first_backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        self._owner = owner
        self._first_s = first_backoff_s
        self._max_s = max_backoff_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self.restarts: collections.Counter[str] = collections.Counter()

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` under watch as ``name`` on the running loop; the name of a loop that
        is still running may not be used again."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"{self._owner}: a loop named {name!r} is already running")
        self._tasks[name] = asyncio.create_task(self._watch(name, run), name=f"raygent-{name}")

    def running(self) -> list[str]:
        """The loops that have not ended (a finished or closed loop is not listed)."""
        return [name for name, t in self._tasks.items() if not t.done()]

    async def close(self) -> None:
        """Cancel every loop and wait for them to end. Safe to call twice."""
        self._closing = True
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _watch(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        watch = asyncio.current_task()
        delays = backoff(self._first_s, self._max_s)
        while True:
            started = loop.time()
            attempt = asyncio.ensure_future(run())
            try:
                await attempt
                return
            except asyncio.CancelledError:
                # The watch's own cancel (close(), the event loop's shutdown) cancels the run it
                # awaits, and counts on the watch; a cancel that reached only the run does not.
                if self._closing or _cancel_requested(watch):
                    attempt.cancel()
                    raise
                error: BaseException | None = None
                why = "ended on a CancelledError its owner did not send"
            except Exception as exc:
                if self._closing or _cancel_requested(watch):
                    # Cancelled while the run failed, or while it failed to unwind (3.11's
                    # asyncio.Condition turns a cancel inside wait_for into RuntimeError):
                    # the cancel wins, or close() would wait on a loop that restarts.
                    raise asyncio.CancelledError from exc
                error, why = exc, "died"
            if loop.time() - started >= self._max_s:
                delays = backoff(self._first_s, self._max_s)
            wait = next(delays)
            self.restarts[name] += 1
            log.error(
                "%s: background loop %r %s; restarting it in %.2f s",
                self._owner,
                name,
                why,
                wait,
                exc_info=error,
            )
            await asyncio.sleep(wait)


def _cancel_requested(task: asyncio.Task[None] | None) -> bool:
    """Whether ``task`` itself was asked to cancel (Python 3.11's ``Task.cancelling()``);
    without that count (3.10), every cancel is taken as the owner's, as before."""
    counter = getattr(task, "cancelling", None)
    return counter is None or counter() > 0
