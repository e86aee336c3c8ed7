"""Variants through the real application: ``tiny-ab`` is answered by two variants of the tiny
model with different engine settings -- ``a``, the package's ``default`` engine, and ``b``,
``tiny-b`` (``max_num_seqs`` 8), a second vLLM engine in the gateway replica -- on real Serve
(HAProxy ingress), real vLLM and the package's Redis response cache; weights change through
the admin route, whose write reaches the replica through the real registry's state feed.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from runtime.gateway.rollout import Guard, Rollout
from runtime.gateway.variants import SESSION_HEADER, VARIANT_HEADER

from .conftest import ADMIN_KEY, API_KEYS, APP, SHADOWED, VARIANT_MODEL, VARIANTS

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
REPO = Path(__file__).resolve().parents[3]
ARM_MODELS = {"a": "default", "b": VARIANT_MODEL}


@pytest.fixture(scope="module")
def variant_b_loaded(gateway_url, ray_session):
    """``tiny-b`` loads on its first request; wait for it (a slow machine may take longer
    than one request's timeout, and the load goes on past it). Unloaded after the module."""
    from ray import serve

    r = httpx.post(
        f"{gateway_url}{CHAT}",
        json=_body("Hello"),
        headers={"Authorization": f"Bearer {API_KEYS[0]}", VARIANT_HEADER: "b"},
        timeout=90,
    )
    handle = serve.get_deployment_handle("Gateway", app_name=APP)
    if r.status_code != 200:
        handle.model_wait_for_state.remote(VARIANT_MODEL, "ready", 300.0).result(timeout_s=310)
    yield gateway_url
    # free the second engine now rather than in the package's teardown (False: its idle
    # timeout freed it already)
    handle.model_unload.remote(VARIANT_MODEL).result(timeout_s=60)


def _body(content: str, **extra) -> dict:
    return {
        "model": VARIANTS,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        **extra,
    }


def test_sessions_stay_on_their_variant_and_each_variant_is_its_own_engine(
    variant_b_loaded, auth, openai_spec
):
    url = variant_b_loaded
    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
        for s in range(16):
            session = f"conversation-{s}-{uuid.uuid4().hex[:6]}"
            arms = set()
            for turn in range(2):
                r = http.post(
                    CHAT,
                    json=_body(f"turn {turn}", temperature=0.8),
                    headers={SESSION_HEADER: session},
                )
                assert r.status_code == 200, r.text
                body = r.json()
                openai_spec.check("CreateChatCompletionResponse", body)
                assert body["variant"] == r.headers[VARIANT_HEADER]
                assert body["model"] == ARM_MODELS[body["variant"]]
                arms.add(body["variant"])
            assert len(arms) == 1, f"{session} moved between variants: {arms}"
            seen.update(arms)
    assert set(seen) == {"a", "b"}, seen  # 16 sessions on two even arms: 2 ** -15 to miss one

    from ray import serve

    handle = serve.get_deployment_handle("Gateway", app_name=APP)
    stats = {
        arm: handle.model_stats.remote(model).result(timeout_s=30)
        for arm, model in ARM_MODELS.items()
    }
    assert stats["b"]["max_num_seqs"] == 8 and stats["a"]["max_num_seqs"] != 8, stats
    # engine_niceness: 19 -- every thread of b's engine processes yields the CPU; a's do not
    nice = {}
    for arm in ARM_MODELS:
        pids = [p for pid in stats[arm]["engine_pids"] for p in _family(pid)]
        nice[arm] = {os.getpriority(os.PRIO_PROCESS, int(t)) for p in pids for t in _tasks(p)}
    assert nice["b"] == {19} and max(nice["a"]) < 19, nice


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    from runtime.serve.options import _tree

    return _tree(pid)


def test_a_streamed_variant_names_itself_in_every_chunk(variant_b_loaded, auth, openai_spec):
    r = httpx.post(
        f"{variant_b_loaded}{CHAT}",
        json=_body("Stream", stream=True),
        headers={**auth, VARIANT_HEADER: "b"},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers[VARIANT_HEADER] == "b", r.text
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    for chunk in chunks:
        openai_spec.check("CreateChatCompletionStreamResponse", chunk)
        assert chunk["variant"] == "b" and chunk["model"] == VARIANT_MODEL


def test_variants_keep_apart_in_the_cache_and_in_the_metrics(variant_b_loaded, auth):
    url = variant_b_loaded
    prompt = f"Cache per variant {uuid.uuid4().hex[:8]}"

    def ask(arm: str) -> httpx.Response:
        r = httpx.post(
            f"{url}{CHAT}",
            json=_body(prompt, temperature=0),
            headers={**auth, VARIANT_HEADER: arm},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r

    assert ask("a").headers["x-raygent-cache"] == "miss"
    b = ask("b")
    assert b.headers["x-raygent-cache"] == "miss", "variant b was served variant a's answer"
    assert b.json()["model"] == VARIANT_MODEL
    again = ask("a")
    assert again.headers["x-raygent-cache"] == "hit" and again.json()["variant"] == "a"

    plain = httpx.post(
        f"{url}{CHAT}", json={**_body(prompt), "model": "default"}, headers=auth, timeout=60
    )
    assert plain.status_code == 200 and VARIANT_HEADER not in plain.headers
    assert "variant" not in plain.json()

    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers=auth, timeout=10).text
    counted = {
        (s.labels.get("target"), s.labels.get("variant"))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "raygent_request_duration_seconds_count" and s.value
    }
    assert {(VARIANTS, "a"), (VARIANTS, "b"), ("default", "")} <= counted, counted


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _arms(http: httpx.Client, users: range) -> dict[str, str]:
    """Each caller's arm (the ``user`` field is the sticky key)."""
    out = {}
    for u in users:
        r = http.post(CHAT, json=_body("Hi", user=f"user-{u}", temperature=0.8))
        assert r.status_code == 200, r.text
        out[f"user-{u}"] = r.json()["variant"]
    return out


def test_the_admin_route_moves_traffic_and_a_rollout_rolls_back_on_its_guard(
    variant_b_loaded, auth
):
    url = variant_b_loaded
    with (
        httpx.Client(base_url=url, headers=auth, timeout=60) as http,
        httpx.Client(base_url=url, headers=ADMIN, timeout=30) as admin,
    ):
        try:
            assert http.get("/admin/variants").status_code == 401  # an API key does not open it
            before = _arms(http, range(24))
            assert set(before.values()) == {"a", "b"}, before
            r = admin.put(f"/admin/variants/{VARIANTS}", json={"weights": {"a": 0}})
            assert r.status_code == 200 and r.json()["weights_from"] == "admin", r.text
            assert set(_arms(http, range(24)).values()) == {"b"}
            assert admin.delete(f"/admin/variants/{VARIANTS}").status_code == 200
            assert _arms(http, range(24)) == before  # the same callers on the same arms

            lines: list[str] = []

            def hold(_: float) -> None:
                _arms(http, range(100, 112))

            # TTFT p99 below 1 microsecond: no real engine holds that, so the first step fails
            strict = Guard(max_ttft_p99_s=1e-6, min_requests=3)
            rollout = Rollout(admin, http, VARIANTS, "b", strict, hold, lines.append)
            assert rollout.run([75, 100], hold_s=0) is False, lines
            assert "FAIL: TTFT p99" in lines[0], lines
            entry = next(e for e in admin.get("/admin/variants").json()["data"])
            assert entry["weights_from"] == "config", entry

            lines.clear()
            rollout = Rollout(admin, http, VARIANTS, "b", Guard(min_requests=3), hold, lines.append)
            assert rollout.run([75, 100], hold_s=0) is True, lines
            assert set(_arms(http, range(24)).values()) == {"b"}
        finally:
            admin.delete(f"/admin/variants/{VARIANTS}")


def _shadow_outcomes(http: httpx.Client) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for s in family.samples
        if s.name == "raygent_shadow_requests_total" and s.labels.get("target") == SHADOWED
    }


def test_a_shadow_gets_copies_of_answered_requests_and_its_outcomes_are_counted(
    variant_b_loaded, auth
):
    from ray import serve

    handle = serve.get_deployment_handle("Gateway", app_name=APP)

    def shadow_requests() -> int:
        return handle.model_stats.remote(VARIANT_MODEL).result(timeout_s=30)["counts"]["requests"]

    before = shadow_requests()
    with httpx.Client(base_url=variant_b_loaded, headers=auth, timeout=60) as http:
        for i in range(6):
            body = {
                **_body(f"Shadow me {i} {uuid.uuid4().hex[:6]}", temperature=0),
                "model": SHADOWED,
            }
            r = http.post(CHAT, json=body)
            assert r.status_code == 200, r.text
            assert r.json()["variant"] == "live" and r.json()["model"] == "default"
        deadline = time.monotonic() + 60
        while sum((got := _shadow_outcomes(http)).values()) < 6:
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
    assert got.get("error", 0) == 0, got
    copied = got.get("same", 0) + got.get("different", 0)
    assert copied >= 1 and copied + got.get("dropped", 0) == 6, got
    assert shadow_requests() - before == copied  # the shadow's own engine answered each copy


def test_the_harness_compares_the_variants_over_repeated_runs(variant_b_loaded, tmp_path):
    out = tmp_path / "variants"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.variants",
            "--repeat",
            "2",
            "--no-progress",
            "--url",
            variant_b_loaded,
            "--api-key",
            API_KEYS[0],
            "--model",
            VARIANTS,
            "--concurrency",
            "2",
            "--num-requests",
            "16",
            "--max-tokens",
            "4",
            "--input-len",
            "16",
            "--slo",
            "ttft_ms=5000",
            "--out",
            str(out),
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (arms,) = json.loads((out / "variants.json").read_text())["steps"].values()
    assert set(arms) == {f"{VARIANTS}/a", f"{VARIANTS}/b"}, arms
    for figures in arms.values():
        ttft = figures["TTFT p50 (ms)"]
        assert ttft["n"] == 2 and ttft["mean"] > 0 and ttft["low"] <= ttft["mean"] <= ttft["high"]
        assert figures["error rate"]["mean"] == 0
