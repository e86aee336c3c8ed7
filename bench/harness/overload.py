"""The suite's ``overload`` part: what a deployment does with three times the load it can serve.

1. **capacity** -- closed loop at ``--overload-concurrency`` for ``--duration``: the requests
   per second it serves (X) and its E2E p99 there;
2. **overload** -- open loop (Poisson) at ``--overload-factor`` x X for ``--overload-duration``,
   with no client-side in-flight cap worth the name, so the server, not the client, decides
   what happens to the excess;
3. **verdicts** (:data:`OVERLOAD_GOALS`): served E2E p99 within 2x its value at capacity,
   goodput (served requests per second) at least 90 % of X, every non-2xx a 429 or 503 that
   carries ``Retry-After``, no timeouts, and refusals fast (p99 from sending the request to
   the end of the refusal under 50 ms).

Requests are chats of ``--overload-tokens`` output tokens sent with ``Cache-Control:
no-store``, so the response cache answers none of them (a cache hit is not capacity).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness.metrics import percentile
from bench.harness.runner import LoadShape

__all__ = ["OVERLOAD_GOALS", "add_overload_args", "overload_part", "overload_verdicts"]

OVERLOAD_GOALS: tuple[tuple[str, str, float], ...] = (
    ("overload_p99_ratio", "<=", 2.0),  # served E2E p99 under overload / at capacity
    ("overload_goodput_ratio", ">=", 0.9),  # served req/s under overload / capacity req/s
    ("overload_bad_refusals", "<=", 0.0),  # non-2xx that are not 429/503 with Retry-After
    ("overload_timeouts", "<=", 0.0),
    ("overload_reject_p99_ms", "<=", 50.0),  # time to a refusal, p99
)
"""(name, comparison, bound) of the overload part, reported with the suite's goals."""


def add_overload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overload-concurrency", type=int, default=32, help="capacity step")
    p.add_argument("--overload-factor", type=float, default=3.0, help="offered / capacity")
    p.add_argument("--overload-duration", type=float, default=20.0, help="seconds offered")
    p.add_argument("--overload-tokens", type=int, default=16, help="output tokens per request")


def overload_part(a: argparse.Namespace, url: str, run, make_cfg, out: Path) -> dict[str, Any]:
    """Run both steps against ``url``; ``run(cfg, dir)`` and ``make_cfg(...)`` are the suite's.

    Returns:
        ``{"capacity": result, "overload": result, "summary": overload_verdicts(...)}``.
    """
    knobs = {
        "label": "raygent capacity",
        "headers": {"Cache-Control": "no-store"},
        "output_len": a.overload_tokens,
    }
    capacity = run(
        make_cfg(
            a,
            url,
            a.model,
            [LoadShape(concurrency=a.overload_concurrency, duration_s=a.duration)],
            **knobs,
        ),
        out / "overload-capacity",
    )
    x = capacity["steps"][0]["summary"]["request_throughput"]
    knobs["label"] = f"raygent overload x{a.overload_factor:g}"
    offered = LoadShape(
        rate=max(x, 0.1) * a.overload_factor,
        max_concurrency=4096,
        duration_s=a.overload_duration,
    )
    overload = run(make_cfg(a, url, a.model, [offered], timeout_s=30.0, **knobs), out / "overload")
    return {
        "capacity": capacity,
        "overload": overload,
        "summary": overload_verdicts(capacity, overload, offered.rate or 0.0),
    }


def overload_verdicts(
    capacity: dict[str, Any], overload: dict[str, Any], offered_rate: float
) -> dict[str, Any]:
    """The figures :data:`OVERLOAD_GOALS` are judged on, from the two runs' results."""
    cap = capacity["steps"][0]["summary"]
    over = overload["steps"][0]["summary"]
    rows = [r for r in overload["requests"] if not r.get("warmup")]
    refused = [r for r in rows if r["error"].startswith("http_")]
    bad = [
        r
        for r in refused
        if r["status"] not in (429, 503) or not str(r.get("retry_after") or "").strip()
    ]
    reject_ms = sorted(1000 * r["done_s"] for r in refused if r.get("done_s") is not None)
    return {
        "offered_rate": offered_rate,
        "capacity_rps": cap["request_throughput"],
        "capacity_p99_e2el_ms": cap["e2el_ms"].get("p99"),
        "served_rps": over["request_throughput"],
        "served_p99_e2el_ms": over["e2el_ms"].get("p99"),
        "requests": len(rows),
        "served": sum(1 for r in rows if not r["error"]),
        "refused": len(refused),
        "statuses": dict(Counter(r["status"] for r in refused)),
        "errors": dict(Counter(r["error"] for r in rows if r["error"])),
        "overload_p99_ratio": _ratio(over["e2el_ms"].get("p99"), cap["e2el_ms"].get("p99")),
        "overload_goodput_ratio": _ratio(over["request_throughput"], cap["request_throughput"]),
        "overload_bad_refusals": float(len(bad)),
        "overload_timeouts": float(sum(1 for r in rows if r["error"] == "timeout")),
        "overload_reject_p99_ms": percentile(reject_ms, 99) if reject_ms else None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
