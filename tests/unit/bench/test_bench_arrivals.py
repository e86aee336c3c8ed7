"""Arrival processes: Poisson and gamma moments for a fixed seed; ramps and sweeps."""

from __future__ import annotations

import math
import statistics

import pytest

from bench.harness import ConfigError, GammaArrivals, arrival_offsets, parse_sweep, step_ramp

N = 20_000


@pytest.mark.parametrize("rate", [0.5, 10.0, 2000.0])
def test_poisson_gaps_mean_and_variance(rate):
    gaps = GammaArrivals(rate, burstiness=1.0, seed=42)
    xs = [next(gaps) for _ in range(N)]
    # Exponential(rate): mean 1/rate, variance 1/rate^2; 20k draws -> within 3 %.
    assert statistics.fmean(xs) == pytest.approx(1 / rate, rel=0.03)
    assert statistics.pvariance(xs) == pytest.approx(1 / rate**2, rel=0.06)


def test_poisson_counts_per_window_have_variance_equal_to_mean():
    rate, offsets = 50.0, arrival_offsets(50.0, N, seed=7)
    windows = [0] * int(offsets[-1])
    for t in offsets:
        if int(t) < len(windows):
            windows[int(t)] += 1
    assert statistics.fmean(windows) == pytest.approx(rate, rel=0.03)
    assert statistics.pvariance(windows) == pytest.approx(rate, rel=0.2)


@pytest.mark.parametrize("k", [0.25, 4.0])
def test_gamma_burstiness(k):
    rate = 10.0
    gaps = GammaArrivals(rate, burstiness=k, seed=3)
    xs = [next(gaps) for _ in range(N)]
    assert statistics.fmean(xs) == pytest.approx(1 / rate, rel=0.04)
    assert statistics.pvariance(xs) == pytest.approx(1 / (k * rate**2), rel=0.1)


def test_same_seed_same_draws_and_edge_cases():
    a, b = GammaArrivals(5, seed=1), GammaArrivals(5, seed=1)
    assert [next(a) for _ in range(10)] == [next(b) for _ in range(10)]
    assert next(GammaArrivals(4, burstiness=math.inf)) == 0.25
    assert next(GammaArrivals(math.inf)) == 0.0
    with pytest.raises(ConfigError):
        GammaArrivals(0)
    with pytest.raises(ConfigError):
        GammaArrivals(1, burstiness=0)


def test_normalized_offsets_end_at_n_over_rate():
    offs = arrival_offsets(8.0, 160, seed=0, normalize=True)
    assert offs[-1] == pytest.approx(20.0)
    assert offs == sorted(offs)


def test_ramps():
    assert step_ramp(1, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert step_ramp(1, 10) == [1, 2, 4, 8, 10]
    assert parse_sweep("1:16:4") == [1, 4, 16]
    assert parse_sweep("1, 3,5") == [1, 3, 5]
    with pytest.raises(ConfigError):
        parse_sweep("a,b")
    with pytest.raises(ConfigError):
        parse_sweep("0,1")
