"""Serve request routing for model servers: warm replicas first.

Each ModelServer replica reports its readiness through Serve's ``record_routing_stats`` hook
(collected every ``models.<name>.routing_stats_period_s``):

* ``ready`` -- the engine is loaded and warmed up;
* ``on_demand`` -- no engine and none loading: it loads only when a request arrives (``lazy``,
  or unloaded after ``idle_unload_s``).

:class:`WarmFirstRequestRouter` ranks replicas by :func:`rank_replicas` and runs Serve's
"power of two choices" within a rank (the lower queue wins; a full rank falls through to the
next):

1. ready replicas;
2. on-demand replicas -- used only when every ready replica is at ``max_ongoing_requests``
   (lazy mode has to load somewhere; it does so on overflow rather than queueing);
3. replicas still loading or warming are *not* offered while any ready replica exists, so no
   user request waits for a load and warm-up when a warm replica could serve it. When no replica
   is ready, every replica is a candidate and requests wait inside one until it is.

Example:
    >>> stats = {"a": {"ready": True}, "b": {}, "c": {"on_demand": True}}
    >>> rank_replicas(["a", "b", "c"], stats.get)
    [['a'], ['c']]
    >>> rank_replicas(["b", "c"], {"b": {}, "c": {}}.get)
    [['b', 'c']]
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

__all__ = ["WarmFirstRequestRouter", "rank_replicas"]

T = TypeVar("T")


def rank_replicas(
    replicas: Sequence[T], stats_of: Callable[[T], Mapping[str, Any] | None]
) -> list[list[T]]:
    """Order ``replicas`` for routing: ready, then on-demand; everyone when none is ready."""
    ready, on_demand = [], []
    for r in replicas:
        stats = stats_of(r) or {}
        if stats.get("ready"):
            ready.append(r)
        elif stats.get("on_demand"):
            on_demand.append(r)
    if not ready:
        return [list(replicas)] if replicas else []
    return [ready, on_demand] if on_demand else [ready]


def _two_of(replicas: list[T]) -> list[T]:
    return replicas if len(replicas) <= 2 else random.sample(replicas, 2)


class WarmFirstRequestRouter(FIFOMixin, RequestRouter):
    """Power of two choices within readiness ranks (see the module docstring)."""

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        ranks = rank_replicas(candidate_replicas, lambda r: r.routing_stats)
        return [_two_of(rank) for rank in ranks]
