"""Where cache entries live: an in-process LRU, or Redis -- one server or a Redis Cluster (the
only module here that imports ``redis``). Methods raise whatever their transport raises;
:class:`~runtime.cache.core.ResponseCache` translates, so no Redis exception leaves the package.

Keys: a value lives at ``raygent:cache:v2:{<hex>}`` and its flight lock at
``raygent:cache:v2:lock:{<hex>}``. The braces are a Redis Cluster hash tag: the flight scripts
touch both keys, and the tag puts them in one slot; entries spread over the slots by their hash.
(``v1`` keys had no tag; a v2 cache does not read them, they expire.)

Round trips per request (Redis): a lookup that leads a flight is one ``EVALSHA`` of the claim
script (the value, else the flight lock); a hit from another request in flight here is none; a
store is one ``EVALSHA`` (value and unlock). redis-py parses replies with hiredis when it is
installed (the ``redis[hiredis]`` dependency), which keeps a large cached answer's parse off
the event loop's budget.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.redis_client import connect, is_cluster, ready

__all__ = [
    "ACQUIRED",
    "ANSWER_ERRORS",
    "DOWN_ERRORS",
    "POOL_FULL_ERRORS",
    "TIMEOUT_ERRORS",
    "HIT",
    "KEY_PREFIX",
    "LEADER_FAILED",
    "LOCK_PREFIX",
    "MISS_HELD",
    "Backend",
    "MemoryBackend",
    "RedisBackend",
    "lock_key",
    "make_backend",
    "value_key",
]

KEY_PREFIX = "raygent:cache:v2:"
LOCK_PREFIX = KEY_PREFIX + "lock:"


def value_key(key: str) -> str:
    """Where the value of cache key ``key`` lives in Redis."""
    return f"{KEY_PREFIX}{{{key}}}"


def lock_key(key: str) -> str:
    """The flight lock of ``key``: same hash tag as its value, so the same cluster slot."""
    return f"{LOCK_PREFIX}{{{key}}}"


_FAILED_MARK = "!failed"  # lock value left by a leader that failed; tokens are hex, never "!"
_FAILED_MARK_S = 1.0  # how long waiters (and newcomers) read "the leader failed, go ahead"

# Claim results (the flight script and the in-process store agree on them).
MISS_HELD, HIT, ACQUIRED, LEADER_FAILED = 0, 1, 2, 3


# -- backends ------------------------------------------------------------------------------------


class Backend(ABC):
    """Where entries live. Methods raise whatever their transport raises; the cache translates."""

    name: str
    fallible: bool

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    @abstractmethod
    async def claim(self, key: str, token: str, lock_s: float) -> tuple[int, bytes | None]:
        """The value (``HIT``), or the flight lock (``ACQUIRED``), or ``LEADER_FAILED``, or
        ``MISS_HELD`` (another replica computes)."""

    @abstractmethod
    async def settle(
        self, key: str, token: str | None, value: bytes | None, ttl_s: float, mode: str
    ) -> None:
        """End a flight: ``put`` (store, unlock), ``release`` (unlock) or ``fail`` (mark)."""

    async def ping(self) -> None:
        return None

    async def warm(self, connections: int) -> None:
        """Get ready for the first requests (open connections, load scripts)."""
        return None  # noqa: RET501 (like ping and close: nothing to do by default)

    async def close(self) -> None:
        return None


class MemoryBackend(Backend):
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
        return (HIT, value) if value is not None else (ACQUIRED, None)

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


class RedisBackend(Backend):
    """One Redis (``redis://``, ``rediss://``, ``unix://``) or one Redis Cluster
    (``redis+cluster://``, see :mod:`runtime.redis_client`) shared by every gateway replica."""

    name = "redis"
    fallible = True

    def __init__(self, url: str, *, timeout_s: float, max_connections: int) -> None:
        common = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),  # a retry after a timeout doubles the stall; none
            "client_name": "raygent:cache",  # names the connections in CLIENT LIST
        }
        self._redis: aioredis.Redis | RedisCluster
        if is_cluster(url):
            # A pool per node, ``max_connections`` each; a full one fails the call (pool full,
            # which the cache does not count against Redis). MOVED and ASK are followed; a
            # master that fails over costs the calls in flight, then the slot map is reloaded.
            # Every call first awaits ``ready``: a flag check once the slot map is loaded.
            self._redis = connect(url, max_connections=max_connections, **common)
        else:
            # A full pool makes a call wait for a free connection (within the caller's
            # deadline) instead of failing at once: a burst is not an outage.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=2 * timeout_s,  # a backstop: the caller's deadline ends the wait first
                **common,
            )
            self._redis = aioredis.Redis.from_pool(pool)
        self._claim = self._redis.register_script(_CLAIM_LUA)
        self._settle = self._redis.register_script(_SETTLE_LUA)

    async def get(self, key: str) -> bytes | None:
        await ready(self._redis)
        return await self._redis.get(value_key(key))

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        await ready(self._redis)
        await self._redis.set(value_key(key), value, px=_ms(ttl_s))

    async def claim(self, key: str, token: str, lock_s: float) -> tuple[int, bytes | None]:
        await ready(self._redis)
        out = await self._claim(
            keys=[value_key(key), lock_key(key)], args=[token, _ms(lock_s), _FAILED_MARK]
        )
        return int(out[0]), (out[1] if len(out) > 1 else None)

    async def settle(
        self, key: str, token: str | None, value: bytes | None, ttl_s: float, mode: str
    ) -> None:
        await ready(self._redis)
        await self._settle(
            keys=[value_key(key), lock_key(key)],
            args=[mode, token or "", value or b"", _ms(ttl_s), _FAILED_MARK, _ms(_FAILED_MARK_S)],
        )

    async def ping(self) -> None:
        await self._redis.ping()

    async def warm(self, connections: int) -> None:
        """Open ``connections`` connections and load both scripts: a new connection costs
        three round trips (connect, ``CLIENT SETNAME``, ``CLIENT SETINFO``) and a script not yet
        loaded two more (``NOSCRIPT``, ``SCRIPT LOAD``) -- each a loop iteration on a busy
        event loop (``python -m bench.cache_load``, ``connect`` rows)."""
        if isinstance(self._redis, RedisCluster):
            await ready(self._redis)  # the slot map; each node's pool opens on use
        else:
            pool = self._redis.connection_pool
            held = []
            try:
                for _ in range(connections):
                    held.append(await pool.get_connection())
            finally:
                for conn in held:
                    await pool.release(conn)
        for script in (self._claim, self._settle):
            await self._redis.script_load(script.script)  # on a cluster: on every master

    async def close(self) -> None:
        await self._redis.aclose()


