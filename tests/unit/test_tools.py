"""Tools in the SDK: schemas from signatures, and the loop that runs them (LocalRuntime,
scripted model)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Literal

import pytest
from pydantic import Field

from agents import (
    Agent,
    Context,
    InvalidParameter,
    MessageDecodeError,
    ModelReply,
    SamplingParams,
    ToolCall,
    ToolLoopExceeded,
    agent_tool,
    handler,
    run_tools,
    tool,
)
from agents.testing import ScriptedModel, tool_calls
from agents.tools import parse_json, response_format
from runtime import LocalRuntime


@tool
def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Args:
        a: the first addend,
            on two lines.
        b: the second addend.

    Returns:
        the sum.
    """
    return a + b


@tool(timeout_s=0.2)
async def slow() -> str:
    """Never finishes in time."""
    await asyncio.sleep(30)
    return "late"


@tool
def broken(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"broken: {reason}")


@tool
async def whoami(ctx: Context, shout: bool = False) -> str:
    """The calling agent's name."""
    return ctx.agent.upper() if shout else ctx.agent


class Opaque:
    """No JSON schema for this."""


@dataclass
class Lookup:
    """Look a word up in the glossary."""

    word: Literal["ray", "vllm"]


class Glossary(Agent):
    model = None

    @handler
    async def lookup(self, msg: Lookup, ctx: Context) -> str:
        return {"ray": "a framework for distributed Python", "vllm": "an LLM engine"}[msg.word]


@dataclass
class Go:
    question: str = "?"
    max_rounds: int = 4


class User(Agent):
    """Runs the loop with every tool above."""

    @handler
    async def go(self, msg: Go, ctx: Context) -> dict:
        transcript: list = []
        reply = await run_tools(
            ctx,
            [{"role": "user", "content": msg.question}],
            [add, slow, broken, whoami, agent_tool("glossary", Lookup)],
            max_rounds=msg.max_rounds,
            transcript=transcript,
            temperature=0.0,
        )
        return {"text": reply.text, "usage": reply.usage.total_tokens, "transcript": transcript}


async def _run(model: ScriptedModel, msg: Go | None = None) -> dict:
    async with LocalRuntime([User, Glossary], {"default": model}) as rt:
        return await rt.send("user", msg or Go())


def _results(transcript: list) -> list[str]:
    return [t["content"] for t in transcript if t["role"] == "tool"]


def test_the_schema_comes_from_the_signature_and_docstring():
    fn = add.openai_tool["function"]
    assert fn["name"] == "add" and fn["description"] == "Add two integers."
    params = fn["parameters"]
    assert params["required"] == ["a"]
    assert params["properties"]["a"]["type"] == "integer"
    assert params["properties"]["a"]["description"] == "the first addend, on two lines."
    assert params["properties"]["b"]["default"] == 1
    # a Context parameter is the caller's, never the model's
    assert "ctx" not in whoami.openai_tool["function"]["parameters"]["properties"]
    lookup = agent_tool("glossary", Lookup).openai_tool["function"]
    assert lookup["description"] == "Look a word up in the glossary."
    assert lookup["parameters"]["properties"]["word"]["enum"] == ["ray", "vllm"]


def test_bad_tool_definitions_are_refused_when_declared():
    def untyped(x):  # no annotation: no schema
        return x

    def untyped_but_fine(x: int) -> int:
        return x

    def opaque(x: Opaque) -> None:
        pass

    with pytest.raises(InvalidParameter, match="types pydantic can describe"):
        tool(opaque)

    with pytest.raises(InvalidParameter, match="x="):
        tool(untyped)
    with pytest.raises(InvalidParameter, match="name="):
        tool(name="has space")(untyped_but_fine)
    with pytest.raises(InvalidParameter, match="timeout_s"):
        tool(timeout_s=0)(untyped_but_fine)


