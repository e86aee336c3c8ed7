"""The admission gate in front of an engine (runtime.models.admission): slots, the queue
bounded by predicted wait, priorities, and refusals with a Retry-After."""

from __future__ import annotations

import asyncio
import pickle  # noqa: TID251 - Ray pickles errors between processes; checked here

import pytest

from agents.errors import Overloaded
from runtime.gateway.errors import from_agent_error
from runtime.models.admission import AdmissionGate, default_max_inflight


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def hold(gate: AdmissionGate, priority: str, release: asyncio.Event, log: list[str], tag):
    async with gate.slot(priority):
        log.append(tag)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_then_a_queue_as_deep_as_the_slots_until_a_drain_is_measured():
    gate = AdmissionGate("m", max_inflight=2, max_queue_wait_s=1.0, clock=Clock())
    release, log = asyncio.Event(), []
    tasks = [asyncio.create_task(hold(gate, "interactive", release, log, i)) for i in range(4)]
    await settle()
    assert log == [0, 1] and gate.inflight == 2 and gate.queued == 2
    with pytest.raises(Overloaded) as exc:
        await hold(gate, "interactive", release, log, 4)
    assert exc.value.retry_after_s >= 1 and exc.value.inflight == 2 and exc.value.queued == 2
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(log) == [0, 1, 2, 3] and gate.inflight == 0 and gate.queued == 0
    assert gate.rejected["interactive"] == 1


async def test_the_queue_admits_only_what_the_measured_drain_can_start_in_time():
    clock = Clock()
    gate = AdmissionGate("m", max_inflight=1, max_queue_wait_s=1.0, clock=clock)
    for _ in range(4):  # 4 requests finished over the last 2 s: 2 per second
        async with gate.slot():
            clock.now += 0.5
    rate = gate.drain_rate()
    assert rate == pytest.approx(4 / 2.0)
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(gate, "interactive", release, log, "run"))
    await settle()
    # 1 ahead: 1/2 s; 2 ahead: 1 s (= the bound, admitted); 3 ahead: 1.5 s refused
    queued = [asyncio.create_task(hold(gate, "interactive", release, log, i)) for i in range(2)]
    await settle()
    assert gate.queued == 2
    with pytest.raises(Overloaded) as exc:
        await hold(gate, "interactive", release, log, "late")
    assert exc.value.retry_after_s == 2  # ceil(1.5 s)
    release.set()
    await asyncio.gather(running, *queued)


async def test_queued_interactive_requests_start_before_batch_and_batch_is_shed_first():
    clock = Clock()
    gate = AdmissionGate(
        "m", max_inflight=1, max_queue_wait_s=1.0, batch_queue_share=0.5, clock=clock
    )
    for _ in range(4):
        async with gate.slot():
            clock.now += 0.5  # drain 2/s
    release, log = asyncio.Event(), []
    first = asyncio.create_task(hold(gate, "interactive", release, log, "first"))
    await settle()
    batch = asyncio.create_task(hold(gate, "batch", release, log, "batch"))  # wait 0.5 s: ok
    await settle()
    interactive = asyncio.create_task(hold(gate, "interactive", release, log, "interactive"))
    await settle()
    with pytest.raises(Overloaded):  # two ahead of it: 1.5 s > 0.5 s
        await hold(gate, "batch", release, log, "batch2")
    assert gate.rejected == {"batch": 1}
    release.set()
    await asyncio.gather(first, batch, interactive)
    assert log == ["first", "interactive", "batch"]


@pytest.mark.parametrize(("share", "interactive_of_first_20"), [(0.7, 14), (1.0, 20)])
async def test_while_both_classes_queue_slots_go_by_the_interactive_share(
    share, interactive_of_first_20
):
    gate = AdmissionGate(
        "m", max_inflight=1, max_queue_wait_s=60.0, interactive_share=share, clock=Clock()
    )
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(gate, "interactive", release, log, "run"))
    await settle()
    # Nothing measured yet: the queue takes as many as there are slots, then none. Measure a
    # drain of 60/s over the gate's first second so 60 may wait.
    gate._released.extend([gate._clock()] * 60)
    waiting = [
        asyncio.create_task(hold(gate, p, release, log, p))
        for _ in range(20)
        for p in ("interactive", "batch")
    ]
    await settle()
    assert gate.queued == 40
    release.set()
    await asyncio.gather(running, *waiting)
    assert log[1:21].count("interactive") == interactive_of_first_20
    assert len(log) == 41  # nobody starved


