"""Tools and structured output, the pure rules (:mod:`runtime.models._tools`): which constraint
a request gets, how a choice's text becomes content and tool-call pieces, and the finish reason
vLLM's server would report."""

from __future__ import annotations

import json

import pytest

from agents.model import SamplingParams, ToolCall
from runtime.models._tools import ToolOutput, constraint, parse_required, tool_mode
from runtime.models._wire import ToolCallDelta, join_tool_calls

TOOLS = (
    {"type": "function", "function": {"name": "set_light", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "ping"}},
)
NAMED = {"type": "function", "function": {"name": "set_light"}}


def _required_schema(tools, parallel):
    return {"array-of": [t["function"]["name"] for t in tools], "parallel": parallel}


def _ids():
    n = iter(range(100))
    return lambda: f"call-{next(n)}"


@pytest.mark.parametrize(
    ("params", "mode"),
    [
        ({}, "none"),
        ({"tools": TOOLS}, "auto"),
        ({"tools": TOOLS, "tool_choice": "auto"}, "auto"),
        ({"tools": TOOLS, "tool_choice": "none"}, "none"),
        ({"tools": TOOLS, "tool_choice": "required"}, "required"),
        ({"tools": TOOLS, "tool_choice": NAMED}, "named"),
    ],
)
def test_tool_mode(params, mode):
    assert tool_mode(SamplingParams(**params)) == mode


SCHEMA = {"name": "x", "schema": {"type": "integer"}}
PING = {"type": "function", "function": {"name": "ping"}}
EMPTY = {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, None),
        ({"tools": TOOLS}, None),  # auto: free text, a parser reads it
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, ("response_format", {"json_object": True})),
        (
            {"response_format": {"type": "json_schema", "json_schema": SCHEMA}},
            ("response_format.json_schema.schema", {"json": {"type": "integer"}}),
        ),
        ({"structured_outputs": {"regex": "a+"}}, ("structured_outputs.regex", {"regex": "a+"})),
        (
            {"structured_outputs": {"choice": ["y", "n"]}},
            ("structured_outputs.choice", {"choice": ["y", "n"]}),
        ),
        (
            {"tools": TOOLS, "tool_choice": NAMED},
            ("tools[0].function.parameters", {"json": {"type": "object"}}),
        ),
        (
            {"tools": TOOLS, "tool_choice": PING},
            ("tools[1].function.parameters", {"json": EMPTY}),  # no parameters: an object
        ),
        (
            {"tools": TOOLS, "tool_choice": "required"},
            ("tools", {"json": {"array-of": ["set_light", "ping"], "parallel": None}}),
        ),
        (
            {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
            ("tools", {"json": {"array-of": ["set_light", "ping"], "parallel": False}}),
        ),
    ],
)
def test_constraint_of_each_request(params, expected):
    assert constraint(SamplingParams(**params), _required_schema) == expected


def test_a_named_choice_streams_its_arguments_as_openai_does():
    out = ToolOutput("named", name="set_light", new_id=_ids())
    assert out.feed("") == ("", ())  # nothing to say yet: no empty call opened
    assert out.feed('{"on"') == ("", (ToolCallDelta(0, "call-0", "set_light", '{"on"'),))
    assert out.feed(": true}") == ("", (ToolCallDelta(0, arguments=": true}"),))
    # vLLM and OpenAI report a forced call with the engine's own reason
    assert out.finish("stop") == ("", (), "stop")
    first, then = ToolCallDelta(0, "call-0", "set_light", "{"), ToolCallDelta(0, arguments="}")
    assert first.to_openai() == {
        "index": 0,
        "id": "call-0",
        "type": "function",
        "function": {"name": "set_light", "arguments": "{"},
    }
    assert then.to_openai() == {"index": 0, "function": {"arguments": "}"}}


def test_required_answers_become_calls_at_the_end():
    out = ToolOutput("required", new_id=_ids())
    text = '[{"name": "set_light", "parameters": {"on": true}}, {"name": "ping", "parameters": {}}]'
    for part in (text[:10], text[10:]):
        assert out.feed(part) == ("", ())  # held back
    content, pieces, reason = out.finish("stop")
    assert (content, reason) == ("", "tool_calls")
    assert join_tool_calls(pieces) == (
        ToolCall("call-0", "set_light", '{"on": true}'),
        ToolCall("call-1", "ping", "{}"),
    )


def test_a_cut_off_required_answer_keeps_its_text_and_reason():
    out = ToolOutput("required")
    out.feed('[{"name": "set_li')
    assert out.finish("length") == ('[{"name": "set_li', (), "length")


@pytest.mark.parametrize(
    "text", ['{"name": "f"}', "[1]", '[{"parameters": {}}]', "not json", '[{"name": 3}]']
)
def test_parse_required_refuses_what_is_not_an_array_of_calls(text):
    assert parse_required(text) is None


def test_parse_required_reserializes_parameters_as_vllm_does():
    (call,) = parse_required('[{"name":"f","parameters":{"city":"Zürich"}}]')
    assert call.name == "f" and call.id.startswith("chatcmpl-tool-")
    assert call.arguments == '{"city": "Zürich"}' and json.loads(call.arguments)


