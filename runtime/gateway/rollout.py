"""Move traffic to a variant step by step while its own metrics stay healthy; roll back if not.

``python -m runtime.gateway.rollout --url http://127.0.0.1:8000 --name chat --arm b
--steps 5,25,50,100 --hold-s 60 --max-error-rate 0.01 --max-ttft-p99-s 2``, with the admin key
in ``RAYGENT_ADMIN_KEY`` and an API key (for ``/metrics``) in ``RAYGENT_API_KEY``.

Each step gives the arm that percentage of the weight (the other arms share the rest in the
proportion they had) through ``PUT /admin/variants/{name}``, holds, and then judges the arm on
what the application itself counted during the hold -- ``raygent_request_duration_seconds``
(the share of answers with a 5xx status) and ``raygent_time_to_first_token_seconds`` (p99,
interpolated in its buckets as Prometheus' ``histogram_quantile`` does), both labelled with the
variant. TTFT is observed for streamed answers; a hold with none judges the p99 of the whole
answers' durations instead (a client of a plain answer gets its first token with its last).
A step with fewer than ``--min-requests`` answers from the arm has shown nothing, and fails
too: a rollout goes on only on evidence. On a failed step the weights go back to what they were
before the rollout (the configured ones if they came from the config) and the command exits 1.

The metrics are read from the gateway's ``/metrics``, which answers for the replica that
serves the scrape; with several gateway replicas, point ``--metrics-url`` at a Prometheus
federation endpoint or a single replica's address. (On one machine with a hosted CPU model the
gateway runs one replica.)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ArmSample", "Guard", "Rollout", "histogram_quantile", "main", "sample_arm"]

_REQUESTS = "raygent_request_duration_seconds"
_TTFT = "raygent_time_to_first_token_seconds"


@dataclass(frozen=True)
class ArmSample:
    """What the application had counted for one arm at one moment (cumulative)."""

    requests: float = 0.0
    errors: float = 0.0
    ttft_buckets: tuple[tuple[float, float], ...] = ()  # (le, cumulative count), le ascending
    duration_buckets: tuple[tuple[float, float], ...] = ()  # the same, of whole requests

    def since(self, before: ArmSample) -> ArmSample:
        """The counts between ``before`` and this sample."""
        return ArmSample(
            self.requests - before.requests,
            self.errors - before.errors,
            _minus(self.ttft_buckets, before.ttft_buckets),
            _minus(self.duration_buckets, before.duration_buckets),
        )

    def first_token_p99(self) -> float:
        """p99 time to the first token: of streamed answers, else of whole ones (NaN: none)."""
        if self.ttft_buckets and self.ttft_buckets[-1][1] > 0:
            return histogram_quantile(0.99, self.ttft_buckets)
        return histogram_quantile(0.99, self.duration_buckets)


def _minus(
    after: tuple[tuple[float, float], ...], before: tuple[tuple[float, float], ...]
) -> tuple[tuple[float, float], ...]:
    old = dict(before)
    return tuple((le, n - old.get(le, 0.0)) for le, n in after)


def sample_arm(metrics_text: str, name: str, arm: str) -> ArmSample:
    """The arm's counters in a Prometheus text body (summed over routes)."""
    requests = errors = 0.0
    ttft: dict[float, float] = {}
    duration: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.labels.get("target") != name or s.labels.get("variant") != arm:
                continue
            if s.name == f"{_REQUESTS}_count":
                requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    errors += s.value
            elif s.name in (f"{_TTFT}_bucket", f"{_REQUESTS}_bucket"):
                into = ttft if s.name.startswith(_TTFT) else duration
                le = float(s.labels["le"])
                into[le] = into.get(le, 0.0) + s.value
    return ArmSample(requests, errors, tuple(sorted(ttft.items())), tuple(sorted(duration.items())))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile of cumulative ``(le, count)`` buckets, linear within a bucket (as
    Prometheus' ``histogram_quantile``); NaN with no observations; the highest finite bound
    when the quantile falls in the ``+Inf`` bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_le, lower_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return lower_le
            if n == lower_n:
                return le
            return lower_le + (le - lower_le) * (rank - lower_n) / (n - lower_n)
        lower_le, lower_n = le, n
    return lower_le


@dataclass(frozen=True)
class Guard:
    """What a step must show to go on."""

    max_error_rate: float = 0.01
    max_ttft_p99_s: float = 2.0
    min_requests: int = 20

    def judge(self, hold: ArmSample) -> str | None:
        """None when the hold passes; else why not."""
        if hold.requests < self.min_requests:
            return f"{hold.requests:g} answers from the arm (fewer than {self.min_requests})"
        rate = hold.errors / hold.requests
        if rate > self.max_error_rate:
            return f"error rate {rate:.3f} over {self.max_error_rate:g}"
        p99 = hold.first_token_p99()
        if not math.isnan(p99) and p99 > self.max_ttft_p99_s:
            return f"TTFT p99 {p99:.3f} s over {self.max_ttft_p99_s:g} s"
        return None


def step_weights(weights: dict[str, float], arm: str, percent: float) -> dict[str, float]:
    """Weights giving ``arm`` ``percent`` of the total, the others sharing the rest as they
    did (evenly when they had none)."""
    others = {n: w for n, w in weights.items() if n != arm}
    total = sum(others.values())
    rest = 100.0 - percent
    if total > 0:
        out = {n: rest * w / total for n, w in others.items()}
    else:
        out = {n: rest / len(others) for n in others} if others else {}
    return {**out, arm: percent}


class Rollout:
    """One rollout of ``arm`` of ``name`` against a running application.

    Args:
        admin: an HTTP client on the application carrying the admin key.
        metrics: an HTTP client carrying an API key, for ``GET /metrics``.
        name: the ``model`` name with variants.
        arm: the arm to move traffic to.
        guard: what each step must show.
        wait: how a hold passes (``time.sleep``; tests send traffic instead).
        log: where progress lines go.
    """

    def __init__(
        self,
        admin: httpx.Client,
        metrics: httpx.Client,
        name: str,
        arm: str,
        guard: Guard,
        wait: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = print,
    ) -> None:
        self._admin = admin
        self._metrics = metrics
        self.name = name
        self.arm = arm
        self.guard = guard
        self._wait = wait
        self._log = log

    def run(self, steps: Sequence[float], hold_s: float) -> bool:
        """Each step in turn; True when the last one held, False after a rollback."""
        entry = self._entry()
        if self.arm not in entry["arms"]:
            raise ValueError(f"{self.arm!r} is not a variant of {self.name!r}")
        # shadow arms answer no client: they keep weight 0 whatever the step
        before = {n: a["weight"] for n, a in entry["arms"].items() if not a.get("shadow")}
        from_config = entry["weights_from"] == "config"
        for percent in steps:
            weights = step_weights(before, self.arm, percent)
            self._put(weights)
            start = self._sample()
            self._wait(hold_s)
            hold = self._sample().since(start)
            failed = self.guard.judge(hold)
            p99 = hold.first_token_p99()
            self._log(
                f"{self.name}/{self.arm} at {percent:g}%: {hold.requests:g} answers, "
                f"{hold.errors:g} errors, TTFT p99 {p99 * 1000:.0f} ms -> "
                f"{'hold' if failed is None else 'FAIL: ' + failed}"
            )
            if failed is not None:
                self._restore(before, from_config)
                self._log(f"rolled back to {before}")
                return False
        return True

    def _entry(self) -> dict[str, Any]:
        r = self._admin.get("/admin/variants")
        r.raise_for_status()
        for entry in r.json()["data"]:
            if entry["name"] == self.name:
                return entry
        raise ValueError(f"{self.name!r} has no variants")

    def _put(self, weights: dict[str, float]) -> None:
        r = self._admin.put(f"/admin/variants/{self.name}", json={"weights": weights})
        r.raise_for_status()

    def _restore(self, weights: dict[str, float], from_config: bool) -> None:
        if from_config:
            self._admin.delete(f"/admin/variants/{self.name}").raise_for_status()
        else:
            self._put(weights)

    def _sample(self) -> ArmSample:
        r = self._metrics.get("/metrics")
        r.raise_for_status()
        return sample_arm(r.text, self.name, self.arm)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.gateway.rollout", description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the application")
    p.add_argument("--metrics-url", help="where /metrics is read (default: --url)")
    p.add_argument("--name", required=True, help="the model name with variants")
    p.add_argument("--arm", required=True, help="the arm to move traffic to")
    p.add_argument("--steps", default="5,25,50,100", help="percentages, in order")
    p.add_argument("--hold-s", type=float, default=60.0, help="seconds each step is held")
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--max-ttft-p99-s", type=float, default=2.0)
    p.add_argument("--min-requests", type=int, default=20)
    args = p.parse_args(argv)
    steps = [float(s) for s in args.steps.split(",") if s.strip()]
    if not steps or any(not 0 <= s <= 100 for s in steps):
        p.error("--steps: percentages between 0 and 100")
    admin_key = os.environ.get("RAYGENT_ADMIN_KEY", "")
    api_key = os.environ.get("RAYGENT_API_KEY", "")
    if not admin_key:
        p.error("RAYGENT_ADMIN_KEY is not set (one of auth.admin_keys)")
    guard = Guard(args.max_error_rate, args.max_ttft_p99_s, args.min_requests)
    with (
        httpx.Client(base_url=args.url, headers=_bearer(admin_key), timeout=30) as admin,
        httpx.Client(
            base_url=args.metrics_url or args.url, headers=_bearer(api_key), timeout=30
        ) as metrics,
    ):
        done = Rollout(admin, metrics, args.name, args.arm, guard).run(steps, args.hold_s)
    return 0 if done else 1


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


if __name__ == "__main__":
    sys.exit(main())
