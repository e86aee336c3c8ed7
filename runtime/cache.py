"""The gateway's response cache: a Redis cache shared by every gateway replica, or an in-process
LRU when no Redis is configured (the embedded default).

This module is storage-agnostic of HTTP: the gateway hands it opaque bytes (a finished JSON
response, or the recorded SSE chunks of a finished stream) and the inputs of the key; it never
parses a response. Besides :mod:`runtime.queues_redis`, it is the only module that imports
``redis``, and no Redis exception leaves it: a cache that fails is a cache that misses.

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
    never answers a per-tenant lookup. In Redis the value lives at ``raygent:cache:v1:<hex>``.

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
    Within a replica, the first miss for a key leads and later ones wait on an in-process
    future. Across replicas (Redis), the local leader runs one Lua script that reads the value
    and otherwise takes a lock key ``raygent:cache:v1:lock:<hex>`` (``SET NX PX``, lifetime
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

Breaker (:class:`CircuitBreaker`)
    Every Redis call runs under a deadline of ``socket_timeout_ms`` (connect, pool wait and read
    together; redis-py's own socket timeouts are the same value, and its retries are off).
    ``breaker_threshold`` consecutive connection failures or timeouts open the breaker; while
    open, calls return at once without touching a socket (counted as errors). After
    ``breaker_cooldown_s`` one trial call goes through (half-open): success closes, failure
    reopens. Transitions are logged once each, failures while closed one line each (at most
    ``breaker_threshold`` per cool-down). A request that saw Redis fail is served uncached
    (status ``bypass``), and skips the other Redis calls (lock, store) it would have made.

Not supported: Redis Cluster (the flight scripts touch the value and the lock key, which do not
share a hash slot), and values larger than Redis's 512 MB string limit.

Example:
    >>> cache = ResponseCache()  # in-process LRU
    >>> key = cache_key(target="default", revision=None, kind="chat",
    ...                 prompt=[{"role": "user", "content": "hi"}],
    ...                 params={"temperature": 0, "max_tokens": 8}, tenant="t1")
    >>> cache.decide(target="default", params={"temperature": 0.0}).lookup
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import secrets
import sys
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.errors import RaygentRuntimeError

if TYPE_CHECKING:
    from runtime.config import CacheConfig

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
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Policy = Literal["deterministic", "always", "never"]
CacheStatus = Literal["hit", "miss", "bypass"]
LookupStatus = Literal["hit", "miss", "error"]
BreakerState = Literal["closed", "open", "half_open"]

KEY_VERSION = 1
KEY_PREFIX = "raygent:cache:v1:"
LOCK_PREFIX = KEY_PREFIX + "lock:"
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Upper bounds of the lookup-latency histogram (seconds); a last ``+Inf`` bucket is implied."""

_POLICIES = ("deterministic", "always", "never")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_FAILED_MARK = "!failed"  # lock value left by a leader that failed; tokens are hex, never "!"
_FAILED_MARK_S = 1.0  # how long waiters (and newcomers) read "the leader failed, go ahead"
_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.05

# Claim results (the flight script and the in-process store agree on them).
_MISS_HELD, _HIT, _ACQUIRED, _LEADER_FAILED = 0, 1, 2, 3


class CacheKeyError(RaygentRuntimeError, ValueError):
    """An input of :func:`cache_key` cannot be encoded unambiguously (NaN, a non-string mapping
    key, an object that is not JSON data). A bug in the caller; fatal for that request."""


class _Unavailable(RaygentRuntimeError):
    """The backend failed or the breaker is open. Never leaves this module."""


# -- key -----------------------------------------------------------------------------------------