async def test_demand_counts_refused_requests_by_littles_law():
    clock = Clock()
    gate = AdmissionGate("m", max_inflight=2, max_queue_wait_s=0.0, clock=clock)
    release, log = asyncio.Event(), []
    running = [asyncio.create_task(hold(gate, "interactive", release, log, i)) for i in range(2)]
    await settle()
    assert gate.demand() == 2.0  # nothing refused: what it holds
    for _ in range(6):
        with pytest.raises(Overloaded):
            await hold(gate, "interactive", release, log, "refused")
    # 6 refused in the gate's first second, each would hold a slot 1 s (no drain measured)
    assert gate.demand() == pytest.approx(2.0 + 6.0)
    gate._released.extend([clock()] * 4)  # 4 done per s, 2 slots: a request holds one 0.5 s
    assert gate.demand() == pytest.approx(2.0 + 6.0 * 0.5)
    clock.now += 60  # refusals age out of the window
    assert gate.demand() == 2.0
    release.set()
    await asyncio.gather(*running)


async def test_a_cancelled_waiter_leaves_the_queue_and_a_slot_it_was_handed_passes_on():
    clock = Clock()
    gate = AdmissionGate("m", max_inflight=1, max_queue_wait_s=5.0, clock=clock)
    for _ in range(4):
        async with gate.slot():
            clock.now += 0.5  # drain 2/s: a queue of two is predicted to wait 1 s
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(gate, "interactive", release, log, "run"))
    await settle()
    gone = asyncio.create_task(hold(gate, "interactive", release, log, "gone"))
    after = asyncio.create_task(hold(gate, "interactive", release, log, "after"))
    await settle()
    gone.cancel()
    await settle()
    assert gate.queued == 1
    release.set()
    await asyncio.gather(running, after)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert log == ["run", "after"] and gate.inflight == 0


async def test_a_waiter_keeps_its_place_until_its_own_deadline():
    gate = AdmissionGate("m", max_inflight=1, max_queue_wait_s=0.05, clock=Clock())
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(gate, "interactive", release, log, "run"))
    await settle()
    with pytest.raises(Overloaded):  # nothing drains within its deadline: refused then
        async with gate.slot("interactive", timeout_s=0.2):
            pass
    patient = asyncio.create_task(hold(gate, "interactive", release, log, "patient"))
    await asyncio.sleep(0.3)  # well past the bound: still queued, not refused
    assert gate.queued == 1 and not patient.done()
    release.set()
    await patient
    assert log == ["run", "patient"]
    release.set()
    await running
    assert gate.inflight == 0


async def test_no_queue_means_a_slot_at_once_or_a_refusal():
    gate = AdmissionGate("m", max_inflight=1, max_queue_wait_s=0.0, clock=Clock())
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(gate, "interactive", release, log, "run"))
    await settle()
    with pytest.raises(Overloaded):
        await hold(gate, "interactive", release, log, "refused")
    release.set()
    await running
    assert log == ["run"]


def test_overloaded_is_a_429_with_retry_after_and_crosses_processes():
    err = pickle.loads(pickle.dumps(Overloaded("m", inflight=32, queued=4, retry_after_s=3.0)))
    assert (err.model, err.inflight, err.queued, err.retry_after_s) == ("m", 32, 4, 3.0)
    assert err.retryable
    api = from_agent_error(err)
    assert api.status == 429 and api.headers["Retry-After"] == "3"
    assert api.code == "overloaded" and "models.m.admission.max_inflight" in api.message


def test_default_limit_is_the_engine_batch_and_on_cpu_sixteen_per_core():
    assert default_max_inflight(256, None) == 256
    assert default_max_inflight(256, 2) == 32
    assert default_max_inflight(8, 2) == 8
