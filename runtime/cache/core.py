"""``ResponseCache``: lookups and stores under a circuit breaker, and single flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from runtime.cache.backends import (
    ACQUIRED,
    ANSWER_ERRORS,
    DOWN_ERRORS,
    HIT,
    LEADER_FAILED,
    POOL_FULL_ERRORS,
    TIMEOUT_ERRORS,
    MemoryBackend,
    make_backend,
)
from runtime.cache.breaker import CircuitBreaker
from runtime.cache.deadline import DeadlineExpired, DeadlinePolicy, run_within
from runtime.cache.keys import (
    POLICIES,
    CacheDecision,
    Policy,
    cache_decision,
    check_key,
    is_deterministic,
)
from runtime.errors import RaygentRuntimeError

if TYPE_CHECKING:
    from runtime.config import CacheConfig

__all__ = ["LATENCY_BUCKETS_S", "CacheStatus", "Flight", "LookupStatus", "ResponseCache"]

log = logging.getLogger(__name__)

T = TypeVar("T")
CacheStatus = Literal["hit", "miss", "bypass"]
LookupStatus = Literal["hit", "miss", "error"]

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Upper bounds of the lookup-latency histogram (seconds); a last ``+Inf`` bucket is implied."""

_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.05
# The deadline's ticks (runtime.cache.deadline), from ``python -m bench.cache_load`` on the
# 2-core test machine: an idle loop, or one with every core busy, wakes a timer at most ~7 ms
# late (p99.9 2-5 ms), so a tick more than 10 ms late means the loop was busy elsewhere. A
# tick every 10 ms samples the lag finely enough for a 100 ms budget and costs a slow call ten
# timer callbacks; a call that answers in time (p99.9 < 25 ms loaded) sees at most two.
_DEADLINE_SLACK_S = 0.010
_DEADLINE_TICK_S = 0.010


class Unavailable(RaygentRuntimeError):
    """The backend failed or the breaker is open. Never leaves this package."""


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


# -- single flight -------------------------------------------------------------------------------


