"""bench.calibrate's bookkeeping: the comparison table and the server-side TTFT it reads."""

from __future__ import annotations

import http.server
import sys
import threading

import pytest

from bench import calibrate

METRICS = b"""# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
vllm:time_to_first_token_seconds_bucket{le="0.02",model_name="m"} 3.0
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.1
vllm:time_to_first_token_seconds_count{model_name="other"} 1.0
vllm:time_to_first_token_seconds_sum{model_name="other"} 0.02
vllm:time_per_output_token_seconds_sum{model_name="m"} 9.0
"""


@pytest.fixture
def metrics_url():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_server_ttft_sums_every_series_of_the_histogram(metrics_url):
    total, count = calibrate.server_ttft(metrics_url)
    assert total == pytest.approx(0.12) and count == 5.0


def test_server_ttft_reads_a_typed_histogram_as_vllm_exports_it(metrics_url, monkeypatch):
    typed = METRICS.replace(
        b"in seconds.\n", b"in seconds.\n# TYPE vllm:time_to_first_token_seconds histogram\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "METRICS", typed)  # what the server answers
    total, count = calibrate.server_ttft(metrics_url)
    assert total == pytest.approx(0.12) and count == 5.0


def _vllm(ttft: float, tput: float) -> dict:
    keys = {k for _, k, _ in calibrate.ROWS}
    return dict.fromkeys(keys, 1.0) | {
        "median_ttft_ms": ttft,
        "mean_ttft_ms": ttft,
        "request_throughput": tput,
        "_server_ttft_mean_ms": 10.0,
    }


def _ours(ttft: float, tput: float) -> dict:
    summary: dict = {"request_throughput": tput, "output_token_throughput": 1.0}
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        summary[metric] = {"median": 1.0, "p99": 1.0, "mean": 1.0}
    summary["ttft_ms"] = {"median": ttft, "p99": ttft, "mean": ttft}
    return {"steps": [{"summary": summary}], "_server_ttft_mean_ms": 12.0}


def test_table_compares_medians_of_trials_and_judges_the_goal_rows():
    vllm = [_vllm(20.0, 4.0), _vllm(22.0, 4.0), _vllm(30.0, 4.0)]
    ours = [_ours(21.0, 3.9), _ours(23.0, 3.7), _ours(40.0, 3.85)]
    rows = {r["metric"]: r for r in calibrate.table(vllm, ours)}
    ttft = rows["TTFT median (ms)"]
    assert ttft["vllm"] == 22.0 and ttft["ours"] == 23.0
    assert ttft["diff"] == pytest.approx(1 / 22) and ttft["pass"] is True
    assert ttft["vllm_spread"] == pytest.approx((30 - 20) / 2 / 22)
    tput = rows["request throughput (req/s)"]
    assert tput["diff"] == pytest.approx(-0.0375) and tput["pass"] is True
    assert rows["TTFT p99 (ms)"]["pass"] is None  # information, not a goal
    assert rows["TTFT mean (ms)"]["server_ttft_mean_ms"] == {"vllm": 10.0, "ours": 12.0}
    ours[2] = _ours(40.0, 3.0)
    rows = {r["metric"]: r for r in calibrate.table(vllm, ours)}
    assert rows["request throughput (req/s)"]["pass"] is False  # median 3.7: -7.5 %
