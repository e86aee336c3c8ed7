"""Tools and structured output at the gateway: what the routes accept and refuse (400 naming the
field), how answers with tool calls render (checked against OpenAI's schemas, whole and
streamed, live and replayed from the cache), and that everything that changes the answer is in
the cache key."""

from __future__ import annotations

import json

import pytest

from agents.model import ModelReply, SamplingParams, ToolCall, Usage
from runtime.cache import cache_key
from runtime.gateway.agent_streams import ChatFold
from runtime.gateway.calls import Accumulator
from runtime.gateway.openai_format import Completed, StreamFormat, render
from runtime.gateway.schema import ChatCompletionRequest
from runtime.models import ModelDelta, ToolCallDelta

from .test_gateway_errors import CHAT, TEXT, TURNS, openai_error, post

CHUNK = "CreateChatCompletionStreamResponse"
TOOL = {
    "type": "function",
    "function": {
        "name": "set_light",
        "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}},
    },
}
CALL = {"id": "call-1", "type": "function", "function": {"name": "set_light", "arguments": "{}"}}
LOOP = [
    {"role": "user", "content": "Lights on"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call-1", "content": "done"},
]


def _body(**extra) -> str:
    return json.dumps({"model": "default", "messages": json.loads(TURNS), **extra})


# -- what the routes take ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [TOOL]},
        {"tools": [TOOL], "tool_choice": "required"},
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "set_light"}}},
        {"tools": [TOOL], "tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
        {"structured_outputs": {"choice": ["a", "b"]}},
        {"messages": LOOP, "tools": [TOOL]},
    ],
)
def test_tools_and_formats_are_accepted(client, auth, extra):
    r = post(client, CHAT, _body(**extra), auth)
    assert r.status_code == 200, r.text


def test_structured_outputs_on_text_completions(client, auth):
    body = json.dumps({"model": "default", "prompt": "x", "structured_outputs": {"regex": "a+"}})
    assert post(client, TEXT, body, auth).status_code == 200


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name"),
        ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "n": 2, "temperature": 1}, "n"),
        ({"tools": [TOOL, TOOL]}, "tools[1].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]},
         "tools[0].function.parameters"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}},
         "structured_outputs"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
        ({"tools": [TOOL], "tool_choice": "required", "response_format": {"type": "json_object"}},
         "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "x"}]}]},
         "messages.0.tool_calls.0.function"),
    ],
)  # fmt: skip
def test_bad_tools_and_formats_are_400_naming_the_field(client, auth, openai_spec, extra, param):
    openai_error(openai_spec, post(client, CHAT, _body(**extra), auth), 400, param=param)


def test_tool_loop_turns_keep_their_tool_fields():
    req = ChatCompletionRequest.model_validate({"model": "default", "messages": LOOP})
    assert req.turns() == LOOP


# -- what answers look like --------------------------------------------------------------------


def _chunks(events: list[bytes]) -> list[dict]:
    return [json.loads(e[len(b"data: ") :]) for e in events if e != b"data: [DONE]\n\n"]


def test_an_answer_of_calls_renders_as_openai_does(openai_spec):
    call = ToolCall("call-1", "set_light", '{"on": true}')
    reply = ModelReply("", "default", "tool_calls", Usage(3, 4), tool_calls=(call,))
    body = render(Completed.from_reply("chat", reply))
    openai_spec.check("CreateChatCompletionResponse", body)
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [c.to_openai() for c in reply.tool_calls]


def test_a_live_stream_of_a_named_call_has_openais_chunks(openai_spec):
    fmt = StreamFormat("chat", "default", include_usage=True)
    first = ToolCallDelta(0, "call-1", "set_light", '{"on"')
    events = [
        fmt.delta(0, "", None, [first.to_openai()]),
        fmt.delta(0, "", None, [ToolCallDelta(0, arguments=": true}").to_openai()]),
        fmt.delta(0, "", "stop"),
        fmt.usage(Usage(1, 2)),
    ]
    chunks = _chunks(events)
    for c in chunks:
        openai_spec.check(CHUNK, c)
    deltas = [c["choices"][0]["delta"] for c in chunks[:3]]
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": "call-1",
                "type": "function",
                "function": {"name": "set_light", "arguments": '{"on"'},
            }
        ],
    }
    assert deltas[1] == {"tool_calls": [{"index": 0, "function": {"arguments": ": true}"}}]}