class Flight:
    """One caller's part in a single flight for a key (see :meth:`ResponseCache.flight`).

    Attributes:
        key: the cache key.
        leader: this caller computes the value (and calls :meth:`publish`); otherwise it
            calls :meth:`wait`.
    """

    def __init__(
        self,
        key: str,
        future: asyncio.Future[bytes | None],
        *,
        leader: bool,
        remote: bool,
        origin: Flight | None = None,
    ) -> None:
        self.key = key
        self.leader = leader
        self._future = future
        self._remote = remote  # the leader may take the lock and store in the backend
        self._value: bytes | None = None
        self._published = False
        self._token: str | None = None  # the Redis lock this leader holds
        self._origin = origin  # a local follower's leader
        self._looked: LookupStatus | None = None

    @property
    def looked(self) -> LookupStatus | None:
        """What the flight's read of the cache found (``flight(lookup=True)``): ``hit``,
        ``miss`` or ``error`` (the cache could not be asked: serve uncached, store nothing);
        a local follower reports its leader's. None without ``lookup``."""
        return self._origin._looked if self._origin is not None else self._looked

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
        socket_timeout_ms: how long Redis has to answer one call while this replica's event
            loop is on time (connect, pool wait and reply); time the loop spends elsewhere is
            not counted (:mod:`runtime.cache.deadline`).
        policies: per model/agent policy overriding ``policy``.
        flight_wait_s: longest a replica waits for another replica's leader (and the lifetime
            of the flight lock) before computing on its own.
        breaker_threshold: consecutive Redis failures that open the breaker.
        breaker_cooldown_s: how long the breaker stays open before a trial call.
        max_connections: Redis connection pool size of this replica.
        max_wait_ms: wall-clock bound of one Redis call, however busy the loop is; None:
            10 x ``socket_timeout_ms``.
        warm_connections: Redis connections :meth:`start` opens ahead of the first requests.
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
        socket_timeout_ms: int = 100,
        policies: Mapping[str, Policy] | None = None,
        flight_wait_s: float = 5.0,
        breaker_threshold: int = 3,
        breaker_cooldown_s: float = 1.0,
        max_connections: int = 64,
        max_wait_ms: int | None = None,
        warm_connections: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _positive("ttl_s", ttl_s)
        _positive("socket_timeout_ms", socket_timeout_ms)
        _positive("flight_wait_s", flight_wait_s)
        _positive("max_entries", max_entries)
        _positive("max_connections", max_connections)
        if max_wait_ms is None:
            max_wait_ms = 10 * socket_timeout_ms
        if max_wait_ms < socket_timeout_ms:
            raise ValueError(
                f"max_wait_ms ({max_wait_ms}) must be >= socket_timeout_ms ({socket_timeout_ms})"
            )
        if not 0 <= warm_connections <= max_connections:
            raise ValueError(
                f"warm_connections must be in [0, max_connections={max_connections}], "
                f"got {warm_connections}"
            )
        self.policies: dict[str, Policy] = dict(policies or {})
        for where, p in (
            ("policy", policy),
            *((f"policies[{t!r}]", p) for t, p in self.policies.items()),
        ):
            if p not in POLICIES:
                raise ValueError(f"{where} must be one of {POLICIES}, got {p!r}")
        self.ttl_s = ttl_s
        self.policy: Policy = policy
        self.shared = frozenset(shared)
        self.flight_wait_s = flight_wait_s
        self._timeout_s = socket_timeout_ms / 1000
        self._deadline = DeadlinePolicy(
            budget_s=self._timeout_s,
            tick_s=_DEADLINE_TICK_S,
            slack_s=_DEADLINE_SLACK_S,
            cap_s=max_wait_ms / 1000,
        )
        self._warm = warm_connections
        # Store entries: Redis when there is a URL, else an LRU in this process. redis-py's own
        # socket timeouts are the wall-clock cap: a backstop; our deadline decides first.
        self._backend = make_backend(
            url,
            timeout_s=self._deadline.cap_s,
            max_entries=max_entries,
            max_connections=max_connections,
            clock=clock,
        )
        self._breaker = CircuitBreaker(
            threshold=breaker_threshold, cooldown_s=breaker_cooldown_s, clock=clock
        )
        self._flights: dict[str, Flight] = {}  # the local leader of each key in flight
        self._answered_at = -math.inf  # perf_counter() of the last call Redis answered
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
                "timeouts",
                "excused_timeouts",
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
            "max_wait_ms",
            "warm_connections",
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
        """Check that Redis answers; if not, open the breaker (never raises). Then open
        ``warm_connections`` connections and load the flight scripts, so that the first burst
        of requests does not pay for connecting (3 round trips each: connect, name, client
        info) and for loading scripts."""
        if not self._backend.fallible:
            return
        t0 = time.perf_counter()
        try:
            await self._call("ping", self._backend.ping)
        except Unavailable:
            self._breaker.trip("no answer at start")
            return
        log.info("response cache: Redis answers (%.1f ms)", 1000 * (time.perf_counter() - t0))
        try:  # not through the breaker: a slow warm-up says nothing about Redis
            await asyncio.wait_for(self._backend.warm(self._warm), self._deadline.cap_s)
        except Exception as exc:  # the connections open on demand instead
            log.info("response cache: Redis warm-up skipped: %s", self._describe(exc))

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
            deterministic = is_deterministic(params)
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
        check_key(key)
        if self._closed:
            return None, "error"
        t0 = time.perf_counter()
        status: LookupStatus = "error"
        value: bytes | None = None
        try:
            value = await self._call("get", lambda: self._backend.get(key))
            status = "hit" if value is not None else "miss"
        except Unavailable:
            pass
        self._count_lookup(t0, status)
        return value, status

    def _count_lookup(self, t0: float, status: LookupStatus) -> None:
        self._latency.observe(time.perf_counter() - t0)
        self._counts["lookups"] += 1
        if status != "error":
            self._counts["hits" if status == "hit" else "misses"] += 1

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` for ``ttl_s`` (absolute). Never raises for backend trouble."""
        check_key(key)
        if not isinstance(value, bytes):
            raise TypeError(f"a cached value is bytes, got {type(value).__name__}")
        if self._closed:
            return
        try:
            await self._call("put", lambda: self._backend.put(key, value, self.ttl_s))
        except Unavailable:
            return
        self._counts["stores"] += 1

    # -- single flight ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def flight(
        self, key: str, *, store: bool = True, lookup: bool = False
    ) -> AsyncIterator[Flight]:
        """Join the single flight for ``key``: one caller computes, the others wait for it.

        The first caller in this replica leads. With Redis (and ``store``), the
        leader first looks for the value once more and takes the cross-replica lock; if another
        replica holds it, it waits for that replica's value (at most ``flight_wait_s``) and
        becomes a follower with the value, or a leader without the lock. A leader that leaves
        the block without publishing counts as failed. The leader's value is stored when the
        block ends (if ``store``).

        With ``lookup`` the flight is also the request's cache read, so that no separate
        :meth:`lookup` is needed: the leader's look for the value is that read (value and lock
        in one round trip), and a caller that finds an identical request in flight here makes
        no backend call at all. :attr:`Flight.looked` says what the read found; a leader whose
        read failed (``error``) makes no other backend call (lock, store).

        Args:
            key: from :func:`cache_key`.
            store: the value may be stored (``CacheDecision.store``); without it no other
                replica can be served, so the flight stays in-process.
            lookup: read the cache as part of joining (and count it as a lookup).

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
        check_key(key)
        leader = self._flights.get(key)
        if leader is not None:
            self._counts["single_flight_waits"] += 1
            yield Flight(key, leader._future, leader=False, remote=False, origin=leader)
            return
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        f = Flight(key, future, leader=True, remote=store and not self._closed)
        self._flights[key] = f
        outcome = "failed"
        try:
            if f._remote:
                await self._elect(f, lookup=lookup)
            elif lookup:
                value, f._looked = await self.lookup(key)
                if value is not None:
                    f._follow(value)
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
        async with self.flight(key, store=decision.store, lookup=True) as f:
            if f.leader:
                value = await produce()
                f.publish(value)
                return value, "bypass" if f.looked == "error" else "miss"
            value = await f.wait()
        if value is not None:
            return value, "hit"
        healthy = f.looked != "error"
        computed: CacheStatus = "miss" if healthy else "bypass"
        value = await produce()  # the leader failed or could not be cached: on our own
        if value is not None and decision.store and healthy:
            await self.put(key, value)
        return value, computed

    async def _elect(self, f: Flight, *, lookup: bool = False) -> None:
        """Cross-replica part of leading: the value, the lock, or a bounded wait for either.
        With ``lookup``, the first claim is also the request's lookup (counted, timed)."""
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flight_wait_s
        delay = _POLL_FIRST_S
        waited = False
        while True:
            t0 = time.perf_counter()
            try:
                state, value = await self._call(
                    "claim", lambda: self._backend.claim(f.key, token, self.flight_wait_s)
                )
            except Unavailable:
                if lookup and f._looked is None:
                    self._count_lookup(t0, "error")
                    f._looked = "error"
                    f._remote = False  # it failed once: no lock, no store for this request
                return  # lead without the lock; the store will be skipped or fail fast
            if lookup and f._looked is None:
                f._looked = "hit" if state == HIT and value is not None else "miss"
                self._count_lookup(t0, f._looked)
            if state == HIT and value is not None:
                f._follow(value)
                return
            if state == ACQUIRED:
                f._token = token
                return
            if state == LEADER_FAILED:
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
        if self._flights.get(f.key) is f:
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
        except Unavailable:
            return
        if mode == "put":
            self._counts["stores"] += 1

    # -- metrics ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for metrics.

        ``lookups`` = ``hits`` + ``misses`` + failed lookups (backend reads: :meth:`lookup`, or
        a flight leader's read; a request that joins a flight in this replica reads nothing);
        ``errors`` counts every backend call that failed or was skipped by the open breaker
        (``short_circuits``), lookups, stores and flight calls alike; ``bypass`` counts
        requests :meth:`decide` kept from reading; ``single_flight_waits`` counts requests that
        waited for another's computation (in this replica or another),
        ``single_flight_timeouts`` those that gave up waiting for another replica.
        ``timeouts`` counts calls that ran out of their deadline, ``excused_timeouts`` those
        of them not held against Redis (it answered other calls meanwhile).
        ``lookup_latency`` is a Prometheus-style histogram: ``buckets`` holds
        ``(upper_bound_s, cumulative_count)`` pairs, the last bound ``inf``.
        """
        out: dict[str, Any] = {"backend": self._backend.name, **self._counts}
        out["breaker_state"] = self._breaker.state if self._backend.fallible else "closed"
        out["breaker_opens"] = self._breaker.opens
        out["lookup_latency"] = self._latency.snapshot()
        out["in_flight"] = len(self._flights)
        if isinstance(self._backend, MemoryBackend):
            out["entries"] = len(self._backend)
            out["evictions"] = self._backend.evictions
        return out

    # -- the one place backend errors are handled ------------------------------------------------

    async def _call(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one backend call under the breaker and the deadline; failures leave as
        ``Unavailable`` (counted, and logged while the breaker is closed).

        What the breaker hears: an answer (a value, or an error reply such as OOM) is a
        success; a refused or reset connection is a failure; a timeout is a failure only if
        Redis answered no other call of this replica while this one waited -- otherwise Redis
        is alive and the wait was ours (a busy loop, a slow connection), which the breaker
        cannot cure ("excused": counted, logged at debug level, the request goes uncached).
        """
        if not self._backend.fallible:
            return await op()
        if not self._breaker.allow():
            self._counts["errors"] += 1
            self._counts["short_circuits"] += 1
            raise Unavailable(what)
        task = asyncio.current_task()
        cancels = _cancel_requests(task)
        t0 = time.perf_counter()
        try:
            result = await run_within(self._deadline, op)
        except DeadlineExpired as exc:
            self._counts["timeouts"] += 1
            excused = self._answered_at > t0
            if excused:
                self._counts["excused_timeouts"] += 1
                self._breaker.abandon()
            self._fail(what, t0, exc, trip=not excused, quiet=excused)
            raise Unavailable(what) from exc
        except POOL_FULL_ERRORS as exc:  # our pool is full; Redis may be fine
            self._breaker.abandon()
            self._fail(what, t0, exc, trip=False)
            raise Unavailable(what) from exc
        except DOWN_ERRORS as exc:
            self._fail(what, t0, exc, trip=True)
            raise Unavailable(what) from exc
        except ANSWER_ERRORS as exc:  # an answer (OOM, READONLY, ...): Redis is up
            self._answered()
            self._fail(what, t0, exc, trip=False)
            raise Unavailable(what) from exc
        except BaseException:
            self._breaker.abandon()
            raise
        self._answered()
        if _cancel_requests(task) > cancels:
            raise asyncio.CancelledError  # redis-py swallowed our cancel (wait_for before 3.12)
        return result

    def _answered(self) -> None:
        self._answered_at = time.perf_counter()
        self._breaker.success()

    def _fail(
        self, what: str, t0: float, exc: BaseException, *, trip: bool, quiet: bool = False
    ) -> None:
        self._counts["errors"] += 1
        described = self._describe(exc)
        if self._breaker.state == "closed":
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "response cache: Redis %s failed after %.1f ms: %s; serving uncached",
                what,
                1000 * (time.perf_counter() - t0),
                described,
            )
        reason = f"{what}: {described}"
        if trip:
            self._breaker.failure(reason)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, DeadlineExpired):
            ms = round(1000 * self._timeout_s)
            why = " (cache.max_wait_ms)" if exc.capped else ""
            late = "; this process's event loop was late, the wait was stretched" * exc.loop_late
            return f"no answer within {ms} ms (cache.socket_timeout_ms){why}{late}"
        if isinstance(exc, TIMEOUT_ERRORS):
            ms = round(1000 * self._deadline.cap_s)
            return f"no answer within {ms} ms (cache.max_wait_ms)"
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _cancel_requests(task: asyncio.Task[Any] | None) -> int:
    """How many cancels ``task`` has been asked for and not yet consumed (Python 3.11+)."""
    counter = getattr(task, "cancelling", None)
    return counter() if counter is not None else 0
