"""Prometheus metrics of a gateway replica, rendered for ``GET /metrics``.

Metrics live in a private ``prometheus_client.CollectorRegistry`` per :class:`Metrics`, not the
global ``REGISTRY``: Ray and vLLM register their own collectors in the global one (a gateway
replica's ``/metrics`` would then mix in the worker's internals, or double-export what Ray's
metrics agent already scrapes), and a private registry lets several ``Metrics`` live in one
process (tests, a restarted replica) without "Duplicated timeseries" errors. Metrics are
independent of tracing; ``TelemetryConfig.metrics`` turns them off. They are not bridged to
OTLP metrics: Prometheus text is what ``/metrics`` serves.

Each gateway replica counts what it served; behind Serve's proxy a scrape of ``/metrics``
reaches one replica, so with several gateway replicas scrape each replica (or sum
``rate()`` of the counters over scrapes), not the proxy alone.

Example:
    >>> metrics = Metrics()
    >>> metrics.cache_event("hit", lookup_seconds=0.002)
    >>> body, content_type = metrics.render()
    >>> b"raygent_cache_hit_ratio 1.0" in body
    True
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from runtime.config import TelemetryConfig

__all__ = ["CACHE_RESULTS", "QUEUE_KINDS", "Metrics", "ShadowOutcome"]

log = logging.getLogger(__name__)

CacheResult = Literal["hit", "miss", "bypass", "error"]
QueueKind = Literal["mailbox", "task_queue"]
ShadowOutcome = Literal["same", "different", "error", "dropped"]


# -- metrics -----------------------------------------------------------------------------------

REQUEST_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
)  # fmt: skip
"""End-to-end request latency: a cache hit (ms) to a long generation (minutes)."""
TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0,
)  # fmt: skip
"""Time to first token (vLLM's own buckets, up to a model still loading)."""
TOKENS_PER_S_BUCKETS = (
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
)  # fmt: skip
"""Output tokens per second of one request (CPU: single digits; a GPU: hundreds)."""
CACHE_LOOKUP_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Response-cache lookup: in-process (µs) to Redis at its socket timeout."""

CACHE_RESULTS: tuple[CacheResult, ...] = ("hit", "miss", "bypass", "error")
QUEUE_KINDS: tuple[QueueKind, ...] = ("mailbox", "task_queue")


@dataclass(frozen=True)
class _Instruments:
    request_seconds: Histogram
    ttft_seconds: Histogram
    tokens_per_second: Histogram
    output_tokens: Counter
    cache_events: Counter
    cache_lookup_seconds: Histogram
    cache_hit_ratio: Gauge
    queue_depth: Gauge
    in_flight: Gauge
    shadow_requests: Counter
    shadow_seconds: Histogram


def _instruments(registry: CollectorRegistry) -> _Instruments:
    r = registry
    return _Instruments(
        request_seconds=Histogram(
            "raygent_request_duration_seconds",
            "Gateway request latency, end to end (a stream: until its last byte).",
            ["route", "target", "variant", "status"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        ),
        ttft_seconds=Histogram(
            "raygent_time_to_first_token_seconds",
            "Time from request arrival to the first generated token.",
            ["target", "variant"],
            buckets=TTFT_BUCKETS_S,
            registry=r,
        ),
        tokens_per_second=Histogram(
            "raygent_output_tokens_per_second",
            "Generation rate of one request (output tokens / generation time).",
            ["target", "variant"],
            buckets=TOKENS_PER_S_BUCKETS,
            registry=r,
        ),
        output_tokens=Counter(
            "raygent_output_tokens",
            "Output tokens generated.",
            ["target", "variant"],
            registry=r,
        ),
        cache_events=Counter(
            "raygent_cache_events", "Response-cache lookups by result.", ["result"], registry=r
        ),
        cache_lookup_seconds=Histogram(
            "raygent_cache_lookup_seconds",
            "Response-cache lookup time.",
            buckets=CACHE_LOOKUP_BUCKETS_S,
            registry=r,
        ),
        cache_hit_ratio=Gauge(
            "raygent_cache_hit_ratio",
            "hits / (hits + misses) of this replica since it started (NaN before any); "
            "across replicas use rate() of raygent_cache_events_total.",
            registry=r,
        ),
        queue_depth=Gauge(
            "raygent_queue_depth",
            "Messages or tasks waiting, by queue.",
            ["kind", "name"],
            registry=r,
        ),
        in_flight=Gauge(
            "raygent_requests_in_flight", "Requests being served by this replica.", registry=r
        ),
        shadow_requests=Counter(
            "raygent_shadow_requests",
            "Requests copied to a shadow variant, by outcome: same or different (its answer's "
            "text against the one the client got), error, or dropped (the shadow bound was "
            "full).",
            ["target", "variant", "outcome"],
            registry=r,
        ),
        shadow_seconds=Histogram(
            "raygent_shadow_duration_seconds",
            "Time a shadow variant took to answer its copy (compare with "
            "raygent_request_duration_seconds of the arm that answered the client).",
            ["target", "variant"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        ),
    )


class Metrics:
    """The Prometheus metrics of one process, in a private registry, rendered for /metrics.

    Label values must come from bounded sets (route templates, configured model and agent
    names, status codes), never from request content. Calls are cheap and thread-safe; with
    ``enabled=False`` every call is a no-op and :meth:`render` returns an empty body.

    Args:
        enabled: ``TelemetryConfig.metrics``.
        registry: where the metrics live; default a new private registry.

    Example:
        >>> metrics = Metrics()
        >>> metrics.observe_request("/v1/chat/completions", "tiny", 200, 0.4)
        >>> with metrics.in_flight():
        ...     pass
        >>> body, content_type = metrics.render()
        >>> content_type.startswith("text/plain")
        True
    """

    def __init__(self, *, enabled: bool = True, registry: CollectorRegistry | None = None) -> None:
        self.enabled = enabled
        self.registry: CollectorRegistry | None = None
        self._m: _Instruments | None = None
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        if enabled:
            self.registry = registry if registry is not None else CollectorRegistry()
            self._m = _instruments(self.registry)
            self._m.cache_hit_ratio.set_function(self.cache_hit_ratio)

    @classmethod
    def from_config(cls, config: TelemetryConfig) -> Metrics:
        """Metrics on or off as ``config.metrics`` says."""
        return cls(enabled=config.metrics)

    def observe_request(
        self, route: str, target: str, status: int | str, seconds: float, variant: str = ""
    ) -> None:
        """One finished request: its route template, model or ``agent:<name>``, HTTP status,
        and the arm that answered when the target has variants ("" otherwise)."""
        if self._m is not None:
            self._m.request_seconds.labels(route, target, variant, str(status)).observe(seconds)

    def observe_ttft(self, target: str, seconds: float, variant: str = "") -> None:
        """Time to the first token of one generation."""
        if self._m is not None:
            self._m.ttft_seconds.labels(target, variant).observe(seconds)

    def observe_generation(
        self, target: str, output_tokens: int, seconds: float, variant: str = ""
    ) -> None:
        """One finished generation: its output tokens, and the seconds they took — for a
        stream, first token to last (the decode rate; TTFT is observed apart). The rate is
        observed only when both are positive."""
        if self._m is None or output_tokens <= 0:
            return
        self._m.output_tokens.labels(target, variant).inc(output_tokens)
        if seconds > 0:
            self._m.tokens_per_second.labels(target, variant).observe(output_tokens / seconds)

    def observe_shadow(
        self, target: str, variant: str, outcome: ShadowOutcome, seconds: float | None = None
    ) -> None:
        """One copy of a request to a shadow variant: its outcome, and how long the shadow
        took (not for a dropped copy)."""
        if self._m is None:
            return
        self._m.shadow_requests.labels(target, variant, outcome).inc()
        if seconds is not None:
            self._m.shadow_seconds.labels(target, variant).observe(seconds)

    def cache_event(self, result: CacheResult, lookup_seconds: float | None = None) -> None:
        """One response-cache decision: ``hit``, ``miss``, ``bypass`` (not cacheable) or
        ``error`` (the cache was down; the request went uncached).

        Raises:
            ValueError: another ``result`` (it is a label: the set must stay closed).
        """
        if result not in CACHE_RESULTS:
            raise ValueError(f"cache result {result!r} is not one of {CACHE_RESULTS}")
        if self._m is None:
            return
        self._m.cache_events.labels(result).inc()
        if lookup_seconds is not None:
            self._m.cache_lookup_seconds.observe(lookup_seconds)
        if result in ("hit", "miss"):
            with self._lock:
                if result == "hit":
                    self._hits += 1
                else:
                    self._misses += 1

    def cache_hit_ratio(self) -> float:
        """hits / (hits + misses) so far; NaN before the first (an idle replica reports no
        ratio rather than a ratio of 0 that would page someone)."""
        with self._lock:
            looked_up = self._hits + self._misses
            return self._hits / looked_up if looked_up else math.nan

    def set_queue_depth(self, kind: QueueKind, name: str, depth: float) -> None:
        """The current depth of a mailbox (agent name) or task queue (queue name)."""
        if self._m is not None:
            self._m.queue_depth.labels(_queue_kind(kind), name).set(depth)

    def watch_queue_depth(self, kind: QueueKind, name: str, depth: Callable[[], float]) -> None:
        """Read a queue's depth at scrape time with ``depth()`` (cheap, non-blocking; called
        in the scraping thread). A callback that raises reports NaN. Holds ``depth`` until
        :meth:`forget_queue`."""
        if self._m is None:
            return

        def read() -> float:
            try:
                return float(depth())
            except Exception:
                log.debug("queue depth of %s %r failed", kind, name, exc_info=True)
                return math.nan

        self._m.queue_depth.labels(_queue_kind(kind), name).set_function(read)

    def forget_queue(self, kind: QueueKind, name: str) -> None:
        """Stop reporting a queue (its mailbox or queue is gone)."""
        if self._m is not None:
            try:
                self._m.queue_depth.remove(kind, name)
            except KeyError:
                pass

    def watch_cache(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Export the response cache's own counters when scraped: backend errors, breaker
        state and opens, and the backend lookup-latency histogram (``ResponseCache.stats``)."""
        if self.registry is not None:
            self.registry.register(_CacheCollector(stats))

    def in_flight(self) -> AbstractContextManager[Any]:
        """Count a request as in flight for the duration of a ``with`` block."""
        if self._m is None:
            return _NULL_CONTEXT
        return self._m.in_flight.track_inprogress()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The ``/metrics`` body and its content type.

        Args:
            accept: the request's ``Accept`` header; OpenMetrics when it asks for it, else the
                Prometheus text format 0.0.4.
        """
        encoder, content_type = choose_encoder(accept or "")
        if self.registry is None:
            return b"", content_type
        return encoder(self.registry), content_type


def _queue_kind(kind: str) -> str:
    if kind not in QUEUE_KINDS:
        raise ValueError(f"queue kind {kind!r} is not one of {QUEUE_KINDS}")
    return kind


_NULL_CONTEXT = nullcontext()  # stateless: one serves every disabled in_flight()


class _CacheCollector:
    """Reads ``ResponseCache.stats()`` at scrape time (the cache keeps the counts; copying
    them into instruments on every request would cost more than the scrape does)."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []  # unknown until read; prometheus_client then calls collect() lazily

    def collect(self) -> Any:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        s = self._stats()
        yield CounterMetricFamily(
            "raygent_cache_backend_errors",
            "Cache backend calls that failed or were skipped by the open breaker.",
            value=s.get("errors", 0),
        )
        yield CounterMetricFamily(
            "raygent_cache_breaker_opens",
            "Times the cache's circuit breaker opened.",
            value=s.get("breaker_opens", 0),
        )
        yield GaugeMetricFamily(
            "raygent_cache_breaker_open",
            "1 while the cache's circuit breaker is open.",
            value=1.0 if s.get("breaker_state") == "open" else 0.0,
        )
        lat = s.get("lookup_latency")
        if lat:
            buckets = [("+Inf" if math.isinf(b) else repr(float(b)), n) for b, n in lat["buckets"]]
            yield HistogramMetricFamily(
                "raygent_cache_backend_lookup_seconds",
                "Latency of cache backend lookups (Redis round trips or LRU reads).",
                buckets=buckets,
                sum_value=lat["sum_s"],
            )
