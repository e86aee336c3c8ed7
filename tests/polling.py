"""``until``: the tests' one bounded wait for a condition that another task, thread or process
brings about (a deadline on the running loop, so a broken condition fails instead of hanging)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def until(predicate: Callable[[], T], timeout_s: float, poll_s: float = 0.02) -> T:
    """Poll ``predicate`` every ``poll_s`` until it is truthy; return that value. Fails the test
    after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (found := predicate()):
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(poll_s)
    return found
