"""Reports: files written, HTML self-contained with well-formed SVG; compare; CLI gates."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET

import pytest

import bench.harness as harness
from bench.harness import LoadShape, RequestRecord, RunConfig, compare_results, write_outputs
from bench.harness.cli import build_parser, config_from_args, main
from bench.harness.driver import _assemble
from bench.harness.metrics import parse_fail_if
from bench.harness.runner import StepResult
from bench.harness.servers import free_port


def _records(step, n, ttft):
    out = []
    for i in range(n):
        r = RequestRecord(
            start_s=100.0 + step + i * 0.01,
            ttft_s=ttft,
            itl_s=[0.01, 0.02],
            e2el_s=ttft + 0.03,
            done_s=ttft + 0.03,
            output_tokens=3,
            input_tokens=8,
            cache="hit" if i % 2 else "miss",
            model="agent:a" if i % 3 else "agent:b",
            variant="x" if i % 2 else "y",
            step=step,
        )
        if i == 0:
            r.error, r.error_detail = "http_503", "overloaded"
        out.append(r)
    return out


def _result(scale=1.0, gates=()):
    steps = [
        StepResult(LoadShape(concurrency=c, num_requests=10), _records(i, 10, 0.05 * scale * c),
                   100.0 + i, 101.0 + i)
        for i, c in enumerate((1, 2, 4))
    ]  # fmt: skip
    cfg = RunConfig(url="http://x", steps=[s.shape for s in steps], gates=parse_fail_if(gates),
                    slo={"ttft_ms": 120})  # fmt: skip
    return _assemble(cfg, steps, 0, "now")


def test_write_outputs(tmp_path):
    paths = write_outputs(_result(gates=["p99_ttft_ms>100"]), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert len(data["requests"]) == 30 and len(data["steps"]) == 3
    assert data["gates"]["passed"] is False  # step 2's TTFT is 200 ms
    s = data["steps"][0]["summary"]
    assert s["cache"]["hit_ratio"] is not None and set(s["per_model"]) == {"agent:a", "agent:b"}
    assert set(s["per_variant"]) == {f"agent:{m}/{v}" for m in "ab" for v in "xy"}
    rows = list(csv.DictReader(paths["requests_csv"].open()))
    assert len(rows) == 30 and rows[1]["itl_ms"] == "10.000;20.000"
    summary_rows = list(csv.DictReader(paths["summary_csv"].open()))
    assert [r["label"] for r in summary_rows] == ["concurrency 1", "concurrency 2", "concurrency 4"]
    html = paths["html"].read_text()
    for section in ("Summary", "Latency and throughput per step", "Distributions", "Timelines",
                    "Cache", "Per model / agent", "Per variant", "Errors",
                    "Definitions"):  # fmt: skip
        assert f">{section}</h2>" in html
    # Self-contained: nothing fetched (no scripts, stylesheets, images or links out).
    assert not re.search(r"<script|<link|<img|src=|href=", html)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 6
    for svg in svgs:
        ET.fromstring(svg)  # well-formed


def test_compare():
    a, b = _result(1.0), _result(2.0)
    cmp = compare_results(a, b)
    pair = cmp["pairs"][1]
    ttft = next(m for m in pair["metrics"] if m["metric"] == "TTFT median (ms)")
    assert ttft["pct"] == pytest.approx(100.0) and ttft["better"] is False
    assert pair["ttft_ratio"] == pytest.approx(2.0)
    from bench.harness.compare import render_compare

    ET.fromstring(re.findall(r"<svg.*?</svg>", render_compare(cmp, a, b), flags=re.S)[0])


def test_suite_goals_report_each_ratio_and_whether_it_is_met():
    from bench.harness.overload import OVERLOAD_GOALS
    from bench.harness.suite import GOALS, goals, render_suite

    peer, ray, agent = _result(1.0), _result(1.2), _result(2.0)
    res = {
        "overhead": compare_results(peer, ray),
        "agent": compare_results(ray, agent),
        "cold_start": [
            {
                "server": who,
                "ready_s": ready,
                "first_token_s": ready + 1,
                "first_request_ttft_ms": 9.0,
                "first_request_error": None,
            }
            for who, ready in (("vllm", 20.0), ("raygent", 30.0))
        ],  # fmt: skip
    }
    rows = goals(res, ray)  # the fixture's cache hits took ttft + 30 ms
    by = {(g["goal"], g["where"]): g for g in rows}
    assert {g["goal"] for g in rows} == {name for name, _, _ in (*GOALS, *OVERLOAD_GOALS)}
    assert all(g["met"] is None for g in rows if g["goal"].startswith("overload_"))
    assert by[("ttft_p50", "concurrency 2")]["value"] == pytest.approx(1.2)
    assert by[("ttft_p50", "concurrency 2")]["met"] is True  # <= 1.3
    assert by[("tpot_p50", "concurrency 2")]["value"] is not None
    assert by[("agent_vs_model", "concurrency 2")]["value"] is not None
    assert by[("cold_start", "start -> ready")]["value"] == pytest.approx(1.5)
    assert by[("cold_start", "start -> ready")]["met"] is False
    assert by[("cache_hit_p50_ms", "concurrency 4, repeats")]["met"] is False
    assert goals({}, None)[0]["met"] is None  # not measured is not "met"
    res["overload"] = {"offered_rate": 90.0, "overload_p99_ratio": 2.5, "overload_timeouts": 0.0}
    over = {g["goal"]: g for g in goals(res, ray) if g["goal"].startswith("overload_")}
    assert over["overload_p99_ratio"]["met"] is False  # <= 2
    assert over["overload_timeouts"]["met"] is True
    assert over["overload_goodput_ratio"]["met"] is None  # not measured
    res["goals"] = rows
    html = render_suite(res, {"peer": peer, "raygent": ray, "agent": agent})
    assert ">Goals</h2>" in html and ">Agent stream vs model stream</h2>" in html
    assert ">Overload</h2>" in html


def _args(*extra):
    return build_parser().parse_args(["run", "--url", "http://127.0.0.1:1", *extra])


def test_cli_config():
    cfg = config_from_args(_args("--sweep", "1:8", "--duration", "1", "--model", "agent:a,b"))
    assert [s.concurrency for s in cfg.steps] == [1, 2, 4, 8]
    assert cfg.workload.models == ["agent:a", "b"]
    cfg = config_from_args(_args("--rate", "2", "--sweep", "1,3", "--num-requests", "5"))
    assert [s.rate for s in cfg.steps] == [1, 3]


@pytest.mark.parametrize(
    "extra",
    [
        ["--concurrency", "2", "--rate", "1", "--duration", "1"],
        ["--concurrency", "2"],
        ["--concurrency", "0", "--duration", "1"],
        ["--concurrency", "1", "--duration", "1", "--slo", "fast"],
        ["--concurrency", "1", "--duration", "1", "--header", "nocolon"],
        ["--rate", "inf", "--duration", "1"],
    ],
)
def test_cli_rejects_bad_options(extra, capsys):
    assert main(["run", "--url", "http://127.0.0.1:1", *extra]) == 2
    assert "raygent-bench:" in capsys.readouterr().err


def test_cli_exit_3_when_nothing_succeeds(tmp_path, capsys):
    code = main(["run", "--url", f"http://127.0.0.1:{free_port()}", "--num-requests", "2",
                 "--no-progress", "--quiet", "--out", str(tmp_path)])  # fmt: skip
    assert code == 3
    assert "connection" in capsys.readouterr().err
    assert json.loads((tmp_path / "result.json").read_text())["steps"][0]["summary"]["failed"] == 2


def test_exports_complete():
    public = {
        n for n in dir(harness) if not n.startswith("_") and n[0].isupper() or n in harness.__all__
    }
    assert set(harness.__all__) <= set(dir(harness))
    for name in ("BenchError", "ConfigError", "DatasetError", "ServerStartError"):
        assert name in harness.__all__
        assert issubclass(getattr(harness, name), harness.BenchError)
    missing = {n for n in public if isinstance(getattr(harness, n), type)} - set(harness.__all__)
    assert not missing, missing


@pytest.mark.parametrize(("lo", "hi"), [(0, 1.16), (0, 0.97), (0, 3e-5), (0, 12345.0), (5, 5)])
def test_nice_ticks_cover_the_range(lo, hi):
    from bench.harness.svg import nice_ticks

    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) >= 2
    assert len(ticks) <= 12
