"""Warm-first routing of model replicas: the ranking and Serve's router class using it, with
fake replicas (no running Ray)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from runtime.models.router import (  # noqa: E402
    OPENING_CHARS,
    WarmFirstRequestRouter,
    affinity_key,
    home_of,
    rank_replicas,
)


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


# ---- affinity -------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "Be brief."}


def _turns(*users):
    """A chat of ``users`` turns, each answered but the last."""
    out = [SYSTEM]
    for i, text in enumerate(users):
        out.append({"role": "user", "content": text})
        if i < len(users) - 1:
            out.append({"role": "assistant", "content": f"answer {i}"})
    return out


def test_every_turn_of_a_conversation_has_its_first_turns_key():
    first = affinity_key((_turns("Plan a trip."), {}), {})
    assert first is not None
    assert affinity_key((_turns("Plan a trip.", "To Rome?", "In May."), {}), {}) == first
    assert affinity_key((_turns("Write a poem."), {}), {}) != first
    # another tenant's prefix cache is another scope: its blocks are not reusable here
    assert affinity_key((_turns("Plan a trip."), {"cache_salt": "acme"}), {}) != first
    # the caller's session names the conversation whatever its messages
    by_session = affinity_key((_turns("Plan a trip."), {}), {"affinity": "s-1"})
    assert by_session == affinity_key((_turns("Other."), {}), {"affinity": "s-1"}) != first


def test_a_text_prompt_is_named_by_its_opening_characters():
    long = "x" * OPENING_CHARS
    assert affinity_key((long + " turn one", {}), {}) == affinity_key((long + " two", {}), {})
    assert affinity_key(("short one", {}), {}) != affinity_key(("short two", {}), {})


@pytest.mark.parametrize("args", [(), (42,), ([1, 2],), ([],)])
def test_calls_that_are_not_conversations_have_no_key(args):
    assert affinity_key(args, {}) is None


def test_homes_spread_evenly_and_a_lost_replica_moves_only_its_own_keys():
    replicas = ["r0", "r1", "r2"]
    keys = [f"conversation {i}".encode() for i in range(3000)]
    homes = {k: home_of(k, replicas, str) for k in keys}
    counts = {r: sum(1 for h in homes.values() if h == r) for r in replicas}
    assert all(850 < n < 1150 for n in counts.values()), counts
    after = {k: home_of(k, ["r0", "r2"], str) for k in keys}
    moved = [k for k in keys if after[k] != homes[k]]
    assert moved and all(homes[k] == "r1" for k in moved)


class _ID:
    def __init__(self, name):
        self.unique_id = name

    def __repr__(self):
        return self.unique_id


class _Replica:
    def __init__(self, name, **stats):
        self.replica_id, self.routing_stats = _ID(name), stats


class _Pending:
    def __init__(self, args, kwargs=None):
        self.args, self.kwargs = args, kwargs or {}


def _router(**state):
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    router = WarmFirstRequestRouter(DeploymentID("m", "app"), DeploymentHandleSource.UNKNOWN)
    if state:
        router.initialize_state(**state)
    return router


def _names(ranks):
    return [[r.replica_id.unique_id for r in rank] for rank in ranks]


async def test_a_conversation_goes_home_first_from_every_gateway_replica():
    replicas = [_Replica(f"r{i}", ready=True) for i in range(3)]
    lazy = _Replica("lazy", on_demand=True)
    two_gateways = [_router(affinity=True), _router(affinity=True)]
    for n in range(20):
        turns = [_turns(f"question {n}"), _turns(f"question {n}", "and then?")]
        homes = set()
        for router, turn in zip(two_gateways, turns, strict=True):
            ranks = _names(await router.choose_replicas([*replicas, lazy], _Pending((turn, {}))))
            assert len(ranks[0]) == 1  # the home alone, then the others, then overflow
            assert sorted(ranks[0] + ranks[1]) == ["r0", "r1", "r2"] and ranks[2] == ["lazy"]
            homes.add(ranks[0][0])
        assert len(homes) == 1


async def test_an_overloaded_home_is_passed_over():
    router = _router(affinity=True, affinity_max_imbalance=2)
    replicas = [_Replica("r0", ready=True), _Replica("r1", ready=True)]
    pending = _Pending((_turns("hello"), {}))
    (home,), (other,) = await router.choose_replicas(replicas, pending)
    queues = router.replica_queue_len_cache
    queues.update(other.replica_id, 1)
    queues.update(home.replica_id, 3)  # within the allowed imbalance: still home
    assert _names(await router.choose_replicas(replicas, pending))[0] == [home.replica_id.unique_id]
    queues.update(home.replica_id, 4)  # beyond it: power of two choices among both
    (both,) = _names(await router.choose_replicas(replicas, pending))
    assert sorted(both) == ["r0", "r1"]


async def test_without_affinity_the_router_only_balances():
    replicas = [_Replica(f"r{i}", ready=True) for i in range(2)]
    for router in (_router(), _router(affinity=False)):
        firsts = set()
        for _ in range(40):
            (both,) = _names(await router.choose_replicas(replicas, _Pending((_turns("hi"), {}))))
            assert sorted(both) == ["r0", "r1"]
            firsts.add(both[0])
        # Serve takes the first of equal queues: the order must vary, or light load would
        # all go to one replica
        assert firsts == {"r0", "r1"}
