"""Warm-first routing of model replicas: the ranking and Serve's router class using it, with
fake replicas (no running Ray)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from runtime.models.router import WarmFirstRequestRouter, rank_replicas  # noqa: E402


def test_routing_prefers_ready_replicas_then_on_demand_ones():
    stats = {
        "warm1": {"ready": True},
        "warm2": {"ready": True, "on_demand": False},
        "lazy": {"ready": False, "on_demand": True},
        "loading": {"ready": False, "on_demand": False},
        "new": {},  # no stats collected yet
    }
    everyone = list(stats)
    assert rank_replicas(everyone, stats.get) == [["warm1", "warm2"], ["lazy"]]
    assert rank_replicas(["warm1", "loading", "new"], stats.get) == [["warm1"]]
    # nobody ready: every replica is a candidate, requests wait inside one until it is
    assert rank_replicas(["loading", "new", "lazy"], stats.get) == [["loading", "new", "lazy"]]
    assert rank_replicas([], stats.get) == []


async def test_the_serve_router_offers_only_warm_replicas_while_any_is_warm():
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    class Replica:
        def __init__(self, name, **stats):
            self.replica_id, self.routing_stats = name, stats

    router = WarmFirstRequestRouter(DeploymentID("m", "app"), DeploymentHandleSource.UNKNOWN)
    warm = [Replica(f"warm{i}", ready=True) for i in range(3)]
    loading = Replica("loading", ready=False, on_demand=False)
    lazy = Replica("lazy", ready=False, on_demand=True)
    for _ in range(20):
        ranks = await router.choose_replicas([*warm, loading, lazy])
        assert len(ranks) == 2 and len(ranks[0]) == 2  # power of two choices among the warm
        assert {r.replica_id for r in ranks[0]} <= {"warm0", "warm1", "warm2"}
        assert [r.replica_id for r in ranks[1]] == ["lazy"]  # overflow only
    ranks = await router.choose_replicas([loading, lazy])
    assert [{r.replica_id for r in rank} for rank in ranks] == [{"loading", "lazy"}]
