"""The gateway's response cache: a Redis cache shared by every gateway replica, or an in-process
LRU when no Redis is configured (the embedded default).

This package is storage-agnostic of HTTP: the gateway hands it opaque bytes (a finished answer)
and the inputs of the key; it never parses a response. Its modules: :mod:`.keys` (key and
policy, pure), :mod:`.breaker`, :mod:`.backends` (the LRU and Redis: besides
:mod:`runtime.queues.redis_streams`, the only module that imports ``redis``) and :mod:`.core`
(``ResponseCache``, single flight). No Redis exception leaves the package: a cache that fails
is a cache that misses.

What is cached
    Only what the gateway calls cacheable: ``produce()`` (or ``Flight.publish``) returning
    ``None`` means "error, cut-off or cancelled: do not store". Entries live an absolute
    ``ttl_s`` (Redis ``SET PX``; the LRU stores the expiry); reads never refresh it.

Key (:func:`cache_key`)
    SHA-256 over one JSON document ``{"v", "target", "revision", "kind", "prompt", "params",
    "shared", "tenant"}`` with sorted keys, no whitespace and ASCII escapes. JSON quotes every
    string, so no two inputs that differ in any field can encode alike (``target="a",
    prompt="bc"`` vs ``target="ab", prompt="c"``). Numbers are normalised explicitly: a float
    with an integral value is written as the int (``0`` and ``0.0`` give one key), other floats
    by Python's shortest round-trip ``repr``; ``True`` stays distinct from ``1``; tuples are
    lists; NaN, infinities, non-string mapping keys and non-JSON types are refused
    (:class:`CacheKeyError`) rather than guessed at. ``None`` values in params are **kept**:
    dropping them would make ``{"seed": None}`` and ``{}`` one key, which is only right if the
    engine's default for every field is ``None`` -- a wrong hit is worse than a missed one, so
    the gateway should pass the full resolved parameters (``SamplingParams.to_dict()``), where
    no field is ever absent. ``tenant`` is ``None`` when ``shared`` (the config lists the
    target in ``cache.shared``); ``shared`` is itself in the document so that a shared entry
    never answers a per-tenant lookup. In Redis the value lives at ``raygent:cache:v2:{<hex>}``.

Policy (:meth:`ResponseCache.decide`): the first rule that matches wins
    ======================================================  ======  =====  =================
    rule                                                    lookup  store  ``reason``
    ======================================================  ======  =====  =================
    the target's policy is ``never``                        no      no     policy-never
    ``Cache-Control: no-store``                             no      no     no-store
    policy ``deterministic``, temperature > 0 and no seed   no      no     non-deterministic
    ``Cache-Control: no-cache`` (or ``max-age=0``)          no      yes    no-cache
    otherwise (``always``, or a deterministic request)      yes     yes    cacheable
    ======================================================  ======  =====  =================

    The policy is per target (``policies``), else ``policy``. What the request gets, for the
    ``x-raygent-cache`` header: ``hit`` (from the cache, or from a concurrent identical
    request's computation), ``miss`` (computed here, stored if it was cacheable) or ``bypass``
    (the cache was not read: the policy, the header, or the cache failing).

Single flight (:meth:`ResponseCache.flight`, :meth:`ResponseCache.get_or_compute`)
    Within a replica, the first request for a key leads and later ones wait on an in-process
    future without a Redis call of their own. Across replicas (Redis), the local leader runs one
    Lua script that reads the value -- the request's lookup, one round trip -- and otherwise
    takes a lock key ``raygent:cache:v2:lock:{<hex>}`` (``SET NX PX``, lifetime
    ``flight_wait_s``); a replica that finds the lock held polls the same script with backoff
    (2 ms doubling to 50 ms) for at most ``flight_wait_s``, then computes on its own. The winner
    stores the value and deletes its lock in one script; a winner that fails replaces its lock
    with a short "failed" mark, so the waiters compute at once instead of waiting out the bound;
    a winner that is cancelled just deletes its lock (the next poller takes over); a winner that
    dies leaves a lock that expires after ``flight_wait_s``.
    **An exception from the leader's produce does not reach the followers**: they get ``None``
    and compute on their own. A leader's error is often its own (its client went away, its
    deadline passed) and each follower has its own deadline; the price is that a model that
    fails for everybody is called once more per waiting request.

Deadline (:mod:`.deadline`)
    Every Redis call (connect, pool wait and read together) has ``socket_timeout_ms`` of time
    *during which this process's event loop was on time*: a timer ticks every 10 ms while the
    call waits, and a tick that fires late (the loop was running the engine's output or HTTP
    work, or the process was preempted) counts nothing, because the reply may be sitting unread
    in the socket. ``max_wait_ms`` (default 10 x) bounds the wall time however busy the loop is.
    redis-py's own socket timeouts are that bound (a backstop), and its retries are off.

Breaker (:class:`CircuitBreaker`)
    ``breaker_threshold`` consecutive failures open the breaker: a refused or reset connection,
    or a timeout while Redis answered no other call of this replica (a timeout while other calls
    got answers is "excused": Redis is alive, the wait was ours). While open, calls return at
    once without touching a socket (counted as errors). After ``breaker_cooldown_s`` one trial
    call goes through (half-open): success closes, failure reopens. Transitions are logged once
    each, failures while closed one line each (at most ``breaker_threshold`` per cool-down;
    excused timeouts at debug level). A request that saw Redis fail is served uncached (status
    ``bypass``), and skips the other Redis calls (lock, store) it would have made.

Redis Cluster (``redis+cluster://``): a value and its lock share a hash tag, so each flight script
runs on the one master that owns the key's slot, and keys spread over the masters by hash. A
master's failover fails the calls it catches (served uncached, as with any Redis failure) and
the next calls go to the promoted replica. Not supported: values larger than Redis's 512 MB
string limit.

Example:
    >>> cache = ResponseCache()  # in-process LRU
    >>> key = cache_key(target="default", revision=None, kind="chat",
    ...                 prompt=[{"role": "user", "content": "hi"}],
    ...                 params={"temperature": 0, "max_tokens": 8}, tenant="t1")
    >>> cache.decide(target="default", params={"temperature": 0.0}).lookup
    True
"""

from runtime.cache.backends import KEY_PREFIX, LOCK_PREFIX, lock_key, value_key
from runtime.cache.breaker import CircuitBreaker
from runtime.cache.core import LATENCY_BUCKETS_S, Flight, ResponseCache
from runtime.cache.keys import (
    CacheDecision,
    CacheKeyError,
    cache_decision,
    cache_key,
    cache_scope,
)

__all__ = [
    "KEY_PREFIX",
    "LATENCY_BUCKETS_S",
    "LOCK_PREFIX",
    "CacheDecision",
    "CacheKeyError",
    "CircuitBreaker",
    "Flight",
    "ResponseCache",
    "cache_decision",
    "cache_key",
    "cache_scope",
    "lock_key",
    "value_key",
]