def cache_key(
    *,
    target: str,
    revision: str | None,
    kind: str,
    prompt: Any,
    params: Mapping[str, Any] | Any,
    tenant: str | None,
    shared: bool = False,
) -> str:
    """The cache key of one request: a 64-character hex SHA-256 (see the module docstring).

    Args:
        target: the model or agent name (``"default"``, ``"agent:Writer"``).
        revision: the model revision (``ModelConfig.revision``) or an agent's version; None
            when there is none.
        kind: what sort of call (``"chat"``, ``"completion"``, ``"agent"``): the same text as a
            chat and as a raw prompt are different questions.
        prompt: the full message list, prompt string or agent payload (JSON data).
        params: every sampling parameter, resolved (``SamplingParams`` or its ``to_dict()``).
        tenant: the caller's scope: a fingerprint of the API key or a tenant id, never the raw
            key; None for anonymous callers (auth off).
        shared: the target's entries are shared across tenants (``cache.shared``); ``tenant``
            is then ignored.

    Raises:
        CacheKeyError: an argument is not a string where one is needed, or not JSON data.

    Example:
        >>> a = cache_key(target="m", revision=None, kind="chat", prompt="x",
        ...               params={"temperature": 0}, tenant="t")
        >>> a == cache_key(target="m", revision=None, kind="chat", prompt="x",
        ...                params={"temperature": 0.0}, tenant="t")
        True
    """
    _check_str("target", target)
    _check_str("kind", kind)
    if revision is not None:
        _check_str("revision", revision)
    if tenant is not None and not isinstance(tenant, str):
        raise CacheKeyError(f"tenant must be a string or None, got {type(tenant).__name__}")
    if not isinstance(params, Mapping) and callable(getattr(params, "to_dict", None)):
        params = params.to_dict()
    if not isinstance(params, Mapping):
        raise CacheKeyError(f"params must be a mapping, got {type(params).__name__}")
    doc = {
        "v": KEY_VERSION,
        "target": target,
        "revision": revision,
        "kind": kind,
        "prompt": _canonical(prompt, "prompt"),
        "params": _canonical(params, "params"),
        "shared": bool(shared),
        "tenant": None if shared else tenant,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise CacheKeyError(f"{name} must be a non-empty string, got {value!r}")


def _canonical(value: Any, where: str) -> Any:
    """JSON data with one spelling per meaning (see the module docstring)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CacheKeyError(f"{where} = {value!r}: only finite numbers can be keyed")
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CacheKeyError(f"{where}: mapping keys must be strings, got {k!r}")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CacheKeyError(f"{where}: cannot key a {type(value).__name__} ({value!r:.60})")


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"not a cache key (64 lowercase hex digits from cache_key()): {key!r}")


# -- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheDecision:
    """What the cache may do for one request.

    Attributes:
        lookup: may answer from the cache (and join a single flight).
        store: may store the response.
        reason: ``policy-never``, ``no-store``, ``non-deterministic``, ``no-cache`` or
            ``cacheable``.
    """

    lookup: bool
    store: bool
    reason: str

    @property
    def bypass(self) -> bool:
        """Neither read nor written: the cache plays no part."""
        return not self.lookup and not self.store


def cache_decision(
    *, policy: Policy, deterministic: bool, cache_control: str | None = None
) -> CacheDecision:
    """The policy table of the module docstring, for one request.

    Args:
        policy: the target's policy.
        deterministic: temperature 0 or a fixed seed.
        cache_control: the request's ``Cache-Control`` header, if any.

    Example:
        >>> cache_decision(policy="always", deterministic=False, cache_control="no-cache")
        CacheDecision(lookup=False, store=True, reason='no-cache')
    """
    if policy not in _POLICIES:
        raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
    directives = _directives(cache_control)
    if policy == "never":
        return CacheDecision(False, False, "policy-never")
    if "no-store" in directives:
        return CacheDecision(False, False, "no-store")
    if policy == "deterministic" and not deterministic:
        return CacheDecision(False, False, "non-deterministic")
    if "no-cache" in directives:
        return CacheDecision(False, True, "no-cache")
    return CacheDecision(True, True, "cacheable")


def _directives(header: str | None) -> set[str]:
    """Directive names of a ``Cache-Control`` header, lowercased; ``max-age=0`` (the client
    accepts nothing stored) reads as ``no-cache``."""
    out: set[str] = set()
    for part in (header or "").split(","):
        name, _, arg = part.partition("=")
        name = name.strip().lower()
        if name == "max-age" and arg.strip().strip('"') == "0":
            name = "no-cache"
        if name:
            out.add(name)
    return out


def _is_deterministic(params: Mapping[str, Any] | None) -> bool:
    """``SamplingParams.is_deterministic`` for a params dict (a missing temperature is 1)."""
    if not params:
        return False
    return params.get("temperature", 1.0) == 0 or params.get("seed") is not None


# -- breaker -------------------------------------------------------------------------------------


class CircuitBreaker:
    """Stops calling a backend that keeps failing, and tries it again after a cool-down.

    ``allow()`` before each call, then exactly one of ``success()``, ``failure(reason)`` or
    ``abandon()`` (cancelled, or an answer that says nothing about health) if it allowed it.

    Args:
        threshold: consecutive failures that open it.
        cooldown_s: how long it stays open before one trial call is let through.
        name: what it guards, for the log.
        clock: monotonic seconds (tests inject one).

    Example:
        >>> b = CircuitBreaker(threshold=1, cooldown_s=5.0, clock=lambda: 0.0)
        >>> b.allow(); b.failure("timeout"); b.allow()
        True
        False
    """

    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown_s: float = 5.0,
        name: str = "redis",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"breaker threshold must be >= 1, got {threshold}")
        if cooldown_s <= 0:
            raise ValueError(f"breaker cooldown_s must be > 0, got {cooldown_s}")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.opens = 0
        self._name = name
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> BreakerState:
        """``half_open`` as soon as the cool-down has passed, even before the trial call."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state, only one (the trial) at a time."""
        if self._state == "closed":
            return True
        if self._trial or self.state != "half_open":
            return False
        if self._state == "open":
            self._state = "half_open"
            log.info("response cache: %s breaker half-open, trying one call", self._name)
        self._trial = True
        return True

    def success(self) -> None:
        self._failures = 0
        if self._state == "half_open" and self._trial:
            self._trial = False
            self._state = "closed"
            log.warning("response cache: %s answers again, breaker closed", self._name)

    def failure(self, reason: str) -> None:
        if self._state == "half_open" and self._trial:
            self._trial = False
            self._open(f"trial call failed: {reason}")
        elif self._state == "closed":
            self._failures += 1
            if self._failures >= self.threshold:
                self._open(f"{self._failures} failures in a row, last: {reason}")

    def abandon(self) -> None:
        if self._state == "half_open" and self._trial:
            self._trial = False  # the next call is the trial

    def trip(self, reason: str) -> None:
        """Open now, whatever the count (e.g. Redis does not answer at start)."""
        if self._state != "open":
            self._trial = False
            self._open(reason)

    def _open(self, reason: str) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._failures = 0
        self.opens += 1
        log.warning(
            "response cache: %s breaker open for %.1fs (%s); requests are served uncached",
            self._name,
            self.cooldown_s,
            reason,
        )


# -- metrics -------------------------------------------------------------------------------------


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum_s += seconds

    def snapshot(self) -> dict[str, Any]:
        cumulative, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            cumulative.append((bound, total))
        return {"count": self.count, "sum_s": self.sum_s, "buckets": cumulative}


# -- backends ------------------------------------------------------------------------------------


class _Backend(ABC):
    """Where entries live. Methods raise whatever their transport raises; the cache translates."""

    name: str
    fallible: bool

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    @abstractmethod
    async def claim(self, key: str, token: str, lock_s: float) -> tuple[int, bytes | None]:
        """The value (``_HIT``), or the flight lock (``_ACQUIRED``), or ``_LEADER_FAILED``, or
        ``_MISS_HELD`` (another replica computes)."""

    @abstractmethod
    async def settle(
        self, key: str, token: str | None, value: bytes | None, ttl_s: float, mode: str
    ) -> None:
        """End a flight: ``put`` (store, unlock), ``release`` (unlock) or ``fail`` (mark)."""

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _MemoryBackend(_Backend):
    """An LRU of at most ``max_entries``, each with an absolute expiry; one per process. Flights
    never leave the process, so claiming is just a second look for the value."""

    name = "memory"
    fallible = False

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.evictions = 0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)  # recency only: the expiry stays where it was
        return value

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (value, self._clock() + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    async def claim(self, key: str, token: str, lock_s: float) -> tuple[int, bytes | None]:
        value = await self.get(key)
        return (_HIT, value) if value is not None else (_ACQUIRED, None)

    async def settle(
        self, key: str, token: str | None, value: bytes | None, ttl_s: float, mode: str
    ) -> None:
        if mode == "put" and value is not None:
            await self.put(key, value, ttl_s)

    async def close(self) -> None:
        self._entries.clear()


# KEYS: value, lock.  ARGV: token, lock ms, failed mark.
_CLAIM_LUA = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
if redis.call('GET', KEYS[2]) == ARGV[3] then return {3} end
return {0}
"""

# KEYS: value, lock.  ARGV: mode (put|release|fail), token, value, ttl ms, failed mark, mark ms.
# The value is written before the lock goes, so a poller never sees neither.
_SETTLE_LUA = """
if ARGV[1] == 'put' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then
  if ARGV[1] == 'fail' then
    redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6])
  else
    redis.call('DEL', KEYS[2])
  end
