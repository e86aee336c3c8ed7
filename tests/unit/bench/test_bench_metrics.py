"""The metric math against timings computed by hand (vLLM's definitions)."""

from __future__ import annotations

import math

import pytest

from bench.harness import (
    ConfigError,
    RequestRecord,
    check_gates,
    parse_fail_if,
    parse_slo,
    percentile,
    summarize,
)
from bench.harness.metrics import flat_metrics


def rec(ttft, itl, out, cache="", error="", model="m", inp=10):
    e2el = ttft + sum(itl)
    return RequestRecord(
        start_s=0.0,
        ttft_s=ttft,
        itl_s=list(itl),
        e2el_s=e2el,
        done_s=e2el,
        output_tokens=out,
        input_tokens=inp,
        cache=cache,
        error=error,
        model=model,
    )


# Expected values worked by hand with numpy.percentile's rule: rank k = (n - 1) * p / 100,
# interpolate between the order statistics floor(k) and floor(k) + 1.
# Sorted: [1, 2, 3.5, 4, 5, 7, 8, 9], n = 8.
#   p10: k = 0.7  -> 1 + 0.7 * (2 - 1)       = 1.7
#   p50: k = 3.5  -> 4 + 0.5 * (5 - 4)       = 4.5
#   p90: k = 6.3  -> 8 + 0.3 * (9 - 8)       = 8.3
#   p99: k = 6.93 -> 8 + 0.93 * (9 - 8)      = 8.93
@pytest.mark.parametrize(
    ("p", "expected"), [(0, 1.0), (10, 1.7), (50, 4.5), (90, 8.3), (99, 8.93), (100, 9.0)]
)
def test_percentile_linear_interpolation_by_hand(p, expected):
    assert percentile([5, 1, 9, 2, 8, 3.5, 7, 4], p) == pytest.approx(expected)


def test_percentile_small_samples():
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0], 50) == pytest.approx(2.0)


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def test_tpot_ttft_itl_e2e_by_hand():
    # TTFT 100 ms, then 4 gaps of 20, 30, 40, 10 ms: E2E 200 ms; 5 tokens -> TPOT 25 ms.
    r = rec(0.100, [0.020, 0.030, 0.040, 0.010], 5)
    assert r.e2el_s == pytest.approx(0.200)
    assert r.tpot_s == pytest.approx(0.025)
    s = summarize([r], duration_s=2.0)
    assert s["ttft_ms"]["median"] == pytest.approx(100.0)
    assert s["tpot_ms"]["median"] == pytest.approx(25.0)
    assert s["e2el_ms"]["mean"] == pytest.approx(200.0)
    assert s["itl_ms"]["mean"] == pytest.approx(25.0)
    assert s["itl_ms"]["median"] == pytest.approx(25.0)  # (20 + 30) / 2
    assert s["itl_ms"]["max"] == pytest.approx(40.0)


def test_one_token_has_no_tpot():
    assert rec(0.1, [], 1).tpot_s is None
    s = summarize([rec(0.1, [], 1)], 1.0)
    assert s["tpot_ms"]["count"] == 0


def test_throughputs_errors_and_goodput():
    recs = [
        rec(0.1, [0.01] * 9, 10),  # TTFT 100, TPOT 10, E2E 190
        rec(0.3, [0.01] * 9, 10),  # TTFT 300: misses ttft_ms=200
        rec(0.1, [0.05] * 9, 10),  # TPOT 50: misses tpot_ms=20
        rec(0.1, [], 0, error="http_429"),
        rec(0.1, [], 0, error="timeout"),
    ]
    s = summarize(recs, duration_s=2.0, slo={"ttft_ms": 200, "tpot_ms": 20})
    assert s["completed"] == 3 and s["failed"] == 2
    assert s["error_rate"] == pytest.approx(0.4)
    assert s["errors"] == {"http_429": 1, "timeout": 1}
    assert s["request_throughput"] == pytest.approx(1.5)
    assert s["output_token_throughput"] == pytest.approx(15.0)
    assert s["input_token_throughput"] == pytest.approx(15.0)  # failed requests don't count
    assert s["total_token_throughput"] == pytest.approx(30.0)
    assert s["good_requests"] == 1
    assert s["goodput"] == pytest.approx(0.5)


def test_no_slo_means_no_goodput():
    assert summarize([rec(0.1, [], 1)], 1.0)["goodput"] is None


