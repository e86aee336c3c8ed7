"""Malformed requests, a few hundred of them, seeded: none may get a 5xx, every error must be
OpenAI's body, and every success the spec's shape.

What this covers: the gateway's real app (routes, edge, strict JSON parser, validation, error
handlers, the completion path with its cache, the agent and task routes with the real cluster
client and task queue) with a scripted model and echoing agents (see ``conftest.py``). So it
finds every way a request can break the gateway *before and after* the engine or an agent; what
vLLM itself does with a value that passes validation is covered by the serve integration tests
(``tests/integration/serve/test_openai_spec.py``), against the real app.

Bodies start from a valid request per route and are then broken: a value replaced by an odd one
(wrong type, huge, empty, nested), a key removed or added (OpenAI fields this server refuses),
or the text itself mangled (non-finite numbers, repeated keys, cut short, bytes that are not
UTF-8, lone surrogates, another top-level type). ``FUZZ_SEED`` picks another sequence.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any

import pytest

SEED = int(os.environ.get("FUZZ_SEED", "13"))
CASES = 400

VALID: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {
            "model": "default",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            "max_tokens": 4,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["\n"],
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": "default",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 2,
            "seed": 7,
        },
    ),
    ("/v1/completions", {"model": "default", "prompt": "Once", "max_tokens": 3, "top_k": 5}),
    ("/v1/completions", {"model": "default", "prompt": ["Once"], "stream": True}),
    ("/v1/agents/researcher/invoke", {"message": {"topic": "rings", "max_tokens": 8}}),
    (
        "/v1/agents/assistant/invoke",
        {"message": {"messages": [{"role": "user", "content": "Hi"}]}, "timeout_s": 5},
    ),
    (
        "/v1/tasks/archive",
        {"task": {"report": {"topic": "t", "draft": "d", "review": "r"}}, "type": None},
    ),
]

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    10**30,
    -0.0,
    1e308,
    2.5,
    "",
    "x" * 2000,
    "\u0000",
    "\U0001f600",
    "NaN",
    [],
    [None],
    [[[[]]]],
    {},
    {"a": {"b": {"c": 1}}},
    {"type": "text"},
    "agent:nobody",
    "agent:assistant",
]

EXTRA_FIELDS: list[tuple[str, Any]] = [
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("logprobs", True),
    ("top_logprobs", 3),
    ("response_format", {"type": "json_object"}),
    ("n", 5),
    ("n", 2),
    ("temperature", 0),
    ("max_tokens", 0),
    ("max_completion_tokens", 10**9),
    ("top_k", 0),
    ("seed", -5),
    ("stop", ["", "x"]),
    ("stream", True),
    ("stream_options", {"include_usage": "yes"}),
    ("ignore_eos", 1),
    ("model", "agent:researcher"),
    ("unknown_field", {"nested": [1, 2]}),
    ("type", "NotAType"),
    ("timeout_s", 0),
]

TEXT_MANGLES = [
    "non_finite",
    "duplicate",
    "truncate",
    "bad_bytes",
    "surrogate",
    "other_top_level",
    "deep",
    "bom",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _delete(doc: Any, path: tuple[Any, ...]) -> None:
    for part in path[:-1]:
        doc = doc[part]
    del doc[path[-1]]


_SCALAR = re.compile(r'(?<=: )(-?\d[\d.eE+-]*|"[^"\\]*"|true|false|null)')


def _mangle_text(rng: random.Random, text: str, how: str) -> bytes:
    if how == "non_finite":  # a scalar (or, without one, a new key) becomes NaN, Infinity...
        literal = rng.choice(["NaN", "Infinity", "-Infinity", "1E400", "-2e999"])
        spots = list(_SCALAR.finditer(text))
        if not spots:
            return ('{"x": ' + literal + ", " + text[1:]).encode()
        m = rng.choice(spots)
        return (text[: m.start()] + literal + text[m.end() :]).encode()
    if how == "duplicate":
        key = rng.choice(['"temperature": 1, ', '"model": "x", ', '"message": 1, ', '"a": 1, '])
        return ("{" + key + key + text[1:]).encode()
    if how == "truncate":
        return text[: rng.randrange(len(text))].encode()
    if how == "bad_bytes":
        data = bytearray(text.encode())
        data.insert(rng.randrange(len(data)), rng.choice([0xFF, 0xC3, 0x80, 0xED]))
        return bytes(data)
    if how == "surrogate":  # inside a string: after a quote
        quotes = [i for i, c in enumerate(text) if c == '"']
        at = rng.choice(quotes) + 1
        return (text[:at] + rng.choice(["\\ud800", "\\udfff", "\\ud83d"]) + text[at:]).encode()
    if how == "other_top_level":
        return rng.choice([b"null", b"[]", b"1", b'"text"', b"[" + text.encode() + b"]", b""])
    if how == "deep":
        depth = rng.choice([50, 900, 5000])
        return b'{"model": ' + b"[" * depth + b"]" * depth + b"}"
    return b"\xef\xbb\xbf" + text.encode()  # a UTF-8 byte order mark


def _cases(rng: random.Random) -> list[tuple[str, bytes, dict[str, str]]]:
    cases = []
    for _ in range(CASES):
        path, valid = rng.choice(VALID)
        doc = json.loads(json.dumps(valid))
        headers = {"content-type": "application/json"}
        how = rng.random()
        if how < 0.35:
            _set(doc, rng.choice(_paths(doc)), rng.choice(ODD_VALUES))
            body = json.dumps(doc).encode()
        elif how < 0.45:
            _delete(doc, rng.choice(_paths(doc)))
            body = json.dumps(doc).encode()
        elif how < 0.6:
            for key, value in rng.sample(EXTRA_FIELDS, rng.randint(1, 3)):
                doc[key] = value
            body = json.dumps(doc).encode()
        else:
            body = _mangle_text(rng, json.dumps(doc), rng.choice(TEXT_MANGLES))
        if rng.random() < 0.05:
            headers = rng.choice([{}, {"content-type": "text/plain"}, {"content-type": "a/b"}])
        cases.append((path, body, headers))
    return cases


def _check_success(openai_spec, path: str, r) -> None:
    if not path.startswith(("/v1/chat", "/v1/completions")):
        return  # agents and tasks answer in raygent's own shape, not OpenAI's
    chat = path.startswith("/v1/chat")
    if r.headers["content-type"].startswith("text/event-stream"):
        for event in [e for e in r.text.split("\n\n") if e.strip()]:
            assert event.startswith("data: "), event
            if event == "data: [DONE]":
                continue
            data = json.loads(event[len("data: ") :])
            if "error" in data:
                openai_spec.check("ErrorResponse", data)
            else:
                chunk = "CreateChatCompletionStreamResponse" if chat else openai_spec.TEXT_CHUNK
                openai_spec.check(chunk, data)
    else:
        name = "CreateChatCompletionResponse" if chat else "CreateCompletionResponse"
        openai_spec.check(name, r.json())


def test_fuzzed_bodies_never_5xx(client, auth, openai_spec):
    rng = random.Random(SEED)
    statuses: dict[int, int] = {}
    for path, body, headers in _cases(rng):
        r = client.post(path, content=body, headers={**headers, **auth})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        where = f"POST {path} {body[:300]!r} -> {r.status_code} {r.text[:300]}"
        assert r.status_code < 500, where
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/json"), where
            problems = openai_spec.errors("ErrorResponse", r.json())
            assert not problems, f"{where}: {problems}"
        else:
            _check_success(openai_spec, path, r)
    # the mix is a real one: mostly refused, some accepted, several kinds of refusal
    assert sum(n for s, n in statuses.items() if s >= 400) > CASES // 2, statuses
    assert len(statuses) >= 4, statuses


@pytest.mark.parametrize(
    "query",
    ["wait_s=nan", "wait_s=inf", "wait_s=-inf", "wait_s=1e400", "wait_s=", "wait_s=%FF",
     "wait_s=0x10", "wait_s=%EF%BC%91", "wait_s=1&wait_s=2", "wait_s=0.01"],
)  # fmt: skip
def test_task_queries_never_5xx(client, auth, openai_spec, query):
    r = client.get(f"/v1/tasks/some-id?{query}", headers=auth)
    assert 400 <= r.status_code < 500, r.text
    openai_spec.check("ErrorResponse", r.json())


@pytest.mark.parametrize(
    "path",
    ["/v1/tasks/%00", "/v1/tasks/%FF%FE", "/v1/agents/%FF/invoke", "/v1/agents/../invoke",
     "/v1/models/default", "/v1//chat/completions", "/" + "a" * 5000],
)  # fmt: skip
def test_odd_paths_never_5xx(client, auth, openai_spec, path):
    for method in ("GET", "POST"):
        r = client.request(method, path, content=b'{"message": 1, "task": 1}', headers=auth)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        openai_spec.check("ErrorResponse", r.json())
