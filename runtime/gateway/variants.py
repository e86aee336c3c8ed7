"""Which variant answers a request: sticky, weighted assignment of a caller to an arm.

A ``model`` name configured under ``variants`` is answered by one of its arms
(:class:`~runtime.config.VariantsConfig`). The arm depends only on the name, the caller's
sticky key and the weights, so every gateway replica -- and the same replica after a restart --
sends a caller to the same arm: no shared state, no coordination.

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
from dataclasses import dataclass

from runtime.config import VariantsConfig
from runtime.gateway.errors import ApiError

__all__ = ["SESSION_HEADER", "VARIANT_HEADER", "Arm", "VariantRouter"]

VARIANT_HEADER = "x-raygent-variant"
"""Request: pick an arm by name (overrides the assignment). Response: the arm that answered."""

SESSION_HEADER = "x-raygent-session"
"""The caller's session (a conversation): what keeps its turns on one arm."""

_SCALE = 2.0**64


@dataclass(frozen=True)
class Arm:
    """One arm of a routed name, resolved from the config."""

    name: str
    target: str
    weight: float
    system_prompt: str | None


class VariantRouter:
    """Assigns requests for one routed name to its arms.

    Args:
        name: the ``model`` name clients send.
        config: its variants.
    """

    def __init__(self, name: str, config: VariantsConfig) -> None:
        self.name = name
        self.sticky = config.sticky
        self.arms = {
            n: Arm(n, a.target, a.weight, a.system_prompt) for n, a in sorted(config.arms.items())
        }
        self._weighted = [a for a in self.arms.values() if a.weight > 0]

    def pick(self, key: str | None, override: str | None = None) -> Arm:
        """The arm for a caller with sticky ``key`` (None: a random pick by weight), or the
        arm ``override`` names (400 naming the header when there is none of that name)."""
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
        if len(self._weighted) == 1:
            return self._weighted[0]
        if key is None:
            return random.choices(self._weighted, [a.weight for a in self._weighted])[0]
        return max(self._weighted, key=lambda a: self._score(key, a))

    def _score(self, key: str, arm: Arm) -> float:
        digest = hashlib.blake2b(f"{self.name}\0{arm.name}\0{key}".encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 0.5) / _SCALE  # in (0, 1), never 0 or 1
        return -arm.weight / math.log(u)

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
