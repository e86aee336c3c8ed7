"""Agent endpoints, durable tasks, backpressure and trace context through the gateway, with
agents running as Serve deployments."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid

import httpx
import pytest

from .conftest import APP

pytestmark = pytest.mark.integration


def invoke(url, agent, body, headers, timeout=30):
    return httpx.post(
        f"{url}/v1/agents/{agent}/invoke", json=body, headers=headers, timeout=timeout
    )


def test_agents_are_listed(gateway_url, auth):
    data = httpx.get(f"{gateway_url}/v1/agents", headers=auth).json()["data"]
    by_name = {a["name"]: a for a in data}
    assert "ChatRequest" in by_name["assistant"]["accepts"]
    assert by_name["assistant"]["streams"] == ["ChatRequest"]
    assert by_name["echo"]["streams"] == ["Count"]
    assert by_name["worker"]["queues"] == ["jobs"]


def test_invoke_round_trip_and_bad_messages(gateway_url, auth):
    r = invoke(gateway_url, "echo", {"message": {"n": 41}, "type": "Ping"}, auth)
    assert r.status_code == 200, r.text
    assert r.json()["reply"]["n"] == 41 and r.json()["type"] == "dict"
    r = invoke(gateway_url, "nobody", {"message": {}}, auth)
    assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
    r = invoke(gateway_url, "echo", {"message": {"n": 1}}, auth)  # echo takes several types
    assert r.status_code == 422 and r.json()["error"]["param"] == "type"
    r = invoke(gateway_url, "echo", {"message": {"m": 1}, "type": "Ping"}, auth)
    assert r.status_code == 422 and r.json()["error"]["param"] == "message.m"
    r = invoke(gateway_url, "echo", {"message": {"n": "x"}, "type": "Ping"}, auth)
    assert r.status_code == 422 and r.json()["error"]["param"] == "message.n"
    r = invoke(gateway_url, "echo", {"message": "boom"}, auth | {"x": "y"})
    assert r.status_code == 422  # str is one of several types: must be named
    r = invoke(gateway_url, "echo", {"message": "boom", "type": "str"}, auth)
    assert r.status_code == 502 and "ValueError" in r.json()["error"]["message"]
    # the replica keeps serving after a handler raised
    assert (
        invoke(gateway_url, "echo", {"message": {"n": 2}, "type": "Ping"}, auth).json()["reply"][
            "n"
        ]
        == 2
    )


def sse_events(r: httpx.Response) -> list:
    """The JSON events of an SSE body, up to ``[DONE]`` (which must end it)."""
    datas = [line[len("data: ") :] for line in r.text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]", r.text
    return [json.loads(d) for d in datas[:-1]]


def test_invoke_streams_a_streaming_handler_as_sse(gateway_url, auth):
    body = {"message": {"n": 4, "pause_s": 0.05}, "type": "Count"}
    with httpx.stream(
        "POST", f"{gateway_url}/v1/agents/echo/invoke", json=body, headers=auth, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        pieces = [chunk for chunk in r.iter_text() if chunk.strip()]
    events = sse_events(httpx.Response(200, text="".join(pieces)))
    assert events == [{"type": "int", "item": i} for i in range(4)]
    assert len(pieces) > 1  # items left as they were yielded, not as one body at the end
    # stream: false gets the whole list as JSON; a plain handler can be asked to stream
    r = invoke(gateway_url, "echo", body | {"stream": False}, auth)
    assert r.json()["reply"] == [0, 1, 2, 3]
    r = invoke(gateway_url, "echo", {"message": {"n": 5}, "type": "Ping", "stream": True}, auth)
    assert sse_events(r)[0]["item"]["n"] == 5


def test_invoke_stream_errors(gateway_url, auth):
    # before the first item: an HTTP error; after it: an error event, then [DONE]
    r = invoke(gateway_url, "echo", {"message": {"n": 3, "fail_at": 0}, "type": "Count"}, auth)
    assert r.status_code == 502 and "count failed at 0" in r.json()["error"]["message"]
    r = invoke(gateway_url, "echo", {"message": {"n": 3, "fail_at": 2}, "type": "Count"}, auth)
    assert r.status_code == 200
    *items, error = sse_events(r)
    assert [e["item"] for e in items] == [0, 1]
    assert "count failed at 2" in error["error"]["message"]
    r = invoke(gateway_url, "echo", {"message": {"n": 2}, "type": "Count"}, auth)
    assert [e["item"] for e in sse_events(r)] == [0, 1]  # still serving


def test_a_co_located_agent_is_called_through_its_socket_or_else_through_serve(gateway_url, auth):
    """On one node the gateway calls an agent through the replica's Unix socket; when nothing
    answers there (the socket moved away here, as a stopping replica's goes), the same calls
    take Serve's handle, and nothing changes for the client."""
    from ray import serve

    handle = serve.get_deployment_handle("Agent-echo", app_name=APP)

    def socket_calls() -> int:
        return handle.stats.remote().result()["paths"].get("call:socket", 0)

    path = handle.stats.remote().result()["socket"]
    assert path and os.path.exists(path)
    before = socket_calls()
    assert (
        invoke(gateway_url, "echo", {"message": {"n": 3}, "type": "Ping"}, auth).status_code == 200
    )
    assert socket_calls() == before + 1
    away = path + ".away"
    os.rename(path, away)
    try:
        r = invoke(gateway_url, "echo", {"message": {"n": 4}, "type": "Ping"}, auth)
        assert r.status_code == 200 and r.json()["reply"]["n"] == 4
        r = invoke(gateway_url, "echo", {"message": {"n": 2}, "type": "Count"}, auth)
        assert [e["item"] for e in sse_events(r)] == [0, 1]
        r = invoke(gateway_url, "echo", {"message": "boom", "type": "str"}, auth)
        assert r.status_code == 502 and "ValueError" in r.json()["error"]["message"]
        assert socket_calls() == before + 1
    finally:
        os.rename(away, path)
    assert (
        invoke(gateway_url, "echo", {"message": {"n": 5}, "type": "Ping"}, auth).status_code == 200
    )
    assert socket_calls() == before + 2


def test_durable_task_submit_and_result(gateway_url, auth):
    r = httpx.post(f"{gateway_url}/v1/tasks/jobs", json={"task": {"n": 21}}, headers=auth)
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    done = httpx.get(f"{gateway_url}/v1/tasks/{task_id}?wait_s=20", headers=auth, timeout=30)
    assert done.status_code == 200
    assert done.json()["state"] == "done" and done.json()["result"] == 42
    assert (
        httpx.post(f"{gateway_url}/v1/tasks/nope", json={"task": {}}, headers=auth).status_code
        == 404
    )
    assert httpx.get(f"{gateway_url}/v1/tasks/no-such-task", headers=auth).status_code == 404
    r = httpx.post(f"{gateway_url}/v1/tasks/jobs", json={"task": {"n": "x"}}, headers=auth)
    assert r.status_code == 422


async def test_backpressure_is_a_429_and_timeouts_a_504(gateway_url, auth):
    """echo has a mailbox of 2 and one worker: holds pile up, the excess is refused with
    Retry-After, and the held ones end at their timeout (their handlers cancelled).

    The calls arrive 150 ms apart. Serve's router checks ``max_queued_requests`` before it
    counts a request as queued, with an await between (Ray 2.60, ``Router.assign_request``),
    so calls that reach the gateway in the same instant all pass the check and wait for the
    replica instead of being refused: two CI runs saw eight 504s and no 429 that way. The
    holds' timeout is long enough that the last call arrives well before the first ends."""
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()

    async def hold(c: httpx.AsyncClient, i: int) -> tuple[httpx.Response, float]:
        await asyncio.sleep(0.15 * i)
        r = await c.post(
            f"{gateway_url}/v1/agents/echo/invoke",
            json={"message": {"tag": f"{tag}-{i}"}, "type": "Hold", "timeout_s": 8},
            headers=auth,
        )
        return r, round(time.monotonic() - started, 2)

    async with httpx.AsyncClient(timeout=30) as c:
        timed = await asyncio.gather(*(hold(c, i) for i in range(8)))
    rs = [r for r, _ in timed]
    codes = sorted(r.status_code for r in rs)
    assert 429 in codes and 504 in codes and set(codes) <= {429, 504}, sorted(
        (r.status_code, t) for r, t in timed
    )
    limited = next(r for r in rs if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"
    # The agent serves again once the held calls were cancelled. A 504's cancel reaches the
    # replica asynchronously, so a client that retries immediately may still find the mailbox
    # full: it gets a 429 and honours its Retry-After, as any client should. Handlers that were
    # never cancelled would hold the mailbox forever and every retry would be refused.
    for _ in range(5):
        r = invoke(gateway_url, "echo", {"message": {"n": 5}, "type": "Ping"}, auth)
        if r.status_code != 429:
            break
        await asyncio.sleep(int(r.headers["retry-after"]))
    assert r.status_code == 200, r.text


def test_trace_context_reaches_the_agent_and_the_model(gateway_url, auth):
    from ray import serve

    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    r = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={
            "model": "agent:assistant",
            "messages": [{"role": "user", "content": f"trace {trace_id}"}],
            "max_tokens": 2,
            "temperature": 0.5,
        },
        headers={**auth, "traceparent": traceparent},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    stats = serve.get_deployment_handle("Agent-assistant", app_name=APP).stats.remote().result()
    spans = [s for s in stats["spans"] if s["trace_id"] == trace_id]
    assert [s["name"] for s in spans] == ["assistant.chat"]
    assert spans[0]["parent_span_id"] is not None


def test_publish_and_state_between_served_agents(gateway_url, auth):
    """echo.relay publishes on ``notes`` (the listener subscribes) and sends to the listener;
    on one node the topic message takes the shm ring, and the listener's state write reaches
    every replica, the gateway's included."""
    from ray import serve

    text = f"note-{uuid.uuid4().hex[:6]}"
    r = invoke(gateway_url, "echo", {"message": {"text": text}, "type": "Note"}, auth)
    assert r.status_code == 200 and r.json()["reply"] == len(text) * 10
    seen = {}
    for _ in range(100):
        r = invoke(gateway_url, "listener", {"message": "?", "type": "str"}, auth)
        seen = r.json()["reply"]["state"]
        if seen.get(f"heard:{text}"):
            break
        time.sleep(0.1)
    assert seen.get(f"heard:{text}") == 1  # exactly once
    stats = serve.get_deployment_handle("Agent-listener", app_name=APP).stats.remote().result()
    assert stats["paths"].get("topic:ring", 0) >= 1


def test_a_killed_replica_is_replaced_and_serves_again(gateway_url, auth):
    """Serve notices the dead replica and starts another (``on_start`` runs again); callers
    meanwhile get a retryable 503/429, never a hang."""
    from ray import serve

    handle = serve.get_deployment_handle("Agent-worker", app_name=APP)
    old = handle.stats.remote().result()
    os.kill(old["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 90
    codes = []
    while time.monotonic() < deadline:
        r = httpx.post(
            f"{gateway_url}/v1/tasks/jobs", json={"task": {"n": 1}}, headers=auth, timeout=30
        )
        codes.append(r.status_code)
        try:
            new = handle.stats.remote().result(timeout_s=5)
        except Exception:  # noqa: BLE001 - the replacement is still starting
            time.sleep(0.5)
            continue
        if new["pid"] != old["pid"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no replacement replica; submit answered {codes}")
    assert set(codes) <= {202, 429, 503}
    r = httpx.post(f"{gateway_url}/v1/tasks/jobs", json={"task": {"n": 4}}, headers=auth)
    done = httpx.get(
        f"{gateway_url}/v1/tasks/{r.json()['id']}?wait_s=30", headers=auth, timeout=40
    ).json()
    assert done["state"] == "done" and done["result"] == 8


def test_a_killed_registry_replica_comes_back_with_the_shared_state(gateway_url, auth):
    """Killing the Registry replica (membership and state feeds) stops no agent: invokes answer
    200 throughout, Serve starts a new Registry, the replicas hand it their copies, so the
    state written before the kill is in the new one, and a write after it reaches every
    replica again."""
    import ray
    from ray import serve

    text = f"pre-kill-{uuid.uuid4().hex[:6]}"
    r = invoke(gateway_url, "echo", {"message": {"text": text}, "type": "Note"}, auth)
    assert r.status_code == 200
    registry = serve.get_deployment_handle("Registry", app_name=APP)

    def registry_state() -> tuple[str, set[str]]:
        epoch, _, changes = registry.state_since.remote(0, 0.0, "").result(timeout_s=10)
        return epoch, {u.key for u in changes}

    deadline = time.monotonic() + 30
    while f"heard:{text}" not in (before := registry_state())[1]:
        assert time.monotonic() < deadline, "the listener's write never reached the registry"
        time.sleep(0.1)
    (name,) = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#Registry#")
    ]
    codes: list[int] = []
    stop = threading.Event()

    def load() -> None:  # back to back through the kill; two fit echo's mailbox (2, one running)
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                r = http.post(
                    f"{gateway_url}/v1/agents/echo/invoke",
                    json={"message": {"n": 7}, "type": "Ping"},
                    headers=auth,
                )
                codes.append(r.status_code)

    callers = [threading.Thread(target=load) for _ in range(2)]
    for t in callers:
        t.start()
    try:
        time.sleep(0.5)
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)  # Serve replaces it
        deadline = time.monotonic() + 90
        while True:
            try:
                epoch, keys = registry_state()
            except Exception:  # noqa: BLE001 - the new Registry replica is still starting
                epoch, keys = before[0], set()
            if epoch != before[0] and f"heard:{text}" in keys:
                break
            assert time.monotonic() < deadline, f"no rebuilt registry; invokes answered {codes}"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in callers:
            t.join()
    assert len(codes) > 20 and set(codes) == {200}

    after = f"post-kill-{uuid.uuid4().hex[:6]}"
    r = invoke(gateway_url, "echo", {"message": {"text": after}, "type": "Note"}, auth)
    assert r.status_code == 200
    deadline = time.monotonic() + 30
    while f"heard:{after}" not in registry_state()[1]:
        assert time.monotonic() < deadline, "a write after the restart never reached the registry"
        time.sleep(0.1)
