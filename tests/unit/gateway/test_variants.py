"""Variants: the sticky weighted assignment, its config, and the gateway answering through it.

The router is pure (a hash of name, arm and key), so its properties are checked over many keys;
the gateway's part -- the override header, the variant in the body, every chunk, the header,
the cache key and the metrics -- runs on the real HTTP app with scripted models
(``conftest.gateway_app``), each answering with its own model name.
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agents.errors import ModelError
from runtime.config import RaygentConfig, VariantsConfig, load_config
from runtime.errors import ConfigError
from runtime.gateway import completions as completions_module
from runtime.gateway.errors import ApiError
from runtime.gateway.rollout import ArmSample, Guard, Rollout, histogram_quantile, step_weights
from runtime.gateway.variants import SESSION_HEADER, VARIANT_HEADER, VariantRouter

from .conftest import API_KEY, ScriptedModelHandle, _Method, gateway_app, sse_data

CHAT = "/v1/chat/completions"
ADMIN_KEY = "sk-admin-unit"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def router(**weights: float) -> VariantRouter:
    arms = {n: {"target": "default", "weight": w} for n, w in weights.items()}
    return VariantRouter("chat", VariantsConfig.model_validate({"arms": arms}))


def shares(r: VariantRouter, keys: range) -> dict[str, float]:
    counts = collections.Counter(r.pick(f"user-{k}").name for k in keys)
    return {arm: counts[arm] / len(keys) for arm in r.arms}


def test_a_key_always_gets_the_same_arm_from_any_router_built_from_the_config():
    a, b = router(a=1, b=1), router(b=1, a=1)  # another replica, arms in another order
    picks = [a.pick(f"user-{k}").name for k in range(200)]
    assert picks == [b.pick(f"user-{k}").name for k in range(200)]
    assert picks == [a.pick(f"user-{k}").name for k in range(200)]
    assert set(picks) == {"a", "b"}


def test_arms_get_their_weights_share_of_keys():
    got = shares(router(a=9, b=1), range(20_000))
    assert got["b"] == pytest.approx(0.1, abs=0.01)  # 5 standard deviations
    got = shares(router(a=1, b=1, c=2), range(20_000))
    assert got == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5}, abs=0.015)


def test_raising_a_canarys_weight_moves_callers_only_onto_the_canary():
    keys = range(5_000)
    before = {k: router(a=5, b=4, canary=1).pick(f"user-{k}").name for k in keys}
    after = {k: router(a=5, b=4, canary=3).pick(f"user-{k}").name for k in keys}
    moved = [(before[k], after[k]) for k in keys if before[k] != after[k]]
    assert moved, "a weight change moved nobody"
    assert all(to == "canary" for _, to in moved), collections.Counter(moved)
    # 10% -> 25%: about 15% of callers moved, none of them away from the canary
    assert len(moved) / len(keys) == pytest.approx(0.15, abs=0.02)


def test_zero_weight_arms_are_reached_only_by_name_and_unknown_names_are_a_400():
    r = router(a=1, shadowless=0)
    assert {r.pick(f"user-{k}").name for k in range(300)} == {"a"}
    assert {r.pick(None).name for _ in range(50)} == {"a"}
    assert r.pick("user-1", override="shadowless").name == "shadowless"
    with pytest.raises(ApiError) as err:
        r.pick("user-1", override="c")
    assert err.value.status == 400 and err.value.param == VARIANT_HEADER
    assert "'c' is not a variant of 'chat'" in str(err.value.body())


def test_no_key_spreads_requests_by_weight():
    r = router(a=3, b=1)
    counts = collections.Counter(r.pick(None).name for _ in range(4_000))
    assert counts["b"] / 4_000 == pytest.approx(0.25, abs=0.04)


def test_the_sticky_key_is_the_session_then_the_user_then_the_tenant():
    session = router(a=1, b=1)
    assert session.sticky_key(session="s1", user="u1", tenant="t1") == "s:s1"
    assert session.sticky_key(session=None, user="u1", tenant="t1") == "u:u1"
    assert session.sticky_key(session="", user=None, tenant="t1") == "t:t1"
    assert session.sticky_key(session=None, user=None, tenant=None) is None
    tenant = VariantRouter(
        "chat",
        VariantsConfig.model_validate({"sticky": "tenant", "arms": {"a": {"target": "x"}}}),
    )
    assert tenant.sticky_key(session="s1", user="u1", tenant="t1") == "t:t1"


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"chat": {"arms": {"a": {"target": "nope"}}}}, "variants.chat.arms.a.target = 'nope'"),
        ({"chat": {"arms": {"a": {"target": "default", "weight": 0}}}}, "weight above 0"),
        ({"chat": {"arms": {"a b": {"target": "default"}}}}, "arm names may hold"),
        ({"chat": {"arms": {}}}, "variants.chat.arms"),
        ({"chat": {"arms": {"a": {"target": "default", "weight": -1}}}}, "weight"),
    ],
)
def test_bad_variants_fail_the_config_naming_the_field(tmp_path, variants, message):
    path = tmp_path / "raygent.yaml"
    path.write_text(yaml.safe_dump({"variants": variants}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env={})


def test_an_arm_naming_an_agent_the_application_does_not_run_fails_at_start():
    cfg = RaygentConfig.model_validate(
        {"variants": {"chat": {"arms": {"a": {"target": "agent:Nobody"}}}}}
    )
    runtime = types.SimpleNamespace(spec=types.SimpleNamespace(classes={}))
    with pytest.raises(ConfigError, match="'agent:Nobody' is not a model or agent"):
        completions_module.Completions(cfg, {}, runtime, None, None, None)  # type: ignore[arg-type]


# -- through the gateway ---------------------------------------------------------------------


def variant_config() -> RaygentConfig:
    """Two models (engine settings apart) behind ``chat``, and a prompt variant of
    ``default`` behind ``default`` itself."""
    variants = {
        "chat": {"arms": {"a": {"target": "default"}, "b": {"target": "default_b"}}},
        "default": {
            "arms": {
                "plain": {"target": "default", "weight": 1},
                "terse": {"target": "default", "weight": 0, "system_prompt": "Be terse."},
            }
        },
    }
    return RaygentConfig.model_validate(
        {
            "auth": {"api_keys": [API_KEY], "admin_keys": [ADMIN_KEY]},
            "models": {"default": {}, "default_b": {"engine_args": {"max_num_seqs": 8}}},
            "variants": variants,
        }
    )


@pytest.fixture(scope="module")
def client() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        app = gateway_app(variant_config(), mp)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def chat(client: TestClient, auth: dict[str, str], **kw: Any) -> Any:
    headers = {**auth, **kw.pop("headers", {})}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **kw}
    return client.post(CHAT, json=body, headers=headers)


def test_a_session_stays_on_its_variant_and_the_answer_names_it(client, auth):
    seen = collections.Counter()
    for s in range(40):
        names = set()
        for _ in range(3):
            r = chat(client, auth, headers={SESSION_HEADER: f"session-{s}"}, temperature=0.5)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["variant"] == r.headers[VARIANT_HEADER]
            # each arm's own model answered: "a" is default, "b" is default_b
            assert body["model"] == {"a": "default", "b": "default_b"}[body["variant"]]
            names.add(body["variant"])
        assert len(names) == 1, f"session-{s} moved between variants: {names}"
        seen.update(names)
    assert set(seen) == {"a", "b"}  # 40 sessions, two even arms: both answered


def test_the_user_field_is_the_sticky_key_without_a_session(client, auth):
    arms = set()
    for u in range(20):
        got = {chat(client, auth, user=f"u{u}").json()["variant"] for _ in range(3)}
        assert len(got) == 1
        arms |= got
    assert arms == {"a", "b"}  # by user, not by the one API key's tenant they all share


def test_the_override_header_picks_the_arm_and_streams_name_it_in_every_chunk(client, auth):
    r = chat(client, auth, headers={VARIANT_HEADER: "b"}, stream=True)
    assert r.status_code == 200 and r.headers[VARIANT_HEADER] == "b"
    chunks = sse_data(r.text)
    assert chunks and all(c["variant"] == "b" and c["model"] == "default_b" for c in chunks)


@pytest.mark.parametrize(
    ("model", "variant", "message"),
    [
        ("chat", "c", "'c' is not a variant of 'chat'"),
        ("default_b", "a", "'default_b' has no variants"),
    ],
)
def test_a_bad_override_is_a_400_naming_the_header(client, auth, model, variant, message):
    r = chat(client, auth, model=model, headers={VARIANT_HEADER: variant})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == VARIANT_HEADER and message in err["message"]


def test_each_variant_has_its_own_cache_entries(client, auth):
    messages = [{"role": "user", "content": "cache me per variant"}]

    def ask(arm: str) -> Any:
        return chat(client, auth, messages=messages, temperature=0, headers={VARIANT_HEADER: arm})

    first = ask("a")
    assert first.headers["x-raygent-cache"] == "miss"
    other = ask("b")
    assert other.headers["x-raygent-cache"] == "miss", "variant b was served a's answer"
    assert other.json()["model"] == "default_b"
    again = ask("a")
    assert again.headers["x-raygent-cache"] == "hit" and again.json()["variant"] == "a"


def test_a_prompt_variant_sends_its_system_prompt_first(client, auth, monkeypatch):
    sent: list[Any] = []
    real = completions_module.with_system_prompt

    def spy(prompt: Any, system: str) -> Any:
        sent.append(real(prompt, system))
        return sent[-1]

    monkeypatch.setattr(completions_module, "with_system_prompt", spy)
    r = chat(client, auth, model="default", headers={VARIANT_HEADER: "terse"})
    assert r.status_code == 200 and r.json()["variant"] == "terse"
    assert sent == [[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]]
    plain = chat(client, auth, model="default", user="anyone")  # weight 0: never assigned
    assert plain.json()["variant"] == "plain" and len(sent) == 1
    assert completions_module.with_system_prompt("Go.", "Be terse.") == "Be terse.\n\nGo."


def test_metrics_and_the_model_list_carry_the_variants(client, auth):
    chat(client, auth, headers={VARIANT_HEADER: "b"})
    body = client.get("/metrics", headers=auth).text
    counted = {
        (s.name, s.labels.get("target"), s.labels.get("variant"))
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.value
    }
    assert ("raygent_request_duration_seconds_count", "chat", "b") in counted
    assert ("raygent_output_tokens_total", "chat", "b") in counted
    ids = [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]]
    assert "chat" in ids and "default" in ids and "default_b" in ids


def test_the_admin_route_moves_weight_on_the_fly_and_clearing_it_restores_the_config(client, auth):
    def arms_of(users: range) -> collections.Counter[str]:
        return collections.Counter(
            chat(client, auth, user=f"w{u}").json()["variant"] for u in users
        )

    before = arms_of(range(60))
    assert set(before) == {"a", "b"}
    listed = client.get("/admin/variants", headers=ADMIN).json()["data"]
    entry = next(e for e in listed if e["name"] == "chat")
    assert entry["weights_from"] == "config"
    assert entry["arms"]["b"] == {
        "target": "default_b",
        "weight": 1.0,
        "configured_weight": 1.0,
        "shadow": None,
    }

    r = client.put("/admin/variants/chat", json={"weights": {"b": 0}}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["weights_from"] == "admin" and r.json()["arms"]["b"]["weight"] == 0
    assert arms_of(range(60)) == {"a": 60}  # every caller, sticky or not, now on a
    # b is still reachable by name, as a weight-0 arm
    assert chat(client, auth, headers={VARIANT_HEADER: "b"}).json()["variant"] == "b"

    r = client.delete("/admin/variants/chat", headers=ADMIN)
    assert r.status_code == 200 and r.json()["weights_from"] == "config"
    assert arms_of(range(60)) == before  # the same callers back on the same arms


def test_serve_config_weights_replace_the_configs_and_an_admin_override_still_wins(client, auth):
    """The Gateway's ``user_config`` (what ``serve deploy`` hands every replica without a
    restart): its weights route callers until an admin override is set, and again once that
    is cleared; leaving the name out restores the app config's weights."""
    replica = next(iter(client.app.dependency_overrides.values()))()

    def arms_of(users: range) -> collections.Counter[str]:
        return collections.Counter(
            chat(client, auth, user=f"s{u}").json()["variant"] for u in users
        )

    def entry() -> dict[str, Any]:
        return client.get("/admin/variants", headers=ADMIN).json()["data"][0]

    before = arms_of(range(40))
    try:
        replica.reconfigure({"variant_weights": {"chat": {"a": 0}}})
        assert arms_of(range(40)) == {"b": 40}
        assert entry()["weights_from"] == "serve_config" and entry()["arms"]["a"]["weight"] == 0
        r = client.put("/admin/variants/chat", json={"weights": {"b": 0}}, headers=ADMIN)
        assert r.json()["weights_from"] == "admin" and arms_of(range(40)) == {"a": 40}
        client.delete("/admin/variants/chat", headers=ADMIN)
        assert entry()["weights_from"] == "serve_config" and arms_of(range(40)) == {"b": 40}
        for bad, message in (
            ({"variant_weights": {"nope": {"a": 1}}}, "'nope' has no variants"),
            ({"variant_weights": {"chat": {"a": 0, "b": 0}}}, "chat: weights: at least one"),
            ({"weights": {}}, "unknown keys ['weights']"),
        ):
            with pytest.raises(ConfigError, match=re.escape(message)):
                replica.reconfigure(bad)
            assert entry()["weights_from"] == "serve_config"  # a bad update changes nothing
        replica.reconfigure({})
        assert entry()["weights_from"] == "config" and arms_of(range(40)) == before
    finally:
        replica.reconfigure({})


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"weights": {"c": 1}}, "weights", "['c'] are not variants of 'chat'"),
        ({"weights": {"a": 0, "b": 0}}, "weights", "at least one arm"),
        ({"weights": {"a": -1}}, "weights", "a: -1.0 is not a finite number"),
        ({"weights": {}}, "weights", "must be an object"),
        ({"weights": {"a": "x"}}, "weights.a", None),
        ({"weight": {"a": 1}}, "weights", "Field required"),
    ],
)
def test_bad_weights_are_a_400_naming_the_field(client, body, param, message):
    r = client.put("/admin/variants/chat", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    if message:
        assert message in err["message"], err
    listed = client.get("/admin/variants", headers=ADMIN).json()["data"]
    assert all(e["weights_from"] == "config" for e in listed)  # nothing was set


def test_the_admin_routes_take_only_the_admin_key(client, auth):
    assert client.get("/admin/variants", headers=auth).status_code == 401  # an API key
    assert client.get("/admin/variants").status_code == 401
    assert (
        client.put("/admin/variants/nope", json={"weights": {"a": 1}}, headers=ADMIN).json()[
            "error"
        ]["param"]
        == "name"
    )
    assert client.get("/metrics", headers=ADMIN).status_code == 401  # and only the admin routes


def test_without_admin_keys_the_admin_routes_are_closed(monkeypatch, auth):
    cfg = variant_config()
    cfg = cfg.model_copy(update={"auth": cfg.auth.model_copy(update={"admin_keys": []})})
    with TestClient(gateway_app(cfg, monkeypatch), raise_server_exceptions=False) as c:
        for headers in ({}, auth, ADMIN):
            r = c.get("/admin/variants", headers=headers)
            assert r.status_code == 403 and "auth.admin_keys" in r.json()["error"]["message"]


# -- the rollout helper ----------------------------------------------------------------------


def test_histogram_quantile_interpolates_as_prometheus_does():
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.3)  # halfway through 0.1-0.5
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.95)
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1  # in +Inf
    assert math.isnan(histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]))


