"""``bench.variants``: each variant's figures over repeated runs, with a 95% interval."""

from __future__ import annotations

import math

import pytest

from bench.variants import interval, per_variant_figures


def test_the_interval_is_students_t_over_the_runs():
    i = interval([10.0, 12.0, 14.0])  # mean 12, sd 2, t(2) = 4.303
    assert i["n"] == 3 and i["mean"] == pytest.approx(12.0)
    half = 4.303 * 2.0 / math.sqrt(3)
    assert (i["low"], i["high"]) == pytest.approx((12.0 - half, 12.0 + half))
    assert interval([5.0, math.nan])["low"] is None  # one value: no interval
    assert interval([])["mean"] is None
    wide = interval([float(v) for v in range(40)])  # beyond the table: the normal's 1.96
    assert wide["high"] - wide["mean"] == pytest.approx(1.96 * 11.69 / math.sqrt(40), rel=1e-3)


def _run(a_ttft: float, b_ttft: float) -> dict:
    def arm(ttft: float) -> dict:
        return {
            "ttft_ms": {"median": ttft},
            "tpot_ms": {"median": 5.0},
            "goodput": 2.0,
            "request_throughput": 2.5,
            "error_rate": 0.0,
        }

    per_variant = {"chat/a": arm(a_ttft), "chat/b": arm(b_ttft)}
    return {
        "steps": [{"shape": {"label": "concurrency 4"}, "summary": {"per_variant": per_variant}}]
    }


def test_per_variant_figures_pair_each_arm_across_runs():
    figures = per_variant_figures([_run(100, 200), _run(110, 190), _run(90, 210)])
    arms = figures["concurrency 4"]
    assert set(arms) == {"chat/a", "chat/b"}
    a, b = arms["chat/a"]["TTFT p50 (ms)"], arms["chat/b"]["TTFT p50 (ms)"]
    assert (a["n"], a["mean"], b["mean"]) == (3, pytest.approx(100.0), pytest.approx(200.0))
    assert a["high"] < b["low"]  # intervals apart: the arms differ beyond the noise
    assert arms["chat/a"]["error rate"]["mean"] == 0.0
