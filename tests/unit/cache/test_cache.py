"""Response cache without Redis: keys, policy, the in-process LRU, single flight, the breaker.

The breaker's socket side is exercised here with fake backends of the internal interface (one
that hangs, one that refuses); tests/integration/redis/test_cache_redis.py does it with a real,
stopped and killed redis-server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time

import pytest

from agents.model import SamplingParams
from runtime.cache import (
    KEY_PREFIX,
    LATENCY_BUCKETS_S,
    CacheDecision,
    CacheKeyError,
    CircuitBreaker,
    ResponseCache,
    cache_decision,
    cache_key,
    lock_key,
    value_key,
)
from runtime.cache.deadline import Deadline, DeadlineExpired, DeadlinePolicy, run_within
from runtime.config import CacheConfig
from runtime.errors import RaygentRuntimeError

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
GREEDY = SamplingParams(max_tokens=8, temperature=0.0).to_dict()
BOUND_S = 5.0  # only there so that a bug fails a test instead of hanging it


def key(**overrides):
    args = {
        "target": "default",
        "revision": None,
        "kind": "chat",
        "prompt": CHAT,
        "params": GREEDY,
        "tenant": "tenant-a",
        "shared": False,
    }
    args.update(overrides)
    return cache_key(**args)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(predicate, what: str) -> None:
    """Yield to the loop until ``predicate()``; fail after BOUND_S."""
    deadline = time.monotonic() + BOUND_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0)


# -- key -----------------------------------------------------------------------------------------


def test_key_is_a_stable_sha256_hex_digest():
    k = key()
    assert len(k) == 64
    assert int(k, 16) >= 0
    assert k == key()
    # fixed for v2: a change here silently empties every deployed cache; bump the prefix instead
    # (v2: the key is a Redis Cluster hash tag, so a value and its flight lock share a slot)
    assert KEY_PREFIX == "raygent:cache:v2:"
    assert value_key(k) == f"raygent:cache:v2:{{{k}}}"
    assert lock_key(k) == f"raygent:cache:v2:lock:{{{k}}}"


def test_int_and_float_spellings_of_one_number_give_one_key():
    assert key(params={**GREEDY, "temperature": 0}) == key(params={**GREEDY, "temperature": 0.0})
    assert key(params={**GREEDY, "temperature": -0.0}) == key(params={**GREEDY, "temperature": 0})
    assert key(params={**GREEDY, "max_tokens": 8.0}) == key(params={**GREEDY, "max_tokens": 8})
    assert key(params={**GREEDY, "top_p": 0.9}) != key(params={**GREEDY, "top_p": 0.90000001})


def test_mapping_order_and_sequence_type_do_not_matter():
    reordered = dict(reversed(list(GREEDY.items())))
    assert key(params=reordered) == key(params=GREEDY)
    turns = [{"content": "be brief", "role": "system"}, {"content": "hi", "role": "user"}]
    assert key(prompt=turns) == key(prompt=CHAT)
    assert key(params={**GREEDY, "stop": ("a", "b")}) == key(params={**GREEDY, "stop": ["a", "b"]})


def test_sampling_params_object_and_its_dict_give_one_key():
    sp = SamplingParams(max_tokens=8, temperature=0.0)
    assert key(params=sp) == key(params=sp.to_dict())


def test_list_order_in_messages_matters():
    assert key(prompt=list(reversed(CHAT))) != key(prompt=CHAT)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"target": "a", "prompt": "bc"}, {"target": "ab", "prompt": "c"}),
        ({"target": "a", "kind": "bchat"}, {"target": "ab", "kind": "chat"}),
        ({"revision": "r1", "tenant": "t"}, {"revision": "r", "tenant": "1t"}),
        ({"revision": None, "tenant": "x"}, {"revision": "x", "tenant": None}),
        ({"prompt": "a", "tenant": "b,c"}, {"prompt": "a,b", "tenant": "c"}),
        ({"prompt": 'x","tenant":"y'}, {"prompt": "x", "tenant": "y"}),
        ({"prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
         {"prompt": [{"role": "user", "content": "ab"}]}),
        ({"prompt": ["ab", "c"]}, {"prompt": ["a", "bc"]}),
        ({"prompt": "1"}, {"prompt": 1}),
        ({"params": {"n": True}}, {"params": {"n": 1}}),
        ({"params": {"seed": None}}, {"params": {}}),
        ({"kind": "chat", "prompt": "hi"}, {"kind": "completion", "prompt": "hi"}),
    ],
)  # fmt: skip
def test_fields_are_separated_unambiguously(a, b):
    assert key(**a) != key(**b)


def test_tenants_do_not_share_unless_the_target_is_shared():
    assert key(tenant="tenant-a") != key(tenant="tenant-b")
    assert key(tenant="tenant-a", shared=True) == key(tenant="tenant-b", shared=True)
    assert key(tenant=None, shared=True) != key(tenant=None, shared=False)
    assert key(shared=True) != key(shared=False)


def test_every_sampling_parameter_changes_the_key():
    other = {
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.5,
        "top_k": 5,
        "stop": ("\n",),
        "seed": 7,
        "n": 2,
        "ignore_eos": True,
        "tools": ({"type": "function", "function": {"name": "f", "parameters": {}}},),
        "tool_choice": "none",
        "response_format": {"type": "json_object"},
        "structured_outputs": {"regex": "[0-9]+"},
        "parallel_tool_calls": False,
    }
    fields = {f.name for f in dataclasses.fields(SamplingParams)}
    assert fields == set(other), "a new SamplingParams field needs a case here"
    base = SamplingParams(max_tokens=8, temperature=0.0)
    seen = {key(params=base)}
    for name, value in other.items():
        seen.add(key(params=dataclasses.replace(base, **{name: value})))
    assert len(seen) == 1 + len(other)


def test_target_revision_and_kind_change_the_key():
    keys = {key(), key(target="other"), key(revision="r2"), key(kind="completion")}
    assert len(keys) == 4


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"params": {"temperature": math.nan}}, "finite"),
        ({"params": {"temperature": math.inf}}, "finite"),
        ({"params": {1: "x"}}, "keys must be strings"),
        ({"prompt": {b"raw"}}, "cannot key a set"),
        ({"prompt": object()}, "cannot key"),
        ({"target": ""}, "target"),
        ({"kind": None}, "kind"),
        ({"tenant": 5}, "tenant"),
        ({"params": [("temperature", 0)]}, "params must be a mapping"),
    ],
)
def test_unkeyable_inputs_are_refused(overrides, match):
    with pytest.raises(CacheKeyError, match=match):
        key(**overrides)
    assert issubclass(CacheKeyError, RaygentRuntimeError)


# -- policy --------------------------------------------------------------------------------------

POLICY_TABLE = {
    # (policy, deterministic, cache-control): (lookup, store, reason)
    ("never", True, None): (False, False, "policy-never"),
    ("never", False, None): (False, False, "policy-never"),
    ("never", True, "no-cache"): (False, False, "policy-never"),
    ("never", True, "no-store"): (False, False, "policy-never"),
    ("deterministic", True, None): (True, True, "cacheable"),
    ("deterministic", False, None): (False, False, "non-deterministic"),
    ("deterministic", True, "no-cache"): (False, True, "no-cache"),
    ("deterministic", False, "no-cache"): (False, False, "non-deterministic"),
    ("deterministic", True, "no-store"): (False, False, "no-store"),
    ("deterministic", False, "no-store"): (False, False, "no-store"),
    ("always", True, None): (True, True, "cacheable"),
    ("always", False, None): (True, True, "cacheable"),
    ("always", False, "no-cache"): (False, True, "no-cache"),
    ("always", True, "no-cache"): (False, True, "no-cache"),
    ("always", False, "no-store"): (False, False, "no-store"),
    ("always", True, "no-store"): (False, False, "no-store"),
}


@pytest.mark.parametrize(("case", "expected"), POLICY_TABLE.items())
def test_decision_table(case, expected):
    policy, deterministic, cc = case
    d = cache_decision(policy=policy, deterministic=deterministic, cache_control=cc)
    assert (d.lookup, d.store, d.reason) == expected
    assert d.bypass == (not d.lookup and not d.store)


def test_decision_table_is_complete():
    cases = set(itertools.product(("never", "deterministic", "always"), (True, False), (None,)))
    cases |= set(itertools.product(("deterministic", "always"), (True, False), ("no-cache",)))
    assert cases <= set(POLICY_TABLE)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("No-Cache", "no-cache"),
        ("max-age=0", "no-cache"),
        ('max-age="0"', "no-cache"),
        ("max-age=60", "cacheable"),
        ("private, no-store", "no-store"),
        ("no-cache, no-store", "no-store"),
        ("  no-cache ,max-stale", "no-cache"),
        ("", "cacheable"),
        ("no-transform", "cacheable"),
    ],
)
def test_cache_control_header_parsing(header, reason):
    assert (
        cache_decision(policy="always", deterministic=True, cache_control=header).reason == reason
    )


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy"):
        cache_decision(policy="sometimes", deterministic=True)
    with pytest.raises(ValueError, match=r"policies\['m'\]"):
        ResponseCache(policies={"m": "sometimes"})


async def test_decide_uses_per_target_policy_and_params_and_counts_bypass():
    cache = ResponseCache(policies={"agent:Writer": "always", "m2": "never"})
    hot = {"temperature": 0.7}
    assert cache.decide(target="default", params={"temperature": 0}).lookup
    assert cache.decide(target="default", params={"temperature": 0.7, "seed": 3}).lookup
    assert not cache.decide(target="default", params=hot).lookup
    assert not cache.decide(target="default", params=None).lookup
    assert cache.decide(target="default", params=hot, deterministic=True).lookup
    assert cache.decide(target="agent:Writer", params=hot).lookup
    assert cache.decide(target="m2", params={"temperature": 0}).bypass
    assert cache.stats()["bypass"] == 3
    await cache.close()


def test_from_config_picks_the_backend_and_the_fields():
    cfg = CacheConfig(ttl_s=5, policy="always", max_entries=3, shared=["m"], socket_timeout_ms=20)
    cache = ResponseCache.from_config(cfg)
    assert cache.backend == "memory"
    assert (cache.ttl_s, cache.policy, cache.is_shared("m"), cache.is_shared("x")) == (
        5,
        "always",
        True,
        False,
    )
    assert cache.stats()["breaker_state"] == "closed"


async def test_from_config_uses_redis_url_and_the_cache_url_wins():
    # Building a Redis-backed cache does not connect; nothing here needs a server.
    a = ResponseCache.from_config(CacheConfig(), redis_url="redis://127.0.0.1:1/0")
    b = ResponseCache.from_config(
        CacheConfig(url="redis://127.0.0.1:2/0"), redis_url="redis://127.0.0.1:1/0"
    )
    try:
        assert a.backend == b.backend == "redis"
        assert b._backend._redis.connection_pool.connection_kwargs["port"] == 2
    finally:
        await a.close()
        await b.close()
        await b.close()  # twice is fine


# -- the in-process LRU ----------------------------------------------------------------------------


async def test_lru_round_trip_and_eviction_of_the_least_recently_used():
    cache = ResponseCache(max_entries=2)
    k1, k2, k3 = key(prompt="1"), key(prompt="2"), key(prompt="3")
    assert await cache.get(k1) is None
    await cache.put(k1, b"one")
    await cache.put(k2, b"two")
    assert await cache.get(k1) == b"one"  # k1 is now the most recently used
    await cache.put(k3, b"three")
    assert await cache.get(k2) is None
    assert await cache.get(k1) == b"one"
    assert await cache.get(k3) == b"three"
    stats = cache.stats()
    assert (stats["entries"], stats["evictions"], stats["stores"]) == (2, 1, 3)
    assert (stats["hits"], stats["misses"], stats["lookups"]) == (3, 2, 5)


async def test_lru_ttl_is_absolute_and_not_refreshed_by_reads():
    clock = Clock()
    cache = ResponseCache(ttl_s=10, clock=clock)
    k = key()
    await cache.put(k, b"v")
    for _ in range(9):
        clock.now += 1
        assert await cache.get(k) == b"v"
    clock.now += 0.999
    assert await cache.get(k) == b"v"
    clock.now += 0.001  # 10 s after the put, however often it was read
    assert await cache.get(k) is None
    assert cache.stats()["entries"] == 0
    await cache.put(k, b"w")  # a new put starts a new lifetime
    clock.now += 9.9
    assert await cache.get(k) == b"w"


async def test_malformed_keys_and_values_are_programming_errors():
    cache = ResponseCache()
    with pytest.raises(ValueError, match="not a cache key"):
        await cache.get("default|hi")
    with pytest.raises(TypeError, match="bytes"):
        await cache.put(key(), "text")


async def test_closed_cache_misses_and_stores_nothing():
    cache = ResponseCache()
    await cache.put(key(), b"v")
    await cache.close()
    assert await cache.lookup(key()) == (None, "error")
    await cache.put(key(), b"v")


async def test_lookup_latency_histogram_is_cumulative():
    cache = ResponseCache()
    for _ in range(5):
        await cache.get(key())
    hist = cache.stats()["lookup_latency"]
    assert hist["count"] == 5 and hist["sum_s"] >= 0
    bounds = [b for b, _ in hist["buckets"]]
    counts = [c for _, c in hist["buckets"]]
    assert bounds == [*LATENCY_BUCKETS_S, math.inf]
    assert counts == sorted(counts) and counts[-1] == 5


# -- get_or_compute and single flight --------------------------------------------------------------

CACHEABLE = CacheDecision(lookup=True, store=True, reason="cacheable")


class Producer:
    """A scripted ``produce``: returns (or raises) ``results`` in turn once ``gate`` opens."""

    def __init__(self, *results, gate: bool = False) -> None:
        self.results = list(results)
        self.calls = 0
        self.gate = asyncio.Event()
        if not gate:
            self.gate.set()

    async def __call__(self) -> bytes | None:
        self.calls += 1
        result = self.results[min(self.calls, len(self.results)) - 1]
        await self.gate.wait()
        if isinstance(result, BaseException):
            raise result
        return result


async def gather_with_leader(cache, k, produce, n=20, decision=CACHEABLE):
    """Start n identical requests, let them all join the flight, then let the leader finish."""
    tasks = [asyncio.create_task(cache.get_or_compute(k, produce, decision)) for _ in range(n)]
    await until(lambda: produce.calls >= 1, "the leader to start")
    await until(lambda: cache.stats()["single_flight_waits"] >= n - 1, "the followers to join")
    produce.gate.set()
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND_S)


async def test_twenty_concurrent_identical_misses_make_one_call():
    cache = ResponseCache()
    produce = Producer(b"answer", gate=True)
    results = await gather_with_leader(cache, key(), produce)
    assert produce.calls == 1
    assert [v for v, _ in results] == [b"answer"] * 20
    assert sorted(s for _, s in results) == ["hit"] * 19 + ["miss"]
    assert await cache.get(key()) == b"answer"
    assert cache.stats()["in_flight"] == 0
    # and afterwards a plain hit, no call
    assert await cache.get_or_compute(key(), produce, CACHEABLE) == (b"answer", "hit")
    assert produce.calls == 1


async def test_uncacheable_result_is_not_stored_and_followers_compute_on_their_own():
    cache = ResponseCache()
    produce = Producer(None, gate=True)
    results = await gather_with_leader(cache, key(), produce)
    assert produce.calls == 20
    assert results == [(None, "miss")] * 20
    assert await cache.get(key()) is None


async def test_followers_of_a_failed_leader_store_their_own_result():
    cache = ResponseCache()
    produce = Producer(None, b"second", gate=True)
    results = await gather_with_leader(cache, key(), produce, n=3)
    assert sorted(results, key=repr) == [(None, "miss"), (b"second", "miss"), (b"second", "miss")]
    assert await cache.get(key()) == b"second"


async def test_a_leader_that_raises_fails_alone_and_followers_retry_on_their_own():
    cache = ResponseCache()
    produce = Producer(RuntimeError("model down"), b"ok", gate=True)
    results = await gather_with_leader(cache, key(), produce, n=5)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and str(errors[0]) == "model down"
    assert [r for r in results if not isinstance(r, BaseException)] == [(b"ok", "miss")] * 4
    assert produce.calls == 5
    assert await cache.get(key()) == b"ok"


async def test_cancelling_the_leader_does_not_hang_the_followers():
    cache = ResponseCache()
    produce = Producer(b"from-follower", gate=True)
    leader = asyncio.create_task(cache.get_or_compute(key(), produce, CACHEABLE))
    await until(lambda: produce.calls == 1, "the leader to start")
    followers = [
        asyncio.create_task(cache.get_or_compute(key(), produce, CACHEABLE)) for _ in range(3)
    ]
    await until(lambda: cache.stats()["single_flight_waits"] == 3, "the followers to join")
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    produce.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*followers), BOUND_S)
    assert results == [(b"from-follower", "miss")] * 3
    assert cache.stats()["in_flight"] == 0


async def test_a_cancelled_follower_does_not_cancel_the_others():
    cache = ResponseCache()
    produce = Producer(b"v", gate=True)
    tasks = [asyncio.create_task(cache.get_or_compute(key(), produce, CACHEABLE)) for _ in range(3)]
    await until(lambda: cache.stats()["single_flight_waits"] == 2, "the followers to join")
    tasks[1].cancel()
    produce.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND_S)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[0], results[2]] == [(b"v", "miss"), (b"v", "hit")]
    assert produce.calls == 1


async def test_bypass_decisions_neither_read_nor_join_a_flight():
    cache = ResponseCache()
    await cache.put(key(), b"stored")
    produce = Producer(b"fresh")
    no_store = cache_decision(policy="always", deterministic=True, cache_control="no-store")
    assert await cache.get_or_compute(key(), produce, no_store) == (b"fresh", "bypass")
    assert await cache.get(key()) == b"stored"
    no_cache = cache_decision(policy="always", deterministic=True, cache_control="no-cache")
    assert await cache.get_or_compute(key(), produce, no_cache) == (b"fresh", "bypass")
    assert await cache.get(key()) == b"fresh"  # no-cache refreshes the entry
    assert produce.calls == 2


async def test_lookup_without_store_keeps_the_flight_local_and_stores_nothing():
    cache = ResponseCache()
    produce = Producer(b"v")
    read_only = CacheDecision(lookup=True, store=False, reason="test")
    assert await cache.get_or_compute(key(), produce, read_only) == (b"v", "miss")
    assert await cache.get(key()) is None


async def test_flight_api_for_streams():
    cache = ResponseCache()
    k = key()
    async with cache.flight(k) as leader:
        assert leader.leader
        async with cache.flight(k) as follower:
            assert not follower.leader
            with pytest.raises(RuntimeError, match="only the leader"):
                follower.publish(b"x")
            waiting = asyncio.create_task(follower.wait())
            await asyncio.sleep(0)
            assert not waiting.done()
            with pytest.raises(TypeError, match="bytes"):
                leader.publish("text")
            leader.publish(b"chunks")
            assert await asyncio.wait_for(waiting, BOUND_S) == b"chunks"
        with pytest.raises(RuntimeError, match="already published"):
            leader.publish(b"again")
        with pytest.raises(RuntimeError, match="does not wait"):
            await leader.wait()
    assert await cache.get(k) == b"chunks"  # stored when the leader's block ended
    async with cache.flight(k) as late:  # the value is there: a new leader finds it
        assert not late.leader
        assert await late.wait() == b"chunks"


async def test_flight_leader_leaving_without_publishing_counts_as_failed():
    cache = ResponseCache()
    k = key()
    async with cache.flight(k) as leader:
        async with cache.flight(k) as follower:
            pass
        assert leader.leader
    assert await follower.wait() is None
    assert await cache.get(k) is None
    joined = []

    async def lead_and_raise():
        async with cache.flight(k):
            async with cache.flight(k) as follower:
                joined.append(follower)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await lead_and_raise()
    assert await joined[0].wait() is None
    assert cache.stats()["in_flight"] == 0


# -- breaker -------------------------------------------------------------------------------------


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown():
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown_s=5, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure("timeout")
    assert b.allow()
    b.success()  # a success in between resets the count
    for _ in range(3):
        assert b.state == "closed" and b.allow()
        b.failure("timeout")
    assert (b.state, b.opens) == ("open", 1)
    assert not b.allow()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.state == "half_open"
    assert b.allow()  # the trial
    assert not b.allow()  # only one at a time
    b.failure("timeout")
    assert (b.state, b.opens) == ("open", 2)
    clock.now += 5
    assert b.allow()
    b.abandon()  # a cancelled trial lets the next call try
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_breaker_trip_opens_at_once():
    b = CircuitBreaker(threshold=3, cooldown_s=1, clock=Clock())
    b.trip("no answer at start")
    assert (b.state, b.opens, b.allow()) == ("open", 1, False)
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=0)


class _FakeRedis:
    """The internal backend interface, misbehaving the way a sick Redis does."""

    name = "redis"
    fallible = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0

    async def _act(self):
        self.calls += 1
        if self.mode == "hung":
            await asyncio.Event().wait()  # never answers
        if self.mode == "refused":
            raise ConnectionRefusedError(111, "Connection refused")

    async def get(self, key):
        return await self._act()

    async def put(self, key, value, ttl_s):
        await self._act()

    async def claim(self, key, token, lock_s):
        await self._act()
        return 2, None

    async def settle(self, key, token, value, ttl_s, mode):
        await self._act()

    async def ping(self):
        await self._act()

    async def close(self):
        return None


def sick_cache(mode: str, clock=time.monotonic) -> tuple[ResponseCache, _FakeRedis]:
    cache = ResponseCache(socket_timeout_ms=20, breaker_cooldown_s=5, clock=clock)
    fake = _FakeRedis(mode)
    cache._backend = fake
    return cache, fake


@pytest.mark.parametrize("mode", ["hung", "refused"])
async def test_a_sick_backend_costs_at_most_the_timeout_then_nothing(mode, caplog):
    caplog.set_level(logging.INFO, logger="runtime.cache")
    clock = Clock()
    cache, fake = sick_cache(mode, clock)
    for _ in range(3):
        t0 = time.perf_counter()
        assert await cache.lookup(key()) == (None, "error")
        assert time.perf_counter() - t0 < 0.2  # 20 ms deadline, generous for a busy machine
    stats = cache.stats()
    assert (stats["breaker_state"], stats["breaker_opens"], stats["errors"]) == ("open", 1, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 and "breaker open" in messages[-1]  # 3 failures, 1 transition
    caplog.clear()
    t0 = time.perf_counter()
    for _ in range(100):
        await cache.get(key())
        await cache.put(key(), b"v")
    assert time.perf_counter() - t0 < 0.1
    assert fake.calls == 3  # the open breaker touches nothing
    assert cache.stats()["short_circuits"] == 200
    assert caplog.records == []  # counted, not logged per request
    clock.now += 5
    fake.mode = "ok"
    assert await cache.lookup(key()) == (None, "miss")  # the trial call
    assert cache.stats()["breaker_state"] == "closed"
    assert [r.getMessage() for r in caplog.records][-1].endswith("breaker closed")


async def test_start_opens_the_breaker_when_the_backend_does_not_answer():
    cache, _ = sick_cache("refused")
    await cache.start()  # does not raise
    assert cache.stats()["breaker_state"] == "open"


async def test_requests_are_served_uncached_while_the_backend_fails():
    cache, fake = sick_cache("hung")
    produce = Producer(b"v", gate=True)
    tasks = [asyncio.create_task(cache.get_or_compute(key(), produce, CACHEABLE)) for _ in range(5)]
    await until(lambda: produce.calls == 1, "the leader to start")
    await until(lambda: cache.stats()["single_flight_waits"] == 4, "the followers to join")
    produce.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), BOUND_S)
    # one call for all five even so; the failed lookup keeps the flight off the backend
    assert produce.calls == 1
    assert sorted(s for _, s in results) == ["bypass"] + ["hit"] * 4
    assert fake.calls == 1  # the leader's lookup (and lock, one call); no store, no other call


# -- the deadline: Redis's time, not the loop's --------------------------------------------------


def deadline(**overrides) -> Deadline:
    args = {"budget_s": 0.1, "tick_s": 0.01, "slack_s": 0.01, "cap_s": 0.5, "start": 0.0}
    args.update(overrides)
    return Deadline(**args)


def run_ticks(d: Deadline, lateness) -> float:
    """Fire each tick ``lateness(i)`` seconds after it was due; the loop time at expiry."""
    for i in itertools.count():
        now = d.due + lateness(i)
        if d.check(now) is None:
            return now
    raise AssertionError("unreachable")


def test_deadline_on_an_on_time_loop_is_the_budget_plus_one_more_look():
    d = deadline()
    assert d.due == pytest.approx(0.01)
    expired_at = run_ticks(d, lambda i: 0.0)
    assert expired_at == pytest.approx(0.11)  # 100 ms counted, then one look after it
    assert (d.credit_s, d.loop_late, d.capped) == (pytest.approx(0.1), False, False)


def test_late_ticks_count_nothing_towards_the_budget():
    d = deadline(cap_s=1.0)
    # every other tick 40 ms late: only the on-time ones count, so the wall time stretches
    expired_at = run_ticks(d, lambda i: 0.04 if i % 2 else 0.0)
    assert d.loop_late and not d.capped
    assert d.credit_s == pytest.approx(0.1)
    assert expired_at == pytest.approx(0.11 + 10 * 0.05)  # 10 late ticks of 50 ms besides


def test_a_loop_that_never_catches_up_is_capped():
    d = deadline()
    expired_at = run_ticks(d, lambda i: 0.03)
    assert d.capped and d.loop_late and d.credit_s == 0
    assert 0.5 <= expired_at < 0.55


def test_the_budget_never_expires_on_a_late_tick():
    d = deadline(budget_s=0.02)
    assert d.check(0.01) == pytest.approx(0.02)  # on time: 10 ms
    assert d.check(0.02) == pytest.approx(0.03)  # on time: 20 ms, the budget is counted
    assert d.check(0.08) == pytest.approx(0.09)  # late: a reply may be unread; look again
    assert d.check(0.09) is None  # on time: expired


def test_deadline_policy_is_checked():
    with pytest.raises(ValueError, match="budget_s <= cap_s"):
        DeadlinePolicy(budget_s=1.0, tick_s=0.01, slack_s=0.01, cap_s=0.5)
    with pytest.raises(ValueError, match="tick_s"):
        DeadlinePolicy(budget_s=0.1, tick_s=0.0, slack_s=0.01, cap_s=0.5)


POLICY = DeadlinePolicy(budget_s=0.05, tick_s=0.01, slack_s=0.01, cap_s=0.5)


async def test_a_reply_that_arrived_while_the_loop_was_busy_is_read_not_cut_off():
    """The reply is there at 10 ms; the loop is blocked until 150 ms: a plain 50 ms timeout
    cancels the reader (its timer and the reader's wake-up come due in one iteration, and the
    cancel wins); the loop-aware deadline lets it finish."""
    loop = asyncio.get_running_loop()

    async def reply_at_10ms() -> str:
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, "reply")
        return await fut

    def block_loop() -> None:
        time.sleep(0.15)  # CPU work on the loop (the engine's output processing)

    loop.call_later(0.002, block_loop)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # what the cache did before
            await reply_at_10ms()

    loop.call_later(0.002, block_loop)
    assert await run_within(POLICY, reply_at_10ms) == "reply"


async def test_no_reply_on_an_idle_loop_expires_after_budget_and_a_tick():
    t0 = time.perf_counter()
    with pytest.raises(DeadlineExpired) as info:
        await run_within(POLICY, asyncio.Event().wait)
    took = time.perf_counter() - t0
    assert 0.05 <= took < 0.05 + 0.2  # 60 ms nominal; room for a busy test machine
    assert not info.value.capped


async def test_no_reply_on_a_loop_kept_busy_expires_at_the_cap():
    stop = asyncio.Event()

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    async def hog() -> None:  # 30 ms of CPU between awaits: every tick comes late
        while not stop.is_set():
            spin(0.03)
            await asyncio.sleep(0)

    policy = DeadlinePolicy(budget_s=0.05, tick_s=0.01, slack_s=0.01, cap_s=0.3)
    hogging = asyncio.create_task(hog())
    try:
        t0 = time.perf_counter()
        with pytest.raises(DeadlineExpired) as info:
            await run_within(policy, asyncio.Event().wait)
        took = time.perf_counter() - t0
    finally:
        stop.set()
        await hogging
    assert info.value.loop_late
    assert 0.05 < took < 0.3 + 0.2


async def test_a_cancel_from_outside_is_not_a_deadline():
    task = asyncio.create_task(run_within(POLICY, asyncio.Event().wait))
    await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class _Slow:
    """A backend whose calls hang until released, and that counts them; ``answer()`` lets a
    call through at once (another request's call that Redis answers)."""

    name = "redis"
    fallible = True

    def __init__(self) -> None:
        self.calls = 0
        self.fast = False

    async def get(self, key):
        self.calls += 1
        if not self.fast:
            await asyncio.Event().wait()

    async def close(self):
        return None


async def test_a_timeout_while_redis_answers_other_calls_does_not_count_against_it():
    cache = ResponseCache(socket_timeout_ms=50, breaker_threshold=3)
    slow = _Slow()
    cache._backend = slow
    stuck = [asyncio.create_task(cache.lookup(key(prompt=str(i)))) for i in range(5)]
    await until(lambda: slow.calls == 5, "five calls to wait")
    slow.fast = True
    assert await cache.lookup(key()) == (None, "miss")  # Redis answers this one
    assert await asyncio.wait_for(asyncio.gather(*stuck), BOUND_S) == [(None, "error")] * 5
    stats = cache.stats()
    assert (stats["timeouts"], stats["excused_timeouts"], stats["errors"]) == (5, 5, 5)
    assert (stats["breaker_state"], stats["breaker_opens"]) == ("closed", 0)
    # and when nothing answers, timeouts are Redis's: the breaker opens as before
    slow.fast = False
    for _ in range(3):
        assert await cache.lookup(key()) == (None, "error")
    assert (cache.stats()["breaker_state"], cache.stats()["excused_timeouts"]) == ("open", 5)


async def test_followers_of_a_local_flight_make_no_backend_call():
    cache = ResponseCache()
    produce = Producer(b"v", gate=True)
    await gather_with_leader(cache, key(), produce)
    stats = cache.stats()
    assert (stats["lookups"], stats["misses"], stats["hits"]) == (1, 1, 0)  # the leader's read
    await asyncio.gather(*(cache.get_or_compute(key(), produce, CACHEABLE) for _ in range(5)))
    assert cache.stats()["lookups"] in range(2, 7)  # a leader per wave of identical requests


def test_config_bounds_are_checked():
    with pytest.raises(ValueError, match=r"max_wait_ms \(50\) must be >= socket_timeout_ms"):
        CacheConfig(socket_timeout_ms=100, max_wait_ms=50)
    with pytest.raises(ValueError, match="warm_connections"):
        CacheConfig(max_connections=2, warm_connections=3)
    assert CacheConfig(socket_timeout_ms=1000).max_wait_ms is None  # 10 x, whatever it is
    with pytest.raises(ValueError, match="max_wait_ms"):
        ResponseCache(socket_timeout_ms=100, max_wait_ms=50)
