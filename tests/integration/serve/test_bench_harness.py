"""The load-test harness against the real gateway (raygent serve_app on builtin:tiny).

``gateway_url`` (tests/integration/serve/conftest.py) is the base URL of a running, warm
gateway, and ``auth`` the Authorization header of one of its API keys. The harness runs as
users run it -- ``python -m bench run`` in a subprocess -- for a few seconds, and the files it
writes are checked field by field.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def bench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "run", "--no-progress", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _key(auth: dict[str, str]) -> str:
    return auth["Authorization"].removeprefix("Bearer ")


def test_harness_against_gateway(gateway_url: str, auth: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = bench(
        "--url", gateway_url,
        "--api-key", _key(auth),
        "--model", "default,agent:assistant",
        "--duration", "3",
        "--concurrency", "4",
        "--max-tokens", "8",
        "--input-len", "16",
        "--warmup", "2",
        "--repeat-fraction", "0.5",
        "--temperature", "0",
        "--slo", "ttft_ms=5000,e2el_ms=20000",
        "--fail-if", "error_rate>0",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr

    result = json.loads((out / "result.json").read_text())
    assert result["meta"]["tool"] == "raygent-bench"
    assert result["gates"] == {
        "conditions": ["error_rate>0"],
        "failures": [],
        "passed": True,
    }
    (step,) = result["steps"]
    s = step["summary"]
    assert s["completed"] > 0 and s["failed"] == 0, s["errors"]
    assert s["request_throughput"] > 0 and s["output_token_throughput"] > 0
    assert s["ttft_ms"]["median"] > 0 and s["e2el_ms"]["p99"] >= s["ttft_ms"]["median"]
    assert s["tokens_source"].get("usage") == s["completed"]  # stream_options.include_usage
    assert 0 < s["total_output_tokens"] <= 8 * s["completed"]
    assert s["goodput"] is not None and s["goodput"] > 0
    assert set(s["per_model"]) == {"default", "agent:assistant"}
    assert all(m["completed"] > 0 for m in s["per_model"].values())

    # --repeat-fraction 0.5 at temperature 0: the gateway's cache answers the repeats.
    cache = s["cache"]
    assert cache["no_header"] == 0  # every answer says hit | miss | bypass
    assert cache["hit"] > 0 and cache["hit_ratio"] is not None and cache["hit_ratio"] > 0
    assert "hit_latency" in cache and "miss_latency" in cache

    requests = result["requests"]
    assert len(requests) == s["requests"]
    assert all(r["cache"] in ("hit", "miss", "bypass") for r in requests)
    assert any(r["repeated"] for r in requests)

    with (out / "requests.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(requests)
    assert {"ttft_s", "tpot_s", "e2el_s", "cache", "error", "itl_ms"} <= set(rows[0])
    with (out / "summary.csv").open() as f:
        (summary_row,) = list(csv.DictReader(f))
    assert float(summary_row["request_throughput"]) == pytest.approx(s["request_throughput"])
    assert float(summary_row["cache_hit_ratio"]) == pytest.approx(cache["hit_ratio"])

    html = (out / "report.html").read_text()
    for section in ("Summary", "Distributions", "Timelines", "Cache", "Per model / agent"):
        assert f">{section}</h2>" in html
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 4
    for svg in svgs:
        ET.fromstring(svg)


def test_fail_if_sets_exit_code(gateway_url: str, auth: dict[str, str]) -> None:
    proc = bench(
        "--url", gateway_url,
        "--api-key", _key(auth),
        "--model", "default",
        "--num-requests", "4",
        "--concurrency", "2",
        "--max-tokens", "4",
        "--fail-if", "request_throughput>0",
        "--quiet",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
