"""``python -m bench.registry`` against a real Registry actor: the figures behind
docs/SCALING.md keep being measurable as the registry changes."""

from __future__ import annotations

import pytest

from bench.registry import fan_out, membership_bytes

pytestmark = pytest.mark.integration


async def test_one_write_answers_every_waiting_feed(ray_session):
    import ray

    from runtime.cluster.registry import Registry

    registry = ray.remote(Registry).options(num_cpus=0, max_concurrency=1000).remote()
    try:
        seconds = await fan_out(registry, feeds=50, trials=1)  # returns once all 50 answered
        assert 0 < seconds < 60
        epoch, seq, changes = await registry.state_since.remote(0, 0.0, "")
        assert seq == 1 and [u.key for u in changes] == ["k0"]
    finally:
        ray.kill(registry)


def test_a_change_is_answered_with_its_size_a_snapshot_with_the_members():
    one, small, large = membership_bytes(1), membership_bytes(10), membership_bytes(1000)
    assert one < 400  # one change: a slot and its member
    assert 50 < (large - small) / 990 < 100  # a snapshot: about 77 bytes per member