def test_sampling_params_take_tools_and_check_tool_choice():
    sp = SamplingParams(tools=[add], tool_choice={"type": "function", "function": {"name": "add"}})
    assert sp.tools == (add.openai_tool,) and sp.calls_tools
    assert SamplingParams(tools=[add]).effective_tool_choice == "auto"
    with pytest.raises(InvalidParameter, match=r"tool_choice.function.name='nope'"):
        SamplingParams(tools=[add], tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(InvalidParameter, match="tool_choice='required'"):
        SamplingParams(tool_choice="required")
    with pytest.raises(InvalidParameter, match="n=2"):
        SamplingParams(tools=[add], n=2)
    with pytest.raises(InvalidParameter, match=r"tools\[1\].function.name='add'"):
        SamplingParams(tools=[add, add])


async def test_the_loop_runs_the_calls_and_sends_the_results_back():
    model = ScriptedModel(
        [tool_calls(("add", {"a": 2, "b": 3}), ("glossary", {"word": "ray"})), "5, and Ray."]
    )
    out = await _run(model)
    assert out["text"] == "5, and Ray."
    assert _results(out["transcript"]) == ["5", "a framework for distributed Python"]
    first, second = model.calls
    assert [t["function"]["name"] for t in first.params.tools] == [
        "add",
        "slow",
        "broken",
        "whoami",
        "glossary",
    ]
    # the second call sees the assistant's calls and one tool turn per call, by id
    asked, *tool_turns = second.prompt[1:]
    assert asked["role"] == "assistant" and len(asked["tool_calls"]) == 2
    assert [t["tool_call_id"] for t in tool_turns] == [c["id"] for c in asked["tool_calls"]]
    # usage sums both model calls (the scripted model counts words, and argument characters
    # as generated tokens): 1 + 31 for the calls, 7 + 3 for the answer
    assert out["usage"] == 42


async def test_failures_go_back_to_the_model_as_errors_it_can_read():
    model = ScriptedModel(
        [
            tool_calls(
                ("broken", {"reason": "disk"}),
                ("slow", {}),
                ("add", {"a": "not a number"}),
                ("nope", {}),
                ("whoami", {"shout": True}),
            ),
            "I see.",
        ]
    )
    out = await _run(model)
    broken_r, slow_r, add_r, nope_r, who_r = _results(out["transcript"])
    assert broken_r == "error: broken failed: ValueError: broken: disk"
    assert slow_r == "error: slow did not finish within 0.2s"
    assert add_r.startswith("error: invalid arguments for add: a: ")
    assert nope_r.startswith("error: there is no tool 'nope'")
    assert who_r == "USER"
    assert out["text"] == "I see."


_started = {"left": asyncio.Event(), "right": asyncio.Event()}


@tool(timeout_s=5)
async def left() -> str:
    """Waits for right."""
    _started["left"].set()
    await _started["right"].wait()  # deadlocks (and times out) if the calls run in turn
    return "L"


@tool(timeout_s=5)
async def right() -> str:
    """Waits for left."""
    _started["right"].set()
    await _started["left"].wait()
    return "R"


class Both(Agent):
    @handler
    async def go(self, msg: Go, ctx: Context) -> list:
        transcript: list = []
        await run_tools(
            ctx, [{"role": "user", "content": "?"}], [left, right], transcript=transcript
        )
        return _results(transcript)


async def test_calls_run_in_parallel():
    for event in _started.values():
        event.clear()
    model = ScriptedModel([tool_calls(("left", {}), ("right", {})), "done"])
    async with LocalRuntime([Both], {"default": model}) as rt:
        assert await rt.send("both", Go()) == ["L", "R"]


async def test_a_model_that_never_stops_calling_is_cut_off():
    model = ScriptedModel([tool_calls(("add", {"a": 1}))], cycle=True)
    with pytest.raises(ToolLoopExceeded) as err:
        await _run(model, Go(max_rounds=2))
    assert err.value.rounds == 2 and err.value.reply.tool_calls[0].name == "add"
    assert len(model.calls) == 3


class Forced(Agent):
    @handler
    async def go(self, msg: Go, ctx: Context) -> str:
        choice = {"type": "function", "function": {"name": "add"}}
        reply = await run_tools(ctx, [{"role": "user", "content": "?"}], [add], tool_choice=choice)
        return reply.text


async def test_forced_tool_choice_applies_to_the_first_call_only():
    model = ScriptedModel([tool_calls(("add", {"a": 1})), "2"])
    async with LocalRuntime([Forced], {"default": model}) as rt:
        assert await rt.send("forced", Go()) == "2"
    assert model.calls[0].params.tool_choice == {"type": "function", "function": {"name": "add"}}
    assert model.calls[1].params.tool_choice is None


def test_a_scripted_model_refuses_to_call_tools_it_was_not_given():
    model = ScriptedModel([tool_calls(("add", {"a": 1}))])
    with pytest.raises(AssertionError, match="without tools"):
        asyncio.run(model.chat([{"role": "user", "content": "?"}]))


def test_tool_call_arguments_and_turns():
    call = ToolCall("c1", "add", '{"a": 1}')
    assert call.args() == {"a": 1}
    with pytest.raises(InvalidParameter, match="a JSON object"):
        ToolCall("c2", "add", "[1]").args()
    with pytest.raises(InvalidParameter, match="arguments="):
        ToolCall("c3", "add", '{"a":').args()
    reply = ModelReply("", "m", "tool_calls", tool_calls=(call,))
    assert reply.turn() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
        ],
    }
    assert ModelReply("hi", "m").turn() == {"role": "assistant", "content": "hi"}


@dataclass
class Point:
    """A point."""

    x: Annotated[int, Field(ge=0)]
    label: Literal["a", "b"]


def test_response_format_and_parse_json():
    fmt = response_format(Point)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Point"
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"]["x"]["minimum"] == 0 and schema["required"] == ["x", "label"]
    SamplingParams(response_format=fmt)  # a valid response_format
    assert parse_json(Point, json.dumps({"x": 3, "label": "a"})) == Point(3, "a")
    with pytest.raises(MessageDecodeError, match="label"):
        parse_json(Point, '{"x": 3, "label": "c"}')
    with pytest.raises(MessageDecodeError, match="not JSON of Point"):
        parse_json(Point, '{"x": 3, "lab')