end
return 1
"""


class _RedisBackend(_Backend):
    """One Redis (``redis://``, ``rediss://``, ``unix://``) shared by every gateway replica."""

    name = "redis"
    fallible = True

    def __init__(self, url: str, *, timeout_s: float, max_connections: int) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # a retry after a timeout doubles the stall; none
            max_connections=max_connections,
            client_name="raygent:cache",  # names the connections in CLIENT LIST
        )
        self._claim = self._redis.register_script(_CLAIM_LUA)
        self._settle = self._redis.register_script(_SETTLE_LUA)

    async def get(self, key: str) -> bytes | None:
        return await self._redis.get(KEY_PREFIX + key)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.set(KEY_PREFIX + key, value, px=_ms(ttl_s))

    async def claim(self, key: str, token: str, lock_s: float) -> tuple[int, bytes | None]:
        out = await self._claim(
            keys=[KEY_PREFIX + key, LOCK_PREFIX + key], args=[token, _ms(lock_s), _FAILED_MARK]
        )
        return int(out[0]), (out[1] if len(out) > 1 else None)

    async def settle(
        self, key: str, token: str | None, value: bytes | None, ttl_s: float, mode: str
    ) -> None:
        await self._settle(
            keys=[KEY_PREFIX + key, LOCK_PREFIX + key],
            args=[mode, token or "", value or b"", _ms(ttl_s), _FAILED_MARK, _ms(_FAILED_MARK_S)],
        )

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def _make_backend(
    url: str | None,
    *,
    timeout_s: float,
    max_entries: int,
    max_connections: int,
    clock: Callable[[], float],
) -> _Backend:
    """The store of a cache:

    * ``_RedisBackend`` for a URL (``redis://``, ``rediss://``, ``unix://``): shared by every
      replica, with cross-replica single flight;
    * ``_MemoryBackend`` for None: an LRU per process (the embedded default).
    """
    if url:
        return _RedisBackend(url, timeout_s=timeout_s, max_connections=max_connections)
    return _MemoryBackend(max_entries, clock)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# Errors that say "Redis is down or hung" (open the breaker); other Redis errors are answers.
