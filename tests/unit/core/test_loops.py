"""``runtime.core.loops``: a background loop that dies is logged and started again, one that returns
is done, ``close()`` waits for every loop; and the owners that use it (a task queue's claimer)
keep working through a failure."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass

import pytest

from agents import Agent, Context, TaskState, handler
from runtime import LocalRuntime, RaygentConfig
from runtime.core.loops import Loops, backoff
from runtime.queues import InProcessTaskQueue
from tests import polling


def until(predicate):
    return polling.until(predicate, timeout_s=10.0)


def test_backoff_doubles_up_to_its_cap_with_jitter():
    delays = list(itertools.islice(backoff(0.1, 0.5), 6))
    bounds = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert all(b / 2 <= d <= b for d, b in zip(delays, bounds, strict=True))
    assert len(set(delays)) > 1  # jittered, not a fixed ladder


async def test_a_loop_that_dies_is_logged_and_started_again(caplog):
    loops = Loops("unit owner", first_backoff_s=0.01, max_backoff_s=0.05)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        await asyncio.Event().wait()  # then runs for good

    with caplog.at_level(logging.ERROR, logger="runtime.core.loops"):
        loops.start("feed", flaky)
        await until(lambda: runs == 3)
    assert loops.restarts["feed"] == 2
    assert loops.running() == ["feed"]
    died = [r for r in caplog.records if "'feed' died" in r.getMessage()]
    assert len(died) == 2 and "unit owner" in died[0].getMessage()
    assert died[0].exc_info is not None and "boom 1" in str(died[0].exc_info[1])
    await loops.close()
    assert loops.running() == []


async def test_a_loop_that_returns_is_done_and_close_waits_for_the_others():
    loops = Loops("unit owner", first_backoff_s=0.01)
    finished: list[str] = []

    async def once() -> None:
        finished.append("once")

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)  # cleanup that takes a turn of the loop
            finished.append("forever")

    loops.start("once", once)
    loops.start("forever", forever)
    await until(lambda: loops.running() == ["forever"])
    with pytest.raises(ValueError, match="already running"):
        loops.start("forever", forever)
    await loops.close()
    assert finished == ["once", "forever"] and loops.restarts == {}
    await loops.close()  # twice is fine


async def test_a_loop_cancelled_by_nobody_that_owns_it_is_started_again(caplog):
    """Library code in a run may cancel the task it runs in, or re-raise a cancel it thinks it
    swallowed (the Redis task queue does, and once saw one mid-failover that no caller sent):
    the loop must not end as if its owner had closed it."""
    loops = Loops("unit owner", first_backoff_s=0.01, max_backoff_s=0.05)
    runs = 0

    async def claimer() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            asyncio.current_task().cancel()  # what a library could do to "its" task
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="runtime.core.loops"):
        loops.start("claim", claimer)
        await until(lambda: runs == 2)
    assert loops.restarts["claim"] == 1 and loops.running() == ["claim"]
    assert any("did not send" in r.getMessage() for r in caplog.records)
    await loops.close()
    assert loops.running() == [] and runs == 2  # close() ends it for good


async def test_a_loop_whose_run_fails_as_it_is_cancelled_is_not_started_again(caplog):
    """A run whose cancel comes out as another error (3.11's ``asyncio.Condition`` in a
    ``wait_for`` can raise RuntimeError instead): close() ends it instead of restarting it."""
    runs = []

    async def unwinds_badly():
        runs.append(1)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("Lock is not acquired.") from None

    loops = Loops("owner", first_backoff_s=0.01, max_backoff_s=0.05)
    loops.start("feed", unwinds_badly)
    await until(lambda: runs)
    closing = asyncio.ensure_future(loops.close())
    done, _ = await asyncio.wait({closing}, timeout=5)  # not wait_for: its cancel would hang too
    assert done, f"close() did not return; the loop restarted {loops.restarts['feed']} times"
    assert runs == [1] and loops.running() == [] and loops.restarts["feed"] == 0
    assert "restarting" not in caplog.text


def test_the_event_loops_shutdown_still_ends_every_loop():
    """``asyncio.run`` cancels the tasks left when its main coroutine returns: a cancel of the
    watch itself, which must end the loop (not restart it and hang the shutdown)."""
    ended: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("forever")

    async def main() -> Loops:
        loops = Loops("unit owner", first_backoff_s=0.01)
        loops.start("forever", forever)
        await asyncio.sleep(0.01)
        return loops  # never closed: the shutdown cancels it

    done: list[Loops] = []
    shutdown = threading.Thread(target=lambda: done.append(asyncio.run(main())), daemon=True)
    shutdown.start()
    shutdown.join(10.0)  # only there so that a bug fails the test instead of hanging it
    assert not shutdown.is_alive(), "the event loop's shutdown hung on a restarted loop"
    assert ended == ["forever"] and done[0].restarts == {}


@dataclass
class Job:
    n: int


class Doubler(Agent):
    model = None

    @handler(queue="jobs")
    async def run(self, msg: Job, ctx: Context) -> int:
        return msg.n * 2


class BrokenOnce(InProcessTaskQueue):
    """A task queue whose first claim fails as a lost connection to Redis would."""

    def __init__(self) -> None:
        super().__init__(max_pending=10)
        self.failures = 0

    async def claim(self, queue, consumer):
        if self.failures == 0:
            self.failures += 1
            raise ConnectionError("the queue's server went away")
        return await super().claim(queue, consumer)


async def test_a_claimer_that_fails_is_restarted_and_the_queue_is_worked():
    queue = BrokenOnce()
    async with LocalRuntime([Doubler], config=RaygentConfig(agents=[]), task_queue=queue) as rt:
        task = await rt.submit("jobs", Job(21))
        done = await rt.wait_task(task, timeout_s=10)
    assert queue.failures == 1
    assert done.state is TaskState.DONE and done.result == 42
