"""Which variant answers a request: sticky, weighted assignment of a caller to an arm.

A ``model`` name configured under ``variants`` is answered by one of its arms
(:class:`~runtime.config.VariantsConfig`). The arm depends only on the name, the caller's
sticky key and the weights -- the config's, or those the admin route set, which every replica
reads from the replicated shared state -- so every gateway replica, and the same replica after a
restart, sends a caller to the same arm without asking anyone.

The hash is weighted rendezvous hashing (Schindelhauer and Schomaker's "weighted distributed
hash tables"): each arm scores ``-weight / ln(u)``, ``u`` a uniform hash of (key, arm) in
(0, 1), and the highest score wins. An arm then gets its weight's share of keys, and changing
one arm's weight moves keys only to or from that arm -- a canary going from 5% to 20% takes
15% of callers from the others and leaves every other caller where it was. (Cumulative
buckets over ``hash(key) % total`` would shift the boundaries and move callers between arms
the change did not touch.)

Example:
    >>> from runtime.config import VariantsConfig
    >>> router = VariantRouter("chat", VariantsConfig.model_validate(
    ...     {"arms": {"a": {"target": "default"}, "b": {"target": "default", "weight": 0}}}))
    >>> router.pick(key="user-7").name, router.pick(key=None, override="b").name
    ('a', 'b')
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.config import VariantsConfig
from runtime.gateway.errors import ApiError

__all__ = ["SESSION_HEADER", "VARIANT_HEADER", "WEIGHTS_KEY", "Arm", "VariantRouter"]

VARIANT_HEADER = "x-raygent-variant"
"""Request: pick an arm by name (overrides the assignment). Response: the arm that answered."""

SESSION_HEADER = "x-raygent-session"
"""The caller's session (a conversation): what keeps its turns on one arm."""

WEIGHTS_KEY = "raygent/variants/{name}"
"""The shared-state key (``ctx.state``, replicated to every replica) of a name's weights as
the admin route set them; absent: the config's. Keys under ``raygent/`` are the runtime's."""

_SCALE = 2.0**53


@dataclass(frozen=True)
class Arm:
    """One arm of a routed name, resolved from the config."""

    name: str
    target: str
    weight: float
    system_prompt: str | None
    shadow: float | None = None  # the share of requests copied to this arm


class VariantRouter:
    """Assigns requests for one routed name to its arms.

    Args:
        name: the ``model`` name clients send.
        config: its variants.
    """

    def __init__(self, name: str, config: VariantsConfig) -> None:
        self.name = name
        self.sticky = config.sticky
        self.shadow_max_inflight = config.shadow_max_inflight
        self.arms = {
            n: Arm(n, a.target, a.weight, a.system_prompt, a.shadow)
            for n, a in sorted(config.arms.items())
        }
        self._shadows = [a for a in self.arms.values() if a.shadow]
        self._weighted = [(a, a.weight) for a in self.arms.values() if a.weight > 0]

    def pick(
        self,
        key: str | None,
        override: str | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> Arm:
        """The arm for a caller with sticky ``key`` (None: a random pick by weight), or the
        arm ``override`` names (400 naming the header when there is none of that name).
        ``weights`` replace the configured ones (the admin route's, from the shared state;
        arms it leaves out keep theirs)."""
        if override is not None:
            arm = self.arms.get(override)
            if arm is None:
                raise ApiError(
                    400,
                    f"header {VARIANT_HEADER}: {override!r} is not a variant of "
                    f"{self.name!r}; variants: {sorted(self.arms)}",
                    param=VARIANT_HEADER,
                    code="invalid_header",
                )
            return arm
        arms = self._weighted if not weights else self._reweighted(weights)
        if len(arms) == 1:
            return arms[0][0]
        if key is None:
            return random.choices([a for a, _ in arms], [w for _, w in arms])[0]
        return max(arms, key=lambda aw: self._score(key, aw[0], aw[1]))[0]

    def shadows(self) -> list[Arm]:
        """The shadow arms this request is copied to (each by its own sampled share)."""
        return [a for a in self._shadows if random.random() < (a.shadow or 0.0)]

    def weights(self, override: Mapping[str, float] | None = None) -> dict[str, float]:
        """Each arm's weight: the configured one, or ``override``'s."""
        return {n: float((override or {}).get(n, a.weight)) for n, a in self.arms.items()}

    def _reweighted(self, override: Mapping[str, float]) -> list[tuple[Arm, float]]:
        current = self.weights(override)
        arms = [(self.arms[n], w) for n, w in current.items() if w > 0]
        return arms or self._weighted  # never left with no arm (checked on write as well)

    def check_weights(self, weights: Any) -> dict[str, float]:
        """``weights`` as the admin route accepts them, or a 400 naming ``weights``: a
        mapping of known arms to finite numbers >= 0 that leaves some arm above 0."""

        def bad(why: str) -> ApiError:
            return ApiError(400, f"weights: {why}", param="weights", code="invalid_value")

        if not isinstance(weights, Mapping) or not weights:
            raise bad("must be an object of arm names to weights")
        unknown = sorted(set(weights) - set(self.arms))
        if unknown:
            raise bad(f"{unknown} are not variants of {self.name!r}; variants: {sorted(self.arms)}")
        out: dict[str, float] = {}
        for arm, w in weights.items():
            if (
                isinstance(w, bool)
                or not isinstance(w, int | float)
                or not math.isfinite(w)
                or w < 0
            ):
                raise bad(f"{arm}: {w!r} is not a finite number >= 0")
            if w > 0 and self.arms[arm].shadow:
                raise bad(f"{arm} is a shadow arm: it answers no client (its weight stays 0)")
            out[arm] = float(w)
        if not any(w > 0 for w in self.weights(out).values()):
            raise bad("at least one arm needs a weight above 0")
        return out

    def _score(self, key: str, arm: Arm, weight: float) -> float:
        digest = hashlib.blake2b(f"{self.name}\0{arm.name}\0{key}".encode(), digest_size=8).digest()
        # 53 bits (a double's mantissa) plus a half: exactly representable, never 0 or 1
        u = ((int.from_bytes(digest, "big") >> 11) + 0.5) / _SCALE
        return -weight / math.log(u)

    def sticky_key(
        self, *, session: str | None, user: str | None, tenant: str | None
    ) -> str | None:
        """The key that keeps a caller on its arm, as ``sticky`` says; None when the caller
        is anonymous (no session, no ``user``, no tenant)."""
        if self.sticky == "session":
            if session:
                return "s:" + session
            if user:
                return "u:" + user
        return "t:" + tenant if tenant else None
