"""Every error of the gateway's app is OpenAI's body, with the status of its kind, whoever
raises it: the edge (401, 413), the strict JSON parser, FastAPI's validation, Starlette's routing
(404, 405), a route, or a bug (500). Bodies are checked against the official spec's
``ErrorResponse`` (``tests/data/openai/schemas.json``)."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from agents.errors import InvalidParameter
from runtime.config import LimitsConfig
from runtime.gateway.errors import ApiError, render_error
from runtime.gateway.json_body import loads
from runtime.gateway.openai_format import error_event
from runtime.models import check_params

from .conftest import MAX_BODY_BYTES

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
TURNS = '[{"role": "user", "content": "Hi"}]'


def _chat(extra: str) -> str:
    """A chat body with ``extra`` (JSON members, as text) after its messages."""
    return f'{{"model": "default", "messages": {TURNS}, {extra}}}'


def _turn(extra: str) -> str:
    """A chat body whose one user turn has ``extra`` (JSON members, as text)."""
    return f'{{"model": "default", "messages": [{{"role": "user", {extra}}}]}}'


def openai_error(openai_spec, r, status: int, param: str | None = None, code: str | None = None):
    """Check that ``r`` is OpenAI's error body with ``status`` (and ``param``/``code``)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    openai_spec.check("ErrorResponse", body)
    if param is not None:
        assert body["error"]["param"] == param, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def post(client: TestClient, path: str, raw: bytes | str, auth: dict[str, str], **headers: str):
    data = raw.encode() if isinstance(raw, str) else raw
    return client.post(
        path, content=data, headers={"content-type": "application/json", **auth, **headers}
    )


# -- before a route runs: routing, the edge --------------------------------------------------------


def test_unknown_route_is_404(client, auth, openai_spec):
    err = openai_error(openai_spec, client.get("/v1/nowhere", headers=auth), 404)
    assert err["code"] == "unknown_url" and "GET /v1/nowhere" in err["message"]
    openai_error(openai_spec, post(client, "/v2/chat/completions", "{}", auth), 404)


def test_wrong_method_is_405_with_allow(client, auth, openai_spec):
    r = client.get(CHAT, headers=auth)
    err = openai_error(openai_spec, r, 405, code="method_not_allowed")
    assert r.headers["allow"] == "POST" and "POST" in err["message"]
    openai_error(openai_spec, client.delete("/v1/models", headers=auth), 405)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
def test_missing_or_wrong_key_is_401(client, openai_spec, headers):
    r = client.post(CHAT, content=b"{}", headers=headers)
    err = openai_error(openai_spec, r, 401, code="invalid_api_key")
    assert err["type"] == "authentication_error" and r.headers["www-authenticate"] == "Bearer"


def test_unknown_route_without_key_is_401_not_404(client, openai_spec):
    """Auth comes first: an unauthenticated caller learns nothing about the routes."""
    openai_error(openai_spec, client.get("/v1/nowhere"), 401)


def test_body_over_the_limit_is_413(client, auth, openai_spec):
    big = "x" * (MAX_BODY_BYTES + 1)
    body = f'{{"model": "default", "messages": [{{"role": "user", "content": "{big}"}}]}}'
    openai_error(openai_spec, post(client, CHAT, body, auth), 413, code="body_too_large")


def test_chunked_body_over_the_limit_is_413(client, auth, openai_spec):
    def chunks():
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    r = client.post(CHAT, content=chunks(), headers={"content-type": "application/json", **auth})
    openai_error(openai_spec, r, 413)


# -- the body's parser -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{}", b'{"model": "\xc3", "messages": []}', "{\u00e9}".encode("latin-1")],
    ids=["bom16", "in-a-string", "latin-1"],
)
def test_body_not_utf8_is_400(client, auth, openai_spec, raw):
    err = openai_error(openai_spec, post(client, CHAT, raw, auth), 400, code="bad_json")
    assert "UTF-8" in err["message"]


@pytest.mark.parametrize("raw", ["{", '{"model": }', "{'model': 'default'}", "[1,]", "\ufeff{}"])
def test_body_not_json_is_400(client, auth, openai_spec, raw):
    openai_error(openai_spec, post(client, CHAT, raw, auth), 400, code="bad_json")


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1E400", "-1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "max_tokens", "presence_penalty"])
def test_non_finite_number_is_400_naming_the_field(client, auth, openai_spec, number, field):
    body = f'{{"model": "default", "messages": {TURNS}, "{field}": {number}}}'
    err = openai_error(
        openai_spec, post(client, CHAT, body, auth), 400, param=field, code="non_finite_number"
    )
    assert "finite" in err["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (TEXT, '{"model": "default", "prompt": "x", "temperature": 1E400}', "temperature"),
        (CHAT, '{"model": "default", "messages": [{"role": "user", "x": [1, NaN]}]}', None),
        ("/v1/agents/researcher/invoke", '{"message": {"topic": "t", "n": Infinity}}', None),
        ("/v1/tasks/archive", '{"task": {"report": {"x": -Infinity}}}', "task.report.x"),
    ],
)
def test_non_finite_number_on_every_route(client, auth, openai_spec, path, body, param):
    err = openai_error(openai_spec, post(client, path, body, auth), 400, code="non_finite_number")
    assert err["param"] == (param or err["param"]) and err["param"]


