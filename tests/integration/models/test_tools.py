"""Tools and structured output on a real engine behind a ModelServer deployment: what
``ctx.llm`` gets (``ModelReply.tool_calls``, a stream's reply with its calls, tool-call pieces
across the Ray hop, merged by ``coalesce`` when they pile up), and the turns of a tool loop.
Shares the package's warm ``main`` model (builtin:tiny, random weights, the hermes parser)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from agents.errors import InvalidParameter
from runtime.models import ToolCallDelta, join_tool_calls

LAMP = {
    "type": "object",
    "properties": {
        "on": {"type": "boolean"},
        "level": {"type": "integer", "minimum": 0, "maximum": 3},
    },
    "required": ["on", "level"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "lamp", "parameters": LAMP}}]
NAMED = {"type": "function", "function": {"name": "lamp"}}
TURNS = [{"role": "user", "content": "Lamp on, level 2"}]
BAD_SCHEMA = {"name": "x", "schema": {"type": "nope"}}


async def test_a_named_choice_is_a_call_of_that_tool(main_model):
    reply = await main_model.client.chat(TURNS, tools=TOOLS, tool_choice=NAMED, max_tokens=200)
    (call,) = reply.tool_calls
    assert call.name == "lamp" and call.id.startswith("chatcmpl-tool-")
    jsonschema.validate(call.args(), LAMP)
    assert reply.text == "" and reply.finish_reason == "stop"
    # ... and the answer goes back as a turn of the loop, with the tool's result
    loop = [*TURNS, reply.turn(), {"role": "tool", "tool_call_id": call.id, "content": "on"}]
    again = await main_model.client.chat(loop, tools=TOOLS, tool_choice="none", max_tokens=4)
    assert again.usage.prompt_tokens > reply.usage.prompt_tokens


async def test_named_call_pieces_cross_the_hop_and_add_up(main_model):
    pieces: list[ToolCallDelta] = []
    reasons = []
    async for delta in main_model.client.stream_deltas(
        TURNS, tools=TOOLS, tool_choice=NAMED, max_tokens=200, seed=2
    ):
        assert delta.text == ""
        pieces += delta.tool_calls
        reasons.append(delta.finish_reason)
    assert pieces[0].opens and not any(p.opens for p in pieces[1:])
    (call,) = join_tool_calls(pieces)
    jsonschema.validate(call.args(), LAMP)
    assert reasons[-1] == "stop"


async def test_a_stream_reply_carries_its_calls(main_model):
    stream = main_model.client.stream(
        TURNS, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=200
    )
    assert [t async for t in stream] == []  # calls are not text
    (call,) = stream.reply.tool_calls
    assert call.name == "lamp" and stream.reply.finish_reason == "tool_calls"
    jsonschema.validate(call.args(), LAMP)


async def test_required_and_auto(main_model):
    reply = await main_model.client.chat(
        TURNS, tools=TOOLS, tool_choice="required", max_tokens=400, seed=1
    )
    if reply.finish_reason == "tool_calls":  # several calls may not fit; each one validates
        for call in reply.tool_calls:
            jsonschema.validate(call.args(), LAMP)
    else:
        assert reply.finish_reason == "length" and reply.text.startswith("[")
    auto = await main_model.client.chat(TURNS, tools=TOOLS, max_tokens=8)
    assert auto.finish_reason in ("stop", "length", "tool_calls")


async def test_json_schema_and_structured_outputs(main_model):
    fmt = {"type": "json_schema", "json_schema": {"name": "lamp", "schema": LAMP}}
    reply = await main_model.client.chat(TURNS, response_format=fmt, max_tokens=200, seed=3)
    jsonschema.validate(json.loads(reply.text), LAMP)
    texts = [t async for t in main_model.client.stream(TURNS, response_format=fmt, max_tokens=200)]
    jsonschema.validate(json.loads("".join(texts)), LAMP)
    reply = await main_model.client.complete(
        "Pick:", structured_outputs={"choice": ["red", "blue"]}, max_tokens=8
    )
    assert reply.text in ("red", "blue")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": BAD_SCHEMA}},
         "response_format.json_schema.schema"),
        ({"structured_outputs": {"grammar": "root ::= "}}, "structured_outputs.grammar"),
    ],
)  # fmt: skip
async def test_a_constraint_vllm_cannot_compile_is_the_callers_error(main_model, params, field):
    with pytest.raises(InvalidParameter) as err:
        await main_model.client.chat(TURNS, max_tokens=8, **params)
    assert err.value.field == field


async def test_turns_of_a_tool_loop_are_checked(main_model):
    bad = [*TURNS, {"role": "tool", "content": "no id"}]
    with pytest.raises(InvalidParameter) as err:
        await main_model.client.chat(bad, max_tokens=4)
    assert err.value.field == "messages[1].tool_call_id"


# What a model that calls a tool on its own writes, in the tiny model's (Hermes) format; the
# random weights are made to write it by a regex constraint, which "auto" allows.
HERMES_CALL = '<tool_call>\n{"name": "lamp", "arguments": {"on": true, "level": 2}}\n</tool_call>'


@pytest.mark.parametrize("streamed", [False, True])
async def test_auto_reads_the_call_the_model_writes(main_model, streamed):
    import re

    params = {
        "tools": TOOLS,
        "tool_choice": "auto",
        "structured_outputs": {"regex": re.escape(HERMES_CALL)},
        "max_tokens": 120,
    }
    if streamed:
        deltas = [d async for d in main_model.client.stream_deltas(TURNS, **params)]
        pieces = [p for d in deltas for p in d.tool_calls]
        assert "".join(d.text for d in deltas) == ""  # the call's markup is not content
        calls = join_tool_calls(pieces)
        reason = deltas[-1].finish_reason
    else:
        reply = await main_model.client.chat(TURNS, **params)
        assert reply.text == ""
        calls, reason = reply.tool_calls, reply.finish_reason
    (call,) = calls
    assert call.name == "lamp" and call.args() == {"on": True, "level": 2}
    assert reason == "tool_calls"
