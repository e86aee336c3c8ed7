"""Serve request routing for model servers: warm replicas first, then each conversation's own.

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

**Affinity** (``models.<name>.affinity``). A conversation's later turns repeat its earlier
ones, so the replica that served them holds their KV blocks in vLLM's prefix cache and skips
their prefill. Within the first rank, a request goes to its conversation's *home* replica while
that replica is not overloaded (its queue at most ``affinity_max_imbalance`` above the least
loaded one's, and below ``max_ongoing_requests``); otherwise power of two choices as above.

* The conversation is named by :func:`affinity_key`: the caller's session (the gateway passes
  its ``x-raygent-session`` header), else the conversation's *opening* -- its leading system
  messages and first other message, or a text prompt's first :data:`OPENING_CHARS` characters
  -- which every later turn repeats unchanged, in the tenant's prefix-cache scope.
* The home is chosen by rendezvous hashing of that key over the rank's replica ids. Every
  gateway replica's router picks the same home with no shared state and no extra call per
  request (Ray Serve LLM's ``PrefixCacheAffinityRouter`` keeps a prefix tree in an actor that
  each routing decision calls), and a replica that joins or leaves moves only the
  conversations it gains or held. The price of not keeping a tree: prompts that share a long
  prefix but open differently (two users' questions about one document) are spread, not
  gathered; their common blocks are then computed once per replica.

Example:
    >>> stats = {"a": {"ready": True}, "b": {}, "c": {"on_demand": True}}
    >>> rank_replicas(["a", "b", "c"], stats.get)
    [['a'], ['c']]
    >>> rank_replicas(["b", "c"], {"b": {}, "c": {}}.get)
    [['b', 'c']]
    >>> turn1 = [{"role": "user", "content": "Hi"}]
    >>> answer = {"role": "assistant", "content": "Hello!"}
    >>> turn2 = [*turn1, answer, {"role": "user", "content": "Why?"}]
    >>> affinity_key((turn1, {}), {}) == affinity_key((turn2, {}), {})
    True
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from runtime.models.client import AFFINITY, CACHE_SALT

__all__ = ["OPENING_CHARS", "WarmFirstRequestRouter", "affinity_key", "home_of", "rank_replicas"]

T = TypeVar("T")

OPENING_CHARS = 512
"""How much of a text prompt names its conversation (a chat is named by its first messages)."""


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


def affinity_key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes | None:
    """The conversation a model call belongs to (the module docstring says how it is named),
    or None when the call does not look like one (not a ModelServer call)."""
    session = kwargs.get(AFFINITY)
    if isinstance(session, str) and session:
        return b"s\0" + session.encode()
    if not args:
        return None
    prompt = args[0]
    params = args[1] if len(args) > 1 and isinstance(args[1], Mapping) else {}
    scope = str(params.get(CACHE_SALT) or "").encode()
    if isinstance(prompt, str):
        return b"t\0" + scope + b"\0" + prompt[:OPENING_CHARS].encode()
    if isinstance(prompt, list) and prompt and all(isinstance(m, Mapping) for m in prompt):
        first = next((i for i, m in enumerate(prompt) if m.get("role") != "system"), len(prompt))
        opening = prompt[: first + 1]
        return b"c\0" + scope + b"\0" + json.dumps(opening, default=str).encode()
    return None


def home_of(key: bytes, replicas: Sequence[T], id_of: Callable[[T], str]) -> T:
    """The replica that owns ``key``: the highest score of (key, replica id) -- rendezvous
    hashing, so adding or removing a replica moves only the keys that it gains or held."""
    digest = hashlib.blake2b(key, digest_size=16).digest()

    def score(r: T) -> bytes:
        return hashlib.blake2b(id_of(r).encode(), digest_size=8, key=digest).digest()

    return max(replicas, key=score)


def _two_of(replicas: list[T]) -> list[T]:
    """Two at random, in random order: Serve takes the first of equal queues, so a fixed order
    would send all light load to one replica."""
    return random.sample(replicas, min(2, len(replicas)))


class WarmFirstRequestRouter(FIFOMixin, RequestRouter):
    """Power of two choices within readiness ranks, each conversation to its home replica
    first (see the module docstring). ``initialize_state`` takes Serve's
    ``request_router_kwargs``: ``affinity`` and ``affinity_max_imbalance``."""

    def initialize_state(self, affinity: bool = False, affinity_max_imbalance: int = 8) -> None:
        self._affinity = affinity
        self._max_imbalance = affinity_max_imbalance

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        ranks = rank_replicas(candidate_replicas, lambda r: r.routing_stats)
        home = self._home(ranks[0], pending_request) if ranks else None
        if home is None:
            return [_two_of(rank) for rank in ranks]
        rest = [r for r in ranks[0] if r is not home]
        return [[home], *([_two_of(rest)] if rest else []), *map(_two_of, ranks[1:])]

    def _home(
        self, rank: list[RunningReplica], pending: PendingRequest | None
    ) -> RunningReplica | None:
        """The request's home replica in ``rank`` while it is not overloaded, else None."""
        if not getattr(self, "_affinity", False) or pending is None or len(rank) < 2:
            return None
        key = affinity_key(pending.args, pending.kwargs)
        if key is None:
            return None
        home = home_of(key, rank, lambda r: r.replica_id.unique_id)
        queues = self.replica_queue_len_cache
        own = queues.get(home.replica_id)
        if own is None:  # not known yet: Serve probes it when it is offered
            return home
        least = min((q for r in rank if (q := queues.get(r.replica_id)) is not None), default=own)
        return home if own - least <= self._max_imbalance else None