def test_non_finite_nested_names_the_path(client, auth, openai_spec):
    body = '{"model": "default", "messages": [{"role": "user", "content": "a", "w": NaN}]}'
    openai_error(openai_spec, post(client, CHAT, body, auth), 400, param="messages.0.w")


def test_huge_integer_where_a_float_goes_is_400(client, auth, openai_spec):
    """Not non-finite JSON, but no double either: pydantic's finite check names it."""
    body = f'{{"model": "default", "messages": {TURNS}, "temperature": 1{"0" * 400}}}'
    openai_error(openai_spec, post(client, CHAT, body, auth), 400, param="temperature")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_chat('"temperature": 0, "temperature": 2'), "temperature"),
        (_chat('"temperature": 1, "temperature": 1'), "temperature"),
        (_turn('"role": "system", "content": "x"'), "messages.0.role"),
        (f'{{"model": "a", "model": "default", "messages": {TURNS}}}', "model"),
    ],
)  # fmt: skip
def test_repeated_key_is_400_naming_it(client, auth, openai_spec, body, param):
    err = openai_error(
        openai_spec, post(client, CHAT, body, auth), 400, param=param, code="duplicate_key"
    )
    assert "more than once" in err["message"]


def test_lone_surrogate_is_400(client, auth, openai_spec):
    body = '{"model": "default", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    openai_error(
        openai_spec, post(client, CHAT, body, auth), 400, "messages.0.content", "invalid_string"
    )
    # a whole pair is text (an emoji)
    pair = '{"model": "default", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    assert post(client, CHAT, pair, auth).status_code == 200


def test_lone_surrogate_quoted_in_an_error_is_rendered(client, auth, openai_spec):
    """Even if one reaches an error message, the renderer escapes it (ASCII output)."""
    err = ApiError(404, "unknown model '\ud800'", param="model")
    assert json.loads(err.render())["error"]["message"] == "unknown model '\ud800'"


# -- FastAPI's validation and the routes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"model": "default", "messages": "hi"}', "messages"),
        (_turn('"content": 5'), "messages.0.content"),
        (_turn('"content": [{"type": "text"}]'), "messages.0.content"),
        ('{"model": "default", "messages": [{"role": "robot"}]}', "messages.0.role"),
        (f'{{"model": 7, "messages": {TURNS}}}', "model"),
        (_chat('"max_tokens": 2.5'), "max_tokens"),
        (_chat('"stream": "maybe"'), "stream"),
        (_chat('"stop": [1]'), "stop"),
        (_chat('"seed": 99999999999999999999'), "seed"),
        (_chat('"temperature": -1'), "temperature"),
        (_chat('"max_tokens": 100000'), "max_tokens"),
        (_chat('"tools": [{"type": "function"}]'), "tools"),
        ('{"messages": []}', "model"),
    ],
)  # fmt: skip
def test_wrong_type_or_value_is_400_naming_the_field(client, auth, openai_spec, body, param):
    """(Pydantic's lax mode stays: ``"8"`` for an int and ``"yes"`` for a bool are taken.)"""
    r = post(client, CHAT, body, auth)
    err = openai_error(openai_spec, r, 400)
    assert err["param"] == param or err["param"].startswith((param + ".", param + "[")), err


@pytest.mark.parametrize("raw", ["", "null", "[]", '"model"', "42"])
def test_body_that_is_not_an_object_is_400(client, auth, openai_spec, raw):
    err = openai_error(openai_spec, post(client, CHAT, raw, auth), 400)
    assert err["param"] is None


def test_body_of_another_content_type_is_400(client, auth, openai_spec):
    r = client.post(CHAT, content=b"hello", headers={"content-type": "text/plain", **auth})
    openai_error(openai_spec, r, 400)


def test_unknown_model_is_404(client, auth, openai_spec):
    body = f'{{"model": "nope", "messages": {TURNS}}}'
    openai_error(openai_spec, post(client, CHAT, body, auth), 404, param="model")
    body = '{"model": "agent:nope", "prompt": "x"}'
    openai_error(openai_spec, post(client, TEXT, body, auth), 404, param="model")


