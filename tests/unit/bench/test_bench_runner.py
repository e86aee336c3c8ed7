"""The client and runner end to end against the no-op server, on the test's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from bench.harness import (
    ClientConfig,
    LoadShape,
    RequestRecord,
    RunOptions,
    WorkloadConfig,
    make_client,
    make_workload,
    run_step,
    summarize,
)
from bench.harness.noop_server import NoopProtocol, NoopServer
from bench.harness.runner import split_shape
from bench.harness.servers import free_port


@contextlib.asynccontextmanager
async def noop(tokens=4, ttft_ms=0.0, itl_ms=0.0):
    state = NoopServer(tokens, ttft_ms, itl_ms)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: NoopProtocol(state), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def client(url, kind="raw"):
    if kind != "raw":  # the alternatives are optional packages
        pytest.importorskip(kind)
    c = make_client(ClientConfig(url, timeout_s=5), kind)
    try:
        yield c
    finally:
        await c.close()


def workload(**kw):
    return make_workload(WorkloadConfig(models=["m"], endpoint="completions", input_len=4, **kw))


@pytest.mark.parametrize("kind", ["raw", "aiohttp", "httpx"])
async def test_closed_loop_counts_tokens_from_usage(kind):
    async with noop(tokens=4) as url, client(url, kind) as c:
        res = await run_step(
            c, workload(), LoadShape(concurrency=4, num_requests=40), RunOptions("completions")
        )
    assert len(res.records) == 40
    assert all(r.ok and r.output_tokens == 4 and r.tokens_source == "usage" for r in res.records)
    assert all(r.input_tokens == 16 and r.cache == "miss" for r in res.records)
    assert all(r.cached_tokens == 0 for r in res.records)
    assert res.duration_s > 0


async def test_known_timings_are_measured():
    async with noop(tokens=4, ttft_ms=30, itl_ms=10) as url, client(url) as c:
        res = await run_step(
            c, workload(), LoadShape(concurrency=2, num_requests=6), RunOptions("completions")
        )
    s = summarize(res.records, res.duration_s)
    # Timers fire late, never early; a loaded CI box may add a few ms.
    assert 30 <= s["ttft_ms"]["median"] < 60
    assert 9 <= s["itl_ms"]["median"] < 30
    assert 9 <= s["tpot_ms"]["median"] < 30
    assert s["e2el_ms"]["median"] == pytest.approx(
        s["ttft_ms"]["median"] + 3 * s["tpot_ms"]["median"], rel=0.2
    )


async def test_repeat_fraction_produces_cache_hits():
    async with noop() as url, client(url) as c:
        res = await run_step(
            c,
            workload(repeat_fraction=0.5, seed=3),
            LoadShape(concurrency=1, num_requests=200),
            RunOptions("completions"),
        )
    c_ = summarize(res.records, res.duration_s)["cache"]
    assert c_["hit_ratio"] == pytest.approx(0.5, abs=0.1)
    assert all(r.cache == "hit" for r in res.records if r.repeated)


async def test_open_loop_paces_arrivals():
    async with noop() as url, client(url) as c:
        t0 = time.perf_counter()
        res = await run_step(
            c, workload(), LoadShape(rate=100, num_requests=20), RunOptions("completions")
        )
        took = time.perf_counter() - t0
    assert len(res.records) == 20
    assert 0.18 <= took < 1.0  # the last arrival is due at n / rate = 0.2 s


async def test_duration_stops_new_requests():
    async with noop() as url, client(url) as c:
        res = await run_step(
            c, workload(), LoadShape(concurrency=2, duration_s=0.2), RunOptions("completions")
        )
    assert res.records
    assert max(r.start_s for r in res.records) - res.started <= 0.25


@pytest.mark.parametrize("kind", ["raw", "aiohttp"])
async def test_error_kinds(kind):
    async with noop() as url, client(url, kind) as c:
        rec = RequestRecord()
        await c.send("/v1/completions", json.dumps({"model": "fail"}).encode(), True, rec)
    assert rec.error == "http_429" and rec.retry_after == "1" and rec.status == 429
    async with client(f"http://127.0.0.1:{free_port()}", kind) as c:
        rec = RequestRecord()
        await c.send("/v1/completions", b"{}", True, rec)
    assert rec.error == "connection"


async def test_multi_turn_sends_history():
    seen = []

    class Recording(NoopProtocol):
        def data_received(self, data):
            seen.append(data)
            super().data_received(data)

    state = NoopServer(2, 0, 0)
    server = await asyncio.get_running_loop().create_server(
        lambda: Recording(state), "127.0.0.1", 0
    )
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with client(url) as c:
            wl = make_workload(WorkloadConfig(models=["m"], endpoint="chat", input_len=3, turns=3))
            res = await run_step(c, wl, LoadShape(concurrency=1, num_requests=3), RunOptions())
    finally:
        server.close()
        await server.wait_closed()
    assert [r.turn for r in res.records] == [0, 1, 2]
    last = json.loads(b"".join(seen).rsplit(b"\r\n\r\n", 1)[1])
    assert [m["role"] for m in last["messages"]] == ["user", "assistant"] * 2 + ["user"]
    assert last["messages"][1]["content"] == " t0 t1"


def test_split_shape():
    s = LoadShape(concurrency=5, num_requests=11, duration_s=None)
    parts = [split_shape(s, 2, i) for i in range(2)]
    assert [p.concurrency for p in parts] == [3, 2]
    assert [p.num_requests for p in parts] == [6, 5]
    assert split_shape(LoadShape(concurrency=1, duration_s=1), 2, 1) is None
    r = split_shape(LoadShape(rate=10, duration_s=1), 4, 0)
    assert r.rate == 2.5


async def test_run_benchmark_with_two_worker_processes_and_a_sweep():
    from bench.harness import RunConfig, run_benchmark

    async with noop() as url:
        cfg = RunConfig(
            url=url,
            steps=[LoadShape(concurrency=c, num_requests=40) for c in (2, 4)],
            workload=WorkloadConfig(models=["agent:a", "agent:b"], endpoint="completions"),
            options=RunOptions("completions", warmup_requests=4),
            workers=2,
            progress=False,
            slo={"ttft_ms": 1000},
        )
        result = await run_benchmark(cfg)
    assert result["meta"]["warmup_requests_sent"] == 4
    assert [len([r for r in result["requests"] if r["step"] == i]) for i in (0, 1)] == [40, 40]
    assert {r["worker"] for r in result["requests"]} == {0, 1}
    s = result["steps"][1]["summary"]
    assert s["failed"] == 0 and s["goodput"] > 0 and set(s["per_model"]) == {"agent:a", "agent:b"}
    assert min(r["start_s"] for r in result["requests"]) >= -0.001  # one clock for all


def test_saturation_check():
    from bench.harness import saturation_check

    def step(label, thr, err=0.0, rate=None):
        return {
            "shape": {"label": label, "rate": rate},
            "summary": {"request_throughput": thr, "error_rate": err},
        }

    steps = [step("c1", 10), step("c2", 19), step("c4", 20), step("c8", 20.5)]
    sat = saturation_check(steps)
    assert sat["step"] == 1 and sat["label"] == "c2" and "c4" in sat["reason"]
    assert saturation_check([step("c1", 10), step("c2", 19)]) is None
    assert saturation_check([step("c1", 10), step("c2", 30, err=0.2)])["step"] == 0
    assert saturation_check([step("r4", 3.0, rate=4.0)])["step"] == 0