def make_backend(
    url: str | None,
    *,
    timeout_s: float,
    max_entries: int,
    max_connections: int,
    clock: Callable[[], float],
) -> Backend:
    """The store of a cache:

    * ``RedisBackend`` for a URL (``redis://``, ``rediss://``, ``unix://``, or
      ``redis+cluster://`` for a Redis Cluster): shared by every replica, with cross-replica
      single flight;
    * ``MemoryBackend`` for None: an LRU per process (the embedded default).
    """
    if url:
        return RedisBackend(url, timeout_s=timeout_s, max_connections=max_connections)
    return MemoryBackend(max_entries, clock)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# How a failed call is read (the cache's breaker acts on it):
# Redis is down or hung: count towards opening the breaker. asyncio.TimeoutError is the builtin
# TimeoutError (an OSError) from 3.11 on, not before. A cluster with a slot no master serves
# (a failover under way) is down for the keys in it.
DOWN_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
)
# This process's connection pool is full: Redis may be fine; not the breaker's business.
POOL_FULL_ERRORS = (MaxConnectionsError,)
# Redis answered with an error (OOM, READONLY...): it is up. RedisClusterException is not a
# RedisError: redis-py raises it for a cluster call it will not send (keys in two slots).
ANSWER_ERRORS = (RedisError, RedisClusterException)
# No answer in time (for messages).
TIMEOUT_ERRORS = (RedisTimeoutError, asyncio.TimeoutError)