def test_agent_route_errors(client, auth, openai_spec):
    invoke = "/v1/agents/researcher/invoke"
    openai_error(openai_spec, post(client, "/v1/agents/nobody/invoke", '{"message": 1}', auth), 404)
    openai_error(openai_spec, post(client, invoke, "{}", auth), 400, param="message")
    openai_error(openai_spec, post(client, invoke, '{"message": {}, "x": 1}', auth), 400, "x")
    openai_error(openai_spec, post(client, invoke, '{"message": {}, "timeout_s": -1}', auth), 400)
    openai_error(openai_spec, post(client, invoke, '{"message": 5}', auth), 422, param="message")
    openai_error(
        openai_spec,
        post(client, invoke, '{"message": {"topic": "t", "nope": 1}}', auth),
        422,
        param="message.nope",
    )
    openai_error(
        openai_spec, post(client, invoke, '{"message": {"topic": 1}}', auth), 422, "message.topic"
    )
    openai_error(
        openai_spec, post(client, invoke, '{"message": {}, "type": "Other"}', auth), 422, "type"
    )
    openai_error(openai_spec, post(client, invoke, b'{"message": "\xff"}', auth), 400)


def test_task_route_errors(client, auth, openai_spec):
    openai_error(openai_spec, post(client, "/v1/tasks/nowhere", '{"task": {}}', auth), 404)
    openai_error(openai_spec, post(client, "/v1/tasks/archive", '{"task": 1}', auth), 422)
    r = post(client, "/v1/tasks/archive", '{"task": {"nope": 1}}', auth)
    openai_error(openai_spec, r, 422, param="task.nope")
    r = post(client, "/v1/tasks/archive", '{"task": {"report": {"topic": 1}}}', auth)
    openai_error(openai_spec, r, 422, param="task.report.topic")
    openai_error(openai_spec, post(client, "/v1/tasks/archive", "{}", auth), 400, "task")
    openai_error(openai_spec, post(client, "/v1/tasks/archive", "[]", auth), 400)
    openai_error(openai_spec, client.get("/v1/tasks/unknown", headers=auth), 404)
    for wait in ("nan", "inf", "-1", "1e400", "abc", "9999"):
        r = client.get(f"/v1/tasks/unknown?wait_s={wait}", headers=auth)
        openai_error(openai_spec, r, 400, param="wait_s")


# -- the last resort and the renderer --------------------------------------------------------------


def test_a_bug_is_a_500_in_openai_schema(client, auth, openai_spec, caplog):
    @client.app.get("/unit/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    err = openai_error(openai_spec, client.get("/unit/boom", headers=auth), 500)
    assert err["code"] == "internal_error" and "secret" not in err["message"]
    assert "RuntimeError" in caplog.text


def test_an_http_exception_of_a_route_is_in_openai_schema(client, auth, openai_spec):
    from fastapi import HTTPException

    @client.app.get("/unit/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout", headers={"X-Kind": "teapot"})

    r = client.get("/unit/teapot", headers=auth)
    err = openai_error(openai_spec, r, 418)
    assert err["message"] == "short and stout" and r.headers["x-kind"] == "teapot"


def test_renderer_survives_values_json_cannot_carry(openai_spec):
    body = {"error": {"message": "m", "type": "t", "param": math.inf, "code": math.nan}}
    openai_spec.check("ErrorResponse", json.loads(render_error(body)))
    err = ApiError(400, float("inf"), param=float("nan"), code=1)  # type: ignore[arg-type]
    openai_spec.check("ErrorResponse", json.loads(err.render()))
    event = error_event({"error": {"message": -math.inf, "type": "t", "param": None, "code": None}})
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
    openai_spec.check("ErrorResponse", json.loads(event[len(b"data: ") :]))


def test_parser_accepts_plain_json():
    assert loads(b'{"a": [1, 2.5, -0.0, 1e308, "\\u00e9"], "b": {"c": null}}') == {
        "a": [1, 2.5, -0.0, 1e308, "\u00e9"],
        "b": {"c": None},
    }


def test_parser_survives_deep_nesting():
    with pytest.raises(ApiError) as info:
        loads(b"[" * 100_000 + b"]" * 100_000)
    assert info.value.status == 400
    with pytest.raises(ApiError) as info:
        loads(b"[" * 500 + b"NaN" + b"]" * 500)
    assert info.value.code == "non_finite_number"


@pytest.mark.parametrize("value", [math.inf, 10**400])
def test_sampling_params_refuse_non_finite(value):
    """The SDK's own check, which every model server runs: +inf passed ``>= 0`` before."""
    with pytest.raises(InvalidParameter) as info:
        check_params({"temperature": value}, LimitsConfig())
    assert info.value.field == "temperature"