def test_auto_answers_go_through_the_parser():
    seen = []

    def parser(text):
        seen.append(text)
        return "before ", [ToolCall("", "ping", "{}")]

    out = ToolOutput("auto", parser=parser, new_id=_ids())
    out.feed("before <tool_call>")
    out.feed('{"name": "ping"}</tool_call>')
    content, pieces, reason = out.finish("stop")
    assert seen == ['before <tool_call>{"name": "ping"}</tool_call>']
    assert (content, reason) == ("before ", "tool_calls")
    assert pieces == (ToolCallDelta(0, "call-0", "ping", "{}"),)  # the parser gave no id


def test_an_auto_answer_without_calls_is_content():
    out = ToolOutput("auto", parser=lambda text: (text, []))
    out.feed("just words")
    assert out.finish("length") == ("just words", (), "length")


def test_no_tools_passes_text_through():
    out = ToolOutput("none")
    assert out.feed("a") == ("a", ())
    assert out.finish("stop") == ("", (), "stop")


def test_modes_that_need_more_say_so():
    with pytest.raises(ValueError, match="name"):
        ToolOutput("named")
    with pytest.raises(ValueError, match="parser"):
        ToolOutput("auto")


def test_join_tool_calls_keeps_call_order_and_ids():
    pieces = [
        ToolCallDelta(0, "a", "f", '{"x"'),
        ToolCallDelta(0, arguments=": 1}"),
        ToolCallDelta(1, "b", "g", ""),
        ToolCallDelta(1, arguments="{}"),
    ]
    assert join_tool_calls(pieces) == (ToolCall("a", "f", '{"x": 1}'), ToolCall("b", "g", "{}"))
    assert join_tool_calls([]) == ()


def test_auto_needs_a_configured_parser_and_the_error_says_where():
    from agents.errors import InvalidParameter
    from runtime.models._tools import check_auto

    for params in ({"tools": TOOLS}, {"tools": TOOLS, "tool_choice": "auto"}):
        with pytest.raises(InvalidParameter, match=r"models\.small\.tool_call_parser") as err:
            check_auto(SamplingParams(**params), "small", has_parser=False)
        assert err.value.field == "tool_choice"
        check_auto(SamplingParams(**params), "small", has_parser=True)
    for params in (
        {},
        {"tools": TOOLS, "tool_choice": "required"},
        {"tools": TOOLS, "tool_choice": NAMED},
    ):
        check_auto(SamplingParams(**params), "small", has_parser=False)  # no parser needed


@pytest.fixture(scope="module")
def hermes_stream():
    """A streaming reader of ``auto`` answers as the engine builds it: vLLM's hermes parser on
    the tiny model's tokenizer (no engine)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tokenizers import get_tokenizer
    from vllm.tool_parsers import ToolParserManager

    from runtime.models import ensure_tiny_model
    from runtime.models.engine import _AutoStream, _vllm_tool

    tok = get_tokenizer(str(ensure_tiny_model()))
    tools = [{"type": "function", "function": {"name": "lamp", "parameters": {"type": "object"}}}]

    def make() -> ToolOutput:
        parser = ToolParserManager.get_tool_parser("hermes")(tok, [_vllm_tool(t) for t in tools])
        request = ChatCompletionRequest(
            model="m", messages=[{"role": "user", "content": ""}], tools=tools, tool_choice="auto"
        )
        return ToolOutput("auto", stream=_AutoStream(parser, request, "m"))

    def feed(out: ToolOutput, text: str) -> list[tuple[str, tuple]]:
        ids = tok.encode(text, add_special_tokens=False)
        return [out.feed(tok.decode([i], skip_special_tokens=False), [i]) for i in ids]

    return make, feed


def test_auto_streams_content_then_the_call_as_it_is_written(hermes_stream):
    make, feed = hermes_stream
    out = make()
    steps = feed(
        out, 'Sure. <tool_call>\n{"name": "lamp", "arguments": {"on": true, "level": 2}}\n'
        "</tool_call>"
    )  # fmt: skip
    tail, last, reason = out.finish("stop")
    content = [c for c, _ in steps if c]
    pieces = [p for _, ps in steps for p in ps] + list(last)
    assert "".join(content) + tail == "Sure. " and len(content) >= 2  # token by token
    assert pieces[0].opens and pieces[0].name == "lamp" and pieces[0].id
    assert len(pieces) >= 4  # the arguments stream in fragments, not in one piece
    (call,) = join_tool_calls(pieces)
    assert json.loads(call.arguments) == {"on": True, "level": 2}
    assert reason == "tool_calls"


def test_auto_without_a_call_streams_all_of_it_as_content(hermes_stream):
    make, feed = hermes_stream
    out = make()
    text = "the quick brown fox jumps over the lazy dog"
    steps = feed(out, text)
    tail, pieces, reason = out.finish("stop")
    assert "".join(c for c, _ in steps) + tail == text and not pieces and reason == "stop"
    assert sum(1 for c, _ in steps if c) > 3