def test_cache_ratio_leaves_bypass_out_and_splits_latency():
    recs = [rec(0.01, [], 1, "hit")] * 3 + [rec(0.2, [], 1, "miss")] + [rec(0.2, [], 1, "bypass")]
    c = summarize(recs, 1.0)["cache"]
    assert (c["hit"], c["miss"], c["bypass"]) == (3, 1, 1)
    assert c["hit_ratio"] == pytest.approx(0.75)
    assert c["hit_latency"]["ttft_ms"]["median"] == pytest.approx(10.0)
    assert c["miss_latency"]["ttft_ms"]["median"] == pytest.approx(200.0)


def test_per_agent_breakdown():
    recs = [rec(0.1, [], 1, model="agent:a"), rec(0.1, [], 1, model="agent:b", error="timeout")]
    pm = summarize(recs, 1.0, slo={"ttft_ms": 500})["per_model"]
    assert pm["agent:a"]["goodput"] == pytest.approx(1.0)
    assert pm["agent:b"]["goodput"] == pytest.approx(0.0)
    assert pm["agent:b"]["failed"] == 1


def test_per_variant_breakdown_from_the_answers_variant_header():
    def arm(ttft: float, variant: str, error: str = "") -> RequestRecord:
        r = rec(ttft, [0.01, 0.01], 3, error=error, model="chat")
        r.variant = variant
        return r

    recs = [arm(0.1, "a")] * 3 + [arm(0.4, "b"), arm(0.4, "b", "http_503")]
    recs.append(rec(0.1, [], 1, model="chat", error="http_400"))  # refused before an arm
    s = summarize(recs, 1.0, slo={"ttft_ms": 200})
    pv = s["per_variant"]
    assert sorted(pv) == ["chat/a", "chat/b"]
    assert pv["chat/a"]["ttft_ms"]["median"] == pytest.approx(100.0)
    assert pv["chat/b"]["error_rate"] == pytest.approx(0.5)
    assert (pv["chat/a"]["goodput"], pv["chat/b"]["goodput"]) == (3.0, 0.0)
    assert "per_variant" not in summarize([rec(0.1, [], 1)], 1.0)


def test_per_turn_breakdown_and_the_prompt_share_found_in_the_prefix_cache():
    def turn(t: int, ttft: float, cached: int | None) -> RequestRecord:
        r = rec(ttft, [0.01], 2, inp=200)
        r.turn, r.cached_tokens = t, cached
        return r

    recs = [turn(0, 0.3, 0), turn(0, 0.3, None), turn(1, 0.1, 128), turn(1, 0.2, 0)]
    s = summarize(recs, 1.0)
    assert s["prompt_cached"] == pytest.approx(128 / 600)  # the record that said nothing: out
    pt = s["per_turn"]
    assert sorted(pt) == ["turn 1", "turn 2"]
    assert pt["turn 1"]["prompt_cached"] == 0.0 and pt["turn 2"]["prompt_cached"] == 0.32
    assert pt["turn 2"]["ttft_ms"]["median"] == pytest.approx(150.0)
    single = summarize([rec(0.1, [], 1)], 1.0)
    assert "per_turn" not in single and single["prompt_cached"] is None


def test_parse_slo():
    assert parse_slo("ttft_ms=500, tpot_ms=50") == {"ttft_ms": 500.0, "tpot_ms": 50.0}
    assert parse_slo(None) == {}
    with pytest.raises(ConfigError, match="ttft"):
        parse_slo("ttft=5")
    with pytest.raises(ConfigError, match="number"):
        parse_slo("ttft_ms=fast")


def test_gates():
    s = summarize([rec(0.6, [0.01], 2), rec(0.1, [], 0, error="timeout")], 1.0)
    flat = flat_metrics(s)
    assert flat["p99_ttft_ms"] == pytest.approx(600.0)
    assert flat["error_rate"] == pytest.approx(0.5)
    fails = check_gates(parse_fail_if(["p99_ttft_ms>500,error_rate>0.01"]), s)
    assert len(fails) == 2 and "measured p99_ttft_ms=600" in fails[0]
    assert check_gates(parse_fail_if(["p99_ttft_ms>700"]), s) == []
    typo = check_gates(parse_fail_if(["p99_tft_ms>1"]), s)
    assert "unknown metric" in typo[0]
    with pytest.raises(ConfigError, match="METRIC"):
        parse_fail_if(["p99_ttft_ms >> 5"])


def test_record_round_trip():
    r = rec(0.1, [0.01, 0.02], 3, cache="hit")
    r.start_s = 10.0
    d = r.to_dict(t0=4.0)
    assert d["start_s"] == pytest.approx(6.0) and "text" not in d
    back = RequestRecord.from_dict(d)
    assert back.itl_s == [0.01, 0.02] and back.cache == "hit"
