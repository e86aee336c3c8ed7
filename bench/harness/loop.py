"""The event loop the harness runs on: uvloop when installed, else asyncio's.

uvloop roughly halves the client's CPU per request (its transports and timers are in C), which
is what keeps the harness from being the bottleneck on one core; everything still works on the
standard loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_available() -> bool:
    """Whether :func:`run_loop` will use uvloop (recorded in every result file)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop (uvloop where available)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