def test_a_cached_answer_with_calls_replays_identically(openai_spec):
    calls = [CALL, {**CALL, "id": "call-2"}]
    done = Completed("chat", "default", ["thinking"], ["tool_calls"], Usage(1, 2, 1), [calls])
    again = Completed.from_bytes(done.to_bytes())
    assert again == done
    assert render(again)["choices"] == render(done)["choices"]
    chunks = _chunks(StreamFormat("chat", "default", False).replay(again))
    for c in chunks:
        openai_spec.check(CHUNK, c)
    (head, tail) = (c["choices"][0] for c in chunks)
    assert head["delta"]["content"] == "thinking"
    assert [t["id"] for t in head["delta"]["tool_calls"]] == ["call-1", "call-2"]
    assert [t["index"] for t in head["delta"]["tool_calls"]] == [0, 1]
    assert tail["finish_reason"] == "tool_calls"


def test_entries_cached_before_tool_calls_still_read():
    old = json.dumps(["chat", "default", ["hi"], ["stop"], 1, 2]).encode()
    assert Completed.from_bytes(old) == Completed("chat", "default", ["hi"], ["stop"], Usage(1, 2))


def test_entries_cached_before_cached_tokens_still_read():
    old = json.dumps(["chat", "default", ["hi"], ["stop"], 1, 2, [[CALL]]]).encode()
    read = Completed.from_bytes(old)
    assert read == Completed("chat", "default", ["hi"], ["stop"], Usage(1, 2), [[CALL]])
    assert read.usage.cached_tokens == 0


def test_answers_with_calls_are_cacheable():
    assert Completed("chat", "m", [""], ["tool_calls"], Usage(), [[CALL]]).cacheable


def test_a_live_stream_collects_into_the_same_answer_as_a_whole_one():
    acc = Accumulator("chat", "default")
    for d in (
        ModelDelta("", tool_calls=(ToolCallDelta(0, "call-1", "set_light", "{"),)),
        ModelDelta("", tool_calls=(ToolCallDelta(0, arguments="}"),)),
        ModelDelta("", finish_reason="stop", usage=Usage(1, 2)),
    ):
        acc.add(d)
    acc.complete = True
    done = acc.result()
    assert done is not None and done.tool_calls == [[CALL]]


def test_an_agent_reply_with_calls_folds_into_a_call_delta():
    fold = ChatFold("agent:x")
    reply = ModelReply("", "default", "tool_calls", tool_calls=(ToolCall("call-1", "f", "{}"),))
    (delta,) = fold.deltas(reply)
    assert delta.tool_calls == (ToolCallDelta(0, "call-1", "f", "{}"),)
    (end,) = fold.end()
    assert end.finish_reason == "tool_calls"


# -- the cache key -----------------------------------------------------------------------------


def _key(prompt=LOOP, **params):
    sp = SamplingParams(temperature=0, **params)
    return cache_key(
        target="default", revision=None, kind="chat", prompt=prompt, params=sp, tenant="t"
    )


def test_everything_that_changes_the_answer_changes_the_key():
    named = {"type": "function", "function": {"name": "set_light"}}
    other_call = [LOOP[0], {**LOOP[1], "tool_calls": [{**CALL, "id": "call-2"}]}, LOOP[2]]
    other_answer = [*LOOP[:2], {**LOOP[2], "tool_call_id": "call-9"}]
    keys = [
        _key(),
        _key(tools=[TOOL]),
        _key(tools=[TOOL], tool_choice="required"),
        _key(tools=[TOOL], tool_choice=named),
        _key(response_format={"type": "json_object"}),
        _key(structured_outputs={"choice": ["a"]}),
        _key(prompt=other_call),
        _key(prompt=other_answer),
    ]
    assert len(set(keys)) == len(keys)
    assert _key(tools=[TOOL]) == _key(tools=[json.loads(json.dumps(TOOL))])