def test_a_step_holds_only_on_enough_healthy_answers():
    guard = Guard(max_error_rate=0.05, max_ttft_p99_s=0.5, min_requests=20)
    fast = ((0.1, 40.0), (1.0, 40.0), (math.inf, 40.0))
    slow = ((0.1, 20.0), (1.0, 40.0), (math.inf, 40.0))
    assert guard.judge(ArmSample(40, 1, fast)) is None
    assert "fewer than 20" in (guard.judge(ArmSample(19, 0, fast)) or "")
    assert "error rate 0.100" in (guard.judge(ArmSample(40, 4, fast)) or "")
    assert "TTFT p99" in (guard.judge(ArmSample(40, 0, slow)) or "")
    # no streamed answer in the hold: the whole answers' p99 is the first token's
    assert "TTFT p99" in (guard.judge(ArmSample(40, 0, (), slow)) or "")
    assert guard.judge(ArmSample(40, 0, ((0.1, 0.0), (math.inf, 0.0)), fast)) is None


def test_step_weights_give_the_arm_its_share_and_keep_the_others_proportion():
    assert step_weights({"a": 6, "b": 3, "c": 0}, "c", 10) == {"a": 60, "b": 30, "c": 10}
    assert step_weights({"a": 0, "b": 1}, "b", 100) == {"a": 0, "b": 100}
    assert step_weights({"a": 0, "b": 0, "c": 5}, "c", 50) == {"a": 25, "b": 25, "c": 50}


