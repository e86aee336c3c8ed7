"""The overload part's verdicts, from synthetic results of its two runs."""

from __future__ import annotations

from bench.harness.overload import overload_verdicts


def _result(rps: float, p99_ms: float, requests: list[dict]) -> dict:
    return {
        "steps": [{"summary": {"request_throughput": rps, "e2el_ms": {"p99": p99_ms}}}],
        "requests": requests,
    }


def _req(error: str = "", status: int = 200, retry_after: str = "", done_s: float = 0.2):
    return {"error": error, "status": status, "retry_after": retry_after, "done_s": done_s}


def test_refusals_are_judged_by_status_retry_after_and_speed():
    capacity = _result(30.0, 400.0, [_req() for _ in range(10)])
    rows = (
        [_req() for _ in range(60)]
        + [_req("http_429", 429, "1", 0.004) for _ in range(97)]
        + [_req("http_503", 503, "", 0.010)]  # no Retry-After: a bad refusal
        + [_req("http_500", 500, "", 0.020)]  # not a refusal at all
        + [_req("timeout", 0, "", None)]
        + [{**_req(), "warmup": True}]
    )
    v = overload_verdicts(capacity, _result(28.5, 700.0, rows), offered_rate=90.0)
    assert v["requests"] == 160 and v["served"] == 60 and v["refused"] == 99
    assert v["statuses"] == {429: 97, 503: 1, 500: 1}
    assert v["overload_bad_refusals"] == 2.0 and v["overload_timeouts"] == 1.0
    assert v["overload_p99_ratio"] == 700.0 / 400.0
    assert v["overload_goodput_ratio"] == 28.5 / 30.0
    assert 4.0 <= v["overload_reject_p99_ms"] <= 20.0
