"""A bounded await that runs in the caller's task: :func:`within`.

``asyncio.wait_for`` on Python 3.10 and 3.11 runs what it awaits in a new task: two trips
through the event loop's ready queue per call (the task's first step, then waking the
caller), each behind every callback that is ready, and a task object per call. A streamed
answer made three such calls before its first token (the gateway's wait for the first delta,
the model host's wait for its engine, then for the engine's first delta), and a refusal two.
Python 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``, with no task of its own;
:func:`within` does the same on 3.11 and falls back to ``wait_for`` on 3.10, which has no
``asyncio.timeout``. (On the 2-core test box, alternated runs at 32 concurrent streams and at
three times capacity showed no difference beyond run-to-run noise: the machine's CPU, not these
trips, sets those figures there.)

The semantics are ``wait_for``'s: ``TimeoutError`` once ``timeout_s`` passes (the awaitable
is cancelled first, as its own task would have been), no bound when it is None; one
difference: an awaitable that finishes without suspending returns its result even when the
deadline has already passed (``wait_for`` raised ``TimeoutError`` without running it).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def within(aw: Awaitable[T], timeout_s: float | None) -> T:
        """``await aw``, cancelled with ``TimeoutError`` after ``timeout_s`` seconds."""
        async with asyncio.timeout(timeout_s):
            return await aw

else:  # pragma: no cover - Python 3.10

    async def within(aw: Awaitable[T], timeout_s: float | None) -> T:
        """``await aw``, cancelled with ``TimeoutError`` after ``timeout_s`` seconds."""
        return await asyncio.wait_for(aw, timeout_s)
