"""When requests are sent: closed-loop slots, open-loop Poisson/gamma arrivals, step ramps.

Open loop (``--rate R``) draws the gaps between arrivals from a gamma distribution with shape
``burstiness`` and mean ``1/R`` -- the same process as ``vllm bench serve``: burstiness 1 is a
Poisson process (exponential gaps, variance ``1/R**2``), below 1 burstier, above 1 more regular,
``inf`` a constant gap. A closed loop (``--concurrency N``) has no arrival process: each of N
slots sends its next request when the previous one finishes.

Like vLLM, a run with a fixed request count can rescale its arrival times so the last one lands
exactly at ``n / R`` (:func:`arrival_offsets` with ``normalize=True``): without it the sum of n
random gaps is off by 1-2 %, and so is every throughput figure. A timed run (``--duration``)
draws gaps lazily and cannot rescale.

Example:
    >>> gaps = GammaArrivals(rate=10.0, burstiness=1.0, seed=0)
    >>> round(sum(next(gaps) for _ in range(10_000)) / 10_000, 2)
    0.1
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from bench.harness.errors import ConfigError

__all__ = ["GammaArrivals", "arrival_offsets", "parse_sweep", "step_ramp"]


class GammaArrivals(Iterator[float]):
    """An endless iterator of gaps (seconds) between arrivals at ``rate`` per second.

    Args:
        rate: mean arrivals per second; ``inf`` sends everything at once (gap 0).
        burstiness: gamma shape; 1 is Poisson, ``inf`` constant gaps.
        seed: the draws are a pure function of it (``random.Random``).
    """

    def __init__(self, rate: float, burstiness: float = 1.0, seed: int | None = 0) -> None:
        if not rate > 0:
            raise ConfigError(f"--rate must be > 0 requests/s (got {rate})")
        if not burstiness > 0:
            raise ConfigError(f"--burstiness must be > 0 (got {burstiness}); 1 is Poisson")
        self.rate = rate
        self.burstiness = burstiness
        self._rng = random.Random(seed)

    def __next__(self) -> float:
        if math.isinf(self.rate):
            return 0.0
        if math.isinf(self.burstiness):
            return 1.0 / self.rate
        # Gamma(shape=k, scale=1/(R k)): mean 1/R, variance 1/(k R^2).
        return self._rng.gammavariate(self.burstiness, 1.0 / (self.rate * self.burstiness))


def arrival_offsets(
    rate: float, n: int, burstiness: float = 1.0, seed: int | None = 0, normalize: bool = False
) -> list[float]:
    """Arrival times of ``n`` requests, seconds after the first one is due (which is sent at
    ``gaps[0]``, not at 0, as in vLLM). With ``normalize`` the times are rescaled so the last
    one is ``n / rate`` exactly."""
    gaps = GammaArrivals(rate, burstiness, seed)
    out: list[float] = []
    t = 0.0
    for _ in range(n):
        t += next(gaps)
        out.append(t)
    if normalize and out and out[-1] > 0 and not math.isinf(rate):
        scale = (n / rate) / out[-1]
        out = [x * scale for x in out]
    return out


def step_ramp(start: float, stop: float, factor: float = 2.0) -> list[float]:
    """``start, start*factor, ...`` up to and including ``stop`` (which is appended when the
    last step falls short of it): the 1 -> 2 -> 4 -> ... ramp that finds a saturation point."""
    if not (start > 0 and stop >= start and factor > 1):
        raise ConfigError(
            f"a ramp needs 0 < start <= stop and factor > 1 (got {start}:{stop} x{factor})"
        )
    out = []
    x = start
    while x <= stop * (1 + 1e-9):
        out.append(x)
        x *= factor
    if out[-1] < stop:
        out.append(stop)
    return out


def parse_sweep(text: str) -> list[float]:
    """``"1,2,4,8"`` (the listed values) or ``"1:64"`` (doubling from 1 up to 64) or
    ``"1:64:4"`` (times 4 each step)."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError(text)
            return step_ramp(parts[0], parts[1], parts[2] if len(parts) == 3 else 2.0)
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"--sweep expects '1,2,4' or 'start:stop[:factor]' (got {text!r})"
        ) from exc
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--sweep values must be > 0 (got {text!r})")
    return values
