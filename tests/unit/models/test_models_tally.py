"""``runtime.models.server.Tally``: refusals reach Ray's metric as sums, at most a flush
interval late while they keep coming, and all of them on a flush (the health check's)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from runtime.models.server import TALLY_FLUSH_S, Tally  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorded:
    """What Ray's ``Counter.inc`` was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str]]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.calls.append((value, dict(tags or {})))

    def total(self, priority: str) -> float:
        return sum(v for v, tags in self.calls if tags == {"priority": priority})


def test_increments_are_summed_and_handed_over_once_the_interval_passed():
    clock, counter = Clock(), Recorded()
    tally = Tally(counter, "priority", clock=clock)
    for _ in range(50):
        tally.inc("interactive")
    tally.inc("batch")
    assert counter.calls == []  # within the interval: nothing crossed into Ray yet

    clock.now += TALLY_FLUSH_S
    tally.inc("interactive")  # the first after the interval takes every sum with it
    assert sorted(counter.calls, key=lambda c: c[1]["priority"]) == [
        (1, {"priority": "batch"}),
        (51, {"priority": "interactive"}),
    ]

    tally.inc("batch")
    tally.flush()
    assert counter.total("batch") == 2 and counter.total("interactive") == 51
    tally.flush()  # nothing pending: no call
    assert len(counter.calls) == 3