def rollout_on(app: Any, guard: Guard, auth: dict[str, str]) -> tuple[Rollout, list[str]]:
    api = TestClient(app, headers=auth)

    def traffic(_: float) -> None:  # the hold: 40 callers' requests
        for u in range(40):
            assert chat(api, {}, user=f"r{u}", stream=True).status_code == 200

    lines: list[str] = []
    rollout = Rollout(
        TestClient(app, headers=ADMIN), api, "chat", "b", guard, traffic, lines.append
    )
    return rollout, lines


def test_a_rollout_moves_every_caller_step_by_step_while_the_guard_holds(monkeypatch, auth):
    app = gateway_app(variant_config(), monkeypatch)
    rollout, lines = rollout_on(app, Guard(min_requests=5), auth)
    assert rollout.run([25, 50, 100], hold_s=0) is True
    assert len(lines) == 3 and all(line.endswith("hold") for line in lines), lines
    api = TestClient(app, headers=auth)
    assert {chat(api, {}, user=f"x{u}").json()["variant"] for u in range(30)} == {"b"}


def test_a_rollout_that_fails_its_guard_restores_the_weights(monkeypatch, auth):
    app = gateway_app(variant_config(), monkeypatch)
    rollout, lines = rollout_on(app, Guard(max_ttft_p99_s=0.0, min_requests=5), auth)
    assert rollout.run([25, 50, 100], hold_s=0) is False
    assert "FAIL: TTFT p99" in lines[0] and lines[-1].startswith("rolled back")
    listed = TestClient(app, headers=ADMIN).get("/admin/variants").json()["data"]
    assert next(e for e in listed if e["name"] == "chat")["weights_from"] == "config"


