"""A bounded await that runs in the caller's task: :func:`within`.

``asyncio.wait_for`` on Python 3.10 and 3.11 runs what it awaits in a new task. That costs
two trips through the event loop's ready queue (the task's first step, then waking the
caller when it is done), and on a busy loop each trip waits behind every callback that is
ready: in the gateway under three times its capacity, the loop turns every 10-30 ms, and a
request refused on arrival spent most of its time in those trips. Python 3.12 rebuilt
``wait_for`` on ``asyncio.timeout`` for this reason; :func:`within` does the same on 3.11 and
falls back to ``wait_for`` on 3.10, which has no ``asyncio.timeout``.

The semantics are ``wait_for``'s: ``TimeoutError`` once ``timeout_s`` passes (the awaitable
is cancelled first, as its own task would have been), no bound when it is None.
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
