"""The circuit breaker in front of Redis: after a few failures in a row, stop asking for a while."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]


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
