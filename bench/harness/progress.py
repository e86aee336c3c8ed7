"""The live progress line: step, completed requests, current rate, in-flight, errors.

Drawn with rich, refreshed by one task of the run's loop four times a second (rich's own
refresh thread is not used: the loop owns every moving part). Disabled -- a no-op -- with
``--no-progress`` or when stderr is not a terminal, so CI logs stay clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable

from bench.harness.runner import Counters

__all__ = ["LiveDisplay"]

_PERIOD_S = 0.25
_RATE_WINDOW_S = 2.0


class LiveDisplay:
    """Sums a set of :class:`Counters` (one per worker) into one progress bar per step."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._get: Callable[[], list[Counters]] = list
        self._task: asyncio.Task[None] | None = None
        self._progress = None
        self._bar = None
        self._base = (0, 0)
        self._total: int | None = None
        self._duration: float | None = None
        self._t0 = 0.0
        self._hist: deque[tuple[float, int]] = deque()

    def start(self, counters: Callable[[], list[Counters]]) -> None:
        """Begin drawing; ``counters`` returns the live counters to sum."""
        self._get = counters
        if not self.enabled or self._task is not None:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
            transient=False,
        )
        self._progress.start()
        self._task = asyncio.create_task(self._loop())

    def phase(self, index: int, label: str, total: int | None, duration_s: float | None) -> None:
        """A new step begins: a new bar (by request count or by time)."""
        cs = self._get()
        self._base = (sum(c.done for c in cs), sum(c.errors for c in cs))
        self._total, self._duration = total, duration_s
        self._t0 = time.perf_counter()
        self._hist.clear()
        if self._progress is not None:
            if self._bar is not None:
                self._tick()
                self._progress.stop_task(self._bar)
            name = f"step {index}: {label}" if index >= 0 else label
            self._bar = self._progress.add_task(name, total=None, stats="")

    def _tick(self) -> None:
        if self._progress is None or self._bar is None:
            return
        cs = self._get()
        now = time.perf_counter()
        done = sum(c.done for c in cs) - self._base[0]
        errors = sum(c.errors for c in cs) - self._base[1]
        inflight = sum(c.inflight for c in cs)
        self._hist.append((now, done))
        while len(self._hist) > 2 and now - self._hist[0][0] > _RATE_WINDOW_S:
            self._hist.popleft()
        t_old, d_old = self._hist[0]
        rate = (done - d_old) / (now - t_old) if now > t_old else 0.0
        if self._total:
            completed, total = done, self._total
        elif self._duration:
            completed, total = min(now - self._t0, self._duration), self._duration
        else:
            completed, total = done, None
        err_style = "red" if errors else "green"
        stats = (
            f"{done} done  {rate:7.1f} req/s  {inflight} in flight  "
            f"[{err_style}]{errors} errors[/{err_style}]"
        )
        self._progress.update(self._bar, completed=completed, total=total, stats=stats)
        self._progress.refresh()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(_PERIOD_S)
            self._tick()

    async def stop(self) -> None:
        """Draw the last state and stop. Safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._progress is not None:
            self._tick()
            self._progress.stop()
            self._progress = None