# -- shadow arms -----------------------------------------------------------------------------


def test_a_shadow_arm_takes_no_traffic_of_its_own():
    arm = VariantsConfig.model_validate(
        {"arms": {"s": {"target": "m", "shadow": 0.5}, "a": {"target": "m"}}}
    )
    assert arm.arms["s"].weight == 0
    with pytest.raises(ValueError, match="its weight must be 0"):
        VariantsConfig.model_validate({"arms": {"s": {"target": "m", "shadow": 0.5, "weight": 1}}})


class BlockedHandle(ScriptedModelHandle):
    """A model that answers only once ``release`` is set (from any thread)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.calls = 0
        self.chat = _Method(self._blocked)

    async def _blocked(self, prompt: Any, params: dict[str, Any], *args: Any, **kw: Any) -> Any:
        self.calls += 1
        await asyncio.to_thread(self.release.wait, 30)
        return await self._whole(prompt, params, *args, **kw)


def shadow_config(share: float = 1.0, max_inflight: int = 2) -> RaygentConfig:
    cfg = variant_config()
    shadowed = VariantsConfig.model_validate(
        {
            "shadow_max_inflight": max_inflight,
            "arms": {
                "live": {"target": "default"},
                "next": {"target": "default_b", "shadow": share},
            },
        }
    )
    return cfg.model_copy(update={"variants": {**cfg.variants, "shadowed": shadowed}})


def test_the_admin_route_cannot_send_clients_to_a_shadow(monkeypatch):
    with TestClient(gateway_app(shadow_config(), monkeypatch)) as c:
        r = c.put("/admin/variants/shadowed", json={"weights": {"next": 1}}, headers=ADMIN)
        assert r.status_code == 400 and "shadow arm" in r.json()["error"]["message"]


def shadow_counts(c: TestClient) -> dict[str, float]:
    body = c.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "raygent_shadow_requests_total" and s.labels["variant"] == "next"
    }


def test_copies_go_to_the_shadow_after_the_answer_and_are_compared(monkeypatch, auth):
    with TestClient(gateway_app(shadow_config(), monkeypatch), raise_server_exceptions=False) as c:
        for stream in (False, True, False):
            r = chat(c, auth, model="shadowed", stream=stream, temperature=0)
            assert r.status_code == 200 and r.headers[VARIANT_HEADER] == "live"
        # the third was a cache hit: copied too (the shadow sees real traffic, hits included)
        assert r.headers["x-raygent-cache"] == "hit"
        counts = poll(lambda: shadow_counts(c), lambda got: got.get("same") == 3)
        assert counts == {"same": 3.0}  # the scripted models answer alike


def test_shadows_never_delay_an_answer_and_beyond_their_bound_are_dropped(monkeypatch, auth):
    blocked = BlockedHandle("default_b")
    app = gateway_app(shadow_config(max_inflight=1), monkeypatch, {"default_b": blocked})
    with TestClient(app, raise_server_exceptions=False) as c:
        for i in range(3):  # the shadow is stuck: answers still come at once
            r = chat(c, auth, model="shadowed", user=f"u{i}", temperature=0.9)
            assert r.status_code == 200 and r.json()["model"] == "default"
        assert shadow_counts(c) == {"dropped": 2.0} and blocked.calls == 1
        blocked.release.set()
        poll(lambda: shadow_counts(c), lambda got: got.get("same") == 1)


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not done(got := read()):
        assert time.monotonic() < deadline, got
        time.sleep(0.02)
    return got


class FailingHandle(ScriptedModelHandle):
    """A model whose every call fails as an engine error does."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.chat = _Method(self._fail)

    async def _fail(self, *_: Any, **__: Any) -> Any:
        raise ModelError(f"{self.name}: the engine died")