# asyncio.TimeoutError is the builtin TimeoutError (an OSError) from 3.11 on, not before.
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


# -- single flight -------------------------------------------------------------------------------


class Flight:
    """One caller's part in a single flight for a key (see :meth:`ResponseCache.flight`).

    Attributes:
        key: the cache key.
        leader: this caller computes the value (and calls :meth:`publish`); otherwise it
            calls :meth:`wait`.
    """

    def __init__(
        self, key: str, future: asyncio.Future[bytes | None], *, leader: bool, remote: bool
    ) -> None:
        self.key = key
        self.leader = leader
        self._future = future
        self._remote = remote  # the leader may take the lock and store in the backend
        self._value: bytes | None = None
        self._published = False
        self._token: str | None = None  # the Redis lock this leader holds

    def publish(self, value: bytes | None) -> None:
        """Hand the leader's result to the followers now; stored when the flight ends.

        Args:
            value: the complete response, or None when it must not be cached (error, cut-off
                stream): the followers then compute on their own.
        """
        if not self.leader:
            raise RuntimeError("only the leader of a flight publishes; followers wait()")
        if self._published:
            raise RuntimeError(f"flight {self.key[:12]}… was already published")
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"a cached value is bytes, got {type(value).__name__}")
        self._published = True
        self._value = value
        if not self._future.done():
            self._future.set_result(value)

    async def wait(self) -> bytes | None:
        """The leader's value, or None if it failed (compute on your own then). Waits as long
        as the in-process leader runs; it always ends its flight (value, error or cancel)."""
        if self.leader:
            raise RuntimeError("the leader of a flight computes; it does not wait()")
        if self._future.done():
            return self._future.result()
        # shield: a cancelled follower must not cancel the future the other followers share
        return await asyncio.shield(self._future)

    def _follow(self, value: bytes) -> None:
        """Another replica had the value: this caller and its local followers use it."""
        self.leader = False
        if not self._future.done():
            self._future.set_result(value)


