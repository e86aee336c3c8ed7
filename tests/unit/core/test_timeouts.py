"""``runtime.core.timeouts.within``: ``wait_for``'s semantics (result, timeout, cancellation of
what it awaits, cancellation from outside) without a task of its own, so an answer that is
ready costs no trip through the event loop."""

from __future__ import annotations

import asyncio
import sys

import pytest

from runtime.core.timeouts import within


async def test_returns_the_result_and_runs_in_the_callers_task():
    caller = asyncio.current_task()

    async def answer():
        return asyncio.current_task()

    assert await within(answer(), 1.0) is caller
    assert await within(answer(), None) is caller


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 falls back to wait_for")
async def test_a_ready_answer_takes_no_trip_through_the_loop():
    """``wait_for`` on 3.11 runs the awaitable as a task: a callback scheduled first runs before
    the answer comes back. ``within`` answers before the loop runs anything else."""
    ran = []
    asyncio.get_running_loop().call_soon(ran.append, "other")

    async def ready():
        return "answer"

    assert await within(ready(), 1.0) == "answer"
    assert ran == []
    await asyncio.sleep(0)
    assert ran == ["other"]


async def test_times_out_and_cancels_what_it_awaited():
    cancelled = asyncio.Event()

    async def stuck():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await within(stuck(), 0.05)
    assert cancelled.is_set()


async def test_an_expired_deadline_still_lets_a_ready_answer_through():
    async def ready():
        return 7

    assert await within(ready(), 0.0) == 7
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(1), 0.0)


async def test_a_cancel_from_outside_is_a_cancel_not_a_timeout():
    started = asyncio.Event()

    async def waits():
        started.set()
        await within(asyncio.sleep(60), 30.0)

    task = asyncio.create_task(waits())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_async_generators_next_item_is_bounded_and_the_generator_closes():
    closed = []

    async def items():
        try:
            yield 1
            await asyncio.sleep(60)
            yield 2
        finally:
            closed.append(True)

    gen = items()
    assert await within(anext(gen), 1.0) == 1
    with pytest.raises(TimeoutError):
        await within(anext(gen), 0.05)
    assert closed == [True]