def test_an_arms_errors_name_the_arm_and_count_under_it(monkeypatch, auth):
    app = gateway_app(variant_config(), monkeypatch, {"default_b": FailingHandle("default_b")})
    with TestClient(app, raise_server_exceptions=False) as c:
        bad = chat(c, auth, headers={VARIANT_HEADER: "b"})
        assert bad.status_code >= 500 and bad.headers[VARIANT_HEADER] == "b", bad.text
        good = chat(c, auth, headers={VARIANT_HEADER: "a"})
        assert good.status_code == 200
        body = c.get("/metrics", headers=auth).text
        counted = {
            (s.labels["variant"], s.labels["status"])
            for family in text_string_to_metric_families(body)
            for s in family.samples
            if s.name == "raygent_request_duration_seconds_count" and s.value
        }
        assert counted == {("b", str(bad.status_code)), ("a", "200")}


def test_a_rollout_leaves_shadow_arms_out_of_the_weights(monkeypatch, auth):
    app = gateway_app(shadow_config(), monkeypatch)
    api = TestClient(app, headers=auth)

    def traffic(_: float) -> None:
        for u in range(10):
            assert chat(api, {}, model="shadowed", user=f"s{u}", stream=True).status_code == 200

    admin = TestClient(app, headers=ADMIN)
    lines: list[str] = []
    rollout = Rollout(admin, api, "shadowed", "live", Guard(min_requests=5), traffic, lines.append)
    # at 50% the rest would go to the other arms: the only other is a shadow, which gets none
    assert rollout.run([50, 100], hold_s=0) is True
    entry = next(e for e in admin.get("/admin/variants").json()["data"] if e["name"] == "shadowed")
    assert entry["arms"]["next"]["weight"] == 0 and entry["arms"]["live"]["weight"] == 100