# -- the cache -----------------------------------------------------------------------------------


class ResponseCache:
    """The gateway's response cache (see the module docstring for the design).

    Args:
        url: Redis URL; None: an in-process LRU.
        ttl_s: absolute lifetime of an entry.
        policy: default policy: ``deterministic``, ``always`` or ``never``.
        max_entries: LRU capacity (in-process only).
        shared: model/agent names whose entries are shared across tenants.
        socket_timeout_ms: deadline of each Redis call (connect, pool wait and reply).
        policies: per model/agent policy overriding ``policy``.
        flight_wait_s: longest a replica waits for another replica's leader (and the lifetime
            of the flight lock) before computing on its own.
        breaker_threshold: consecutive Redis failures that open the breaker.
        breaker_cooldown_s: how long the breaker stays open before a trial call.
        max_connections: Redis connection pool size of this replica.
        clock: monotonic seconds for the LRU expiry and the breaker (tests inject one).

    Example:
        >>> async def answer(cache: ResponseCache, key: str, decision: CacheDecision) -> bytes:
        ...     async def produce() -> bytes | None:
        ...         return b'{"choices": []}'
        ...     value, status = await cache.get_or_compute(key, produce, decision)
        ...     return value
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        ttl_s: float = 3600.0,
        policy: Policy = "deterministic",
        max_entries: int = 10_000,
        shared: Iterable[str] = (),
        socket_timeout_ms: int = 50,
        policies: Mapping[str, Policy] | None = None,
        flight_wait_s: float = 5.0,
        breaker_threshold: int = 3,
        breaker_cooldown_s: float = 5.0,
        max_connections: int = 128,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _positive("ttl_s", ttl_s)
        _positive("socket_timeout_ms", socket_timeout_ms)
        _positive("flight_wait_s", flight_wait_s)
        _positive("max_entries", max_entries)
        _positive("max_connections", max_connections)
        self.policies: dict[str, Policy] = dict(policies or {})
        for where, p in (
            ("policy", policy),
            *((f"policies[{t!r}]", p) for t, p in self.policies.items()),
        ):
            if p not in _POLICIES:
                raise ValueError(f"{where} must be one of {_POLICIES}, got {p!r}")
        self.ttl_s = ttl_s
        self.policy: Policy = policy
        self.shared = frozenset(shared)
        self.flight_wait_s = flight_wait_s
        self._timeout_s = socket_timeout_ms / 1000
        # Store entries: Redis when there is a URL, else an LRU in this process.
        self._backend = _make_backend(
            url,
            timeout_s=self._timeout_s,
            max_entries=max_entries,
            max_connections=max_connections,
            clock=clock,
        )
        self._breaker = CircuitBreaker(
            threshold=breaker_threshold, cooldown_s=breaker_cooldown_s, clock=clock
        )
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        self._latency = _Histogram(LATENCY_BUCKETS_S)
        self._counts = dict.fromkeys(
            (
                "hits",
                "misses",
                "bypass",
                "errors",
                "short_circuits",
                "lookups",
                "stores",
                "single_flight_waits",
                "single_flight_timeouts",
            ),
            0,
        )
        self._closed = False
        log.debug("response cache: %s backend, ttl %.0fs", self._backend.name, ttl_s)

    @classmethod
    def from_config(
        cls, config: CacheConfig, *, redis_url: str | None = None, **overrides: Any
    ) -> ResponseCache:
        """Build from ``RaygentConfig.cache``; ``config.url`` wins over ``redis_url``.

        Args:
            config: the cache section.
            redis_url: ``RaygentConfig.redis_url`` (``REDIS_URL``).
            overrides: constructor arguments that win over the config (tests, ``clock``).
        """
        kwargs: dict[str, Any] = {
            "url": config.url or redis_url,
            "ttl_s": config.ttl_s,
            "policy": config.policy,
            "max_entries": config.max_entries,
            "shared": config.shared,
            "socket_timeout_ms": config.socket_timeout_ms,
        }
        # Fields proposed for CacheConfig; read when present so that adding them needs no change.
        for name in (
            "policies",
            "flight_wait_s",
            "breaker_threshold",
            "breaker_cooldown_s",
            "max_connections",
        ):
            if getattr(config, name, None) is not None:
                kwargs[name] = getattr(config, name)
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``redis`` or ``memory``."""
        return self._backend.name

    async def start(self) -> None:
        """Check that Redis answers; if not, open the breaker (never raises)."""
        if not self._backend.fallible:
            return
        t0 = time.perf_counter()
        try:
            await self._call("ping", self._backend.ping)
        except _Unavailable:
            self._breaker.trip("no answer at start")
            return
        log.info("response cache: Redis answers (%.1f ms)", 1000 * (time.perf_counter() - t0))

    async def close(self) -> None:
        """Close the Redis connections; safe to call twice. Later calls miss and store nothing."""
        if self._closed:
            return
        self._closed = True
        await self._backend.close()

    # -- policy ----------------------------------------------------------------------------------

    def is_shared(self, target: str) -> bool:
        """Whether ``target``'s entries are shared across tenants (pass to :func:`cache_key`)."""
        return target in self.shared

    def policy_for(self, target: str) -> Policy:
        return self.policies.get(target, self.policy)

    def decide(
        self,
        *,
        target: str,
        params: Mapping[str, Any] | None = None,
        deterministic: bool | None = None,
        cache_control: str | None = None,
    ) -> CacheDecision:
        """Whether this request may read and write the cache (counts a bypass when it may not
        read; call it once per request).

        Args:
            target: model or agent name (selects a per-target policy).
            params: sampling parameters; used for determinism when ``deterministic`` is None.
            deterministic: ``SamplingParams.is_deterministic`` if the caller has it.
            cache_control: the request's ``Cache-Control`` header.
        """
        if deterministic is None:
            deterministic = _is_deterministic(params)
        decision = cache_decision(
            policy=self.policy_for(target),
            deterministic=deterministic,
            cache_control=cache_control,
        )
        if not decision.lookup:
            self._counts["bypass"] += 1
        return decision

    # -- reads and writes ------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The stored value, or None (miss, Redis failed, breaker open, closed). Never raises
        for backend trouble."""
        value, _ = await self.lookup(key)
        return value

    async def lookup(self, key: str) -> tuple[bytes | None, LookupStatus]:
        """Like :meth:`get`, and say which: ``hit``, ``miss`` or ``error`` (the cache could not
        be asked; serve uncached and skip the store)."""
        _check_key(key)
        if self._closed:
            return None, "error"
        t0 = time.perf_counter()
        status: LookupStatus = "error"
        value: bytes | None = None
        try:
            value = await self._call("get", lambda: self._backend.get(key))
            status = "hit" if value is not None else "miss"
        except _Unavailable:
            pass
        self._latency.observe(time.perf_counter() - t0)
        self._counts["lookups"] += 1
        if status != "error":
            self._counts["hits" if status == "hit" else "misses"] += 1
        return value, status

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` for ``ttl_s`` (absolute). Never raises for backend trouble."""
        _check_key(key)
        if not isinstance(value, bytes):
            raise TypeError(f"a cached value is bytes, got {type(value).__name__}")
        if self._closed:
            return
        try:
            await self._call("put", lambda: self._backend.put(key, value, self.ttl_s))
        except _Unavailable:
            return
        self._counts["stores"] += 1

    # -- single flight ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def flight(
        self, key: str, *, store: bool = True, remote: bool = True
    ) -> AsyncIterator[Flight]:
        """Join the single flight for ``key``: one caller computes, the others wait for it.

        The first caller in this replica leads. With Redis (and ``store`` and ``remote``), the
        leader first looks for the value once more and takes the cross-replica lock; if another
        replica holds it, it waits for that replica's value (at most ``flight_wait_s``) and
        becomes a follower with the value, or a leader without the lock. A leader that leaves
        the block without publishing counts as failed. The leader's value is stored when the
        block ends (if ``store``).

        Args:
            key: from :func:`cache_key`.
            store: the value may be stored (``CacheDecision.store``); without it no other
                replica can be served, so the flight stays in-process.
            remote: use the backend (lock, store); False after a lookup that failed, so that a
                hung Redis is not waited for twice.

        Example (a stream: the leader streams live and records; followers replay)::

            async with cache.flight(key, store=decision.store) as f:
                if f.leader:
                    chunks = [c async for c in live_stream()]  # sent to the client as they come
                    f.publish(b"".join(chunks) if complete else None)
                elif (value := await f.wait()) is not None:
                    replay(value)
                else:
                    ...  # the leader failed: stream live, then cache.put() if complete
        """
        _check_key(key)
        future = self._flights.get(key)
        if future is not None:
            self._counts["single_flight_waits"] += 1
            yield Flight(key, future, leader=False, remote=False)
            return
        future = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        f = Flight(key, future, leader=True, remote=remote and store and not self._closed)
        outcome = "failed"
        try:
            if f._remote:
                await self._elect(f)
            yield f
            outcome = "done"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            await self._finish(f, outcome)

    async def get_or_compute(
        self,
        key: str,
        produce: Callable[[], Awaitable[bytes | None]],
        decision: CacheDecision,
    ) -> tuple[bytes | None, CacheStatus]:
        """Answer from the cache, or compute once for all concurrent identical requests.

        Args:
            key: from :func:`cache_key`.
            produce: computes the response: bytes to cache, or None when it must not be cached
                (an error response, a cut-off answer). Its exceptions propagate to its own
                caller only; followers of a flight whose leader raised compute on their own.
            decision: from :meth:`decide`.

        Returns:
            The value (None only if ``produce`` returned None) and ``hit`` (from the cache or
            another request's computation), ``miss`` (computed here) or ``bypass`` (the cache
            was not read: policy, header, or the cache failed).
        """
        if not decision.lookup:
            value = await produce()
            if value is not None and decision.store:
                await self.put(key, value)
            return value, "bypass"
        value, looked = await self.lookup(key)
        if value is not None:
            return value, "hit"
        healthy = looked == "miss"
        computed: CacheStatus = "miss" if healthy else "bypass"
        async with self.flight(key, store=decision.store, remote=healthy) as f:
            if f.leader:
                value = await produce()
                f.publish(value)
                return value, computed
            value = await f.wait()
        if value is not None:
            return value, "hit"
        value = await produce()  # the leader failed or could not be cached: on our own
        if value is not None and decision.store and healthy:
            await self.put(key, value)
        return value, computed

    async def _elect(self, f: Flight) -> None:
        """Cross-replica part of leading: the value, the lock, or a bounded wait for either."""
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flight_wait_s
        delay = _POLL_FIRST_S
        waited = False
        while True:
            try:
                state, value = await self._call(
                    "claim", lambda: self._backend.claim(f.key, token, self.flight_wait_s)
                )
            except _Unavailable:
                return  # lead without the lock; the store will be skipped or fail fast
            if state == _HIT and value is not None:
                f._follow(value)
                return
            if state == _ACQUIRED:
                f._token = token
                return
            if state == _LEADER_FAILED:
                return
            if not waited:
                waited = True
                self._counts["single_flight_waits"] += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._counts["single_flight_timeouts"] += 1
                log.info(
                    "response cache: waited %.1fs for another replica's answer to %s…; "
                    "computing here (raise flight_wait_s to wait longer)",
                    self.flight_wait_s,
                    f.key[:12],
                )
                return
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX_S)

    async def _finish(self, f: Flight, outcome: str) -> None:
        """End a leader's flight: wake the followers, then store and unlock (or mark failed)."""
        if self._flights.get(f.key) is f._future:
            del self._flights[f.key]
        value = f._value if f._published else None
        if not f._future.done():
            f._future.set_result(value)
        if not f.leader or not f._remote:
            return
        if value is not None:
            mode = "put"
        elif f._token is None:
            return
        else:
            mode = "release" if outcome == "cancelled" else "fail"
        token = f._token
        try:
            await self._call(
                f"flight-{mode}",
                lambda: self._backend.settle(f.key, token, value, self.ttl_s, mode),
            )
        except _Unavailable:
            return
        if mode == "put":
            self._counts["stores"] += 1

    # -- metrics ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for metrics.

        ``lookups`` = ``hits`` + ``misses`` + failed lookups (the cache asked, by request);
        ``errors`` counts every backend call that failed or was skipped by the open breaker
        (``short_circuits``), lookups, stores and flight calls alike; ``bypass`` counts
        requests :meth:`decide` kept from reading; ``single_flight_waits`` counts requests that
        waited for another's computation (in this replica or another),
        ``single_flight_timeouts`` those that gave up waiting for another replica.
        ``lookup_latency`` is a Prometheus-style histogram: ``buckets`` holds
        ``(upper_bound_s, cumulative_count)`` pairs, the last bound ``inf``.
        """
        out: dict[str, Any] = {"backend": self._backend.name, **self._counts}
        out["breaker_state"] = self._breaker.state if self._backend.fallible else "closed"
        out["breaker_opens"] = self._breaker.opens
        out["lookup_latency"] = self._latency.snapshot()
        out["in_flight"] = len(self._flights)
        if isinstance(self._backend, _MemoryBackend):
            out["entries"] = len(self._backend)
            out["evictions"] = self._backend.evictions
        return out

    # -- the one place backend errors are handled ------------------------------------------------

    async def _call(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one backend call under the breaker and the deadline; failures leave as
        ``_Unavailable`` (counted, and logged while the breaker is closed)."""
        if not self._backend.fallible:
            return await op()
        if not self._breaker.allow():
            self._counts["errors"] += 1
            self._counts["short_circuits"] += 1
            raise _Unavailable(what)
        task = asyncio.current_task()
        cancels = _cancel_requests(task)
        t0 = time.perf_counter()
        try:
            result = await _within(self._timeout_s, op)
        except MaxConnectionsError as exc:  # our pool is full; Redis may be fine
            self._breaker.abandon()
            self._fail(what, t0, exc, trip=False)
            raise _Unavailable(what) from exc
        except _DOWN as exc:
            self._fail(what, t0, exc, trip=True)
            raise _Unavailable(what) from exc
        except RedisError as exc:  # an answer (OOM, READONLY, ...): Redis is up
            self._breaker.success()
            self._fail(what, t0, exc, trip=False)
            raise _Unavailable(what) from exc
        except BaseException:
            self._breaker.abandon()
            raise
        self._breaker.success()
        if _cancel_requests(task) > cancels:
            raise asyncio.CancelledError  # redis-py swallowed our cancel (wait_for before 3.12)
        return result

    def _fail(self, what: str, t0: float, exc: BaseException, *, trip: bool) -> None:
        self._counts["errors"] += 1
        described = self._describe(exc)
        if self._breaker.state == "closed":
            log.warning(
                "response cache: Redis %s failed after %.1f ms: %s; serving uncached",
                what,
                1000 * (time.perf_counter() - t0),
                described,
            )
        reason = f"{what}: {described}"
        if trip:
            self._breaker.failure(reason)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, (RedisTimeoutError, asyncio.TimeoutError)):
            ms = round(1000 * self._timeout_s)
            return f"no answer within {ms} ms (cache.socket_timeout_ms)"
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


async def _within(timeout_s: float, op: Callable[[], Awaitable[T]]) -> T:
    """``await op()`` with a deadline (``TimeoutError`` when it passes)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout_s):
            return await op()
    return await asyncio.wait_for(op(), timeout_s)


def _cancel_requests(task: asyncio.Task[Any] | None) -> int:
    """How many cancels ``task`` has been asked for and not yet consumed (Python 3.11+)."""
    counter = getattr(task, "cancelling", None)
    return counter() if counter is not None else 0
