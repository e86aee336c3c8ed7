"""``coalesce``: streamed deltas merge only when they would have waited for the consumer."""

from __future__ import annotations

import asyncio

import pytest

from agents.model import Usage
from runtime.models._wire import ModelDelta, coalesce


async def source(items, gap_s=0.0, fail=None, closed=None):
    try:
        for item in items:
            if gap_s:
                await asyncio.sleep(gap_s)
            yield item
        if fail is not None:
            raise fail
    finally:
        if closed is not None:
            closed.set()


TOKENS = [ModelDelta(t, model="m") for t in ("a", "b", "c")] + [
    ModelDelta("d", model="m", finish_reason="length", usage=Usage(3, 4))
]


async def test_an_idle_consumer_gets_every_delta_as_it_comes():
    got = [d async for d in coalesce(source(TOKENS, gap_s=0.01))]
    assert got == TOKENS


async def test_a_busy_consumer_gets_what_piled_up_merged_with_finish_and_usage_kept():
    got = []
    async for d in coalesce(source(TOKENS)):
        got.append(d)
        await asyncio.sleep(0.05)  # the consumer is slower than the producer
    assert "".join(d.text for d in got) == "abcd" and len(got) < len(TOKENS)
    assert got[-1].finish_reason == "length" and got[-1].usage == Usage(3, 4)


async def test_choices_are_not_merged_into_each_other():
    items = [ModelDelta("x", 0), ModelDelta("y", 1), ModelDelta("z", 0)]
    got = []
    async for d in coalesce(source(items)):
        got.append(d)
        await asyncio.sleep(0.02)
    assert {i: "".join(d.text for d in got if d.index == i) for i in (0, 1)} == {0: "xz", 1: "y"}


async def test_an_error_arrives_after_what_came_before_it():
    got = []

    async def drain():
        async for d in coalesce(source(TOKENS[:2], fail=RuntimeError("engine died"))):
            got.append(d.text)

    with pytest.raises(RuntimeError, match="engine died"):
        await drain()
    assert "".join(got) == "ab"


async def test_closing_early_closes_the_source():
    closed = asyncio.Event()
    stream = coalesce(source(TOKENS * 100, gap_s=0.001, closed=closed))
    assert (await anext(stream)).text
    await stream.aclose()
    await asyncio.wait_for(closed.wait(), 1)


def test_tool_call_pieces_merge_into_one_entry_per_call():
    from runtime.models._wire import ToolCallDelta, _merged, join_tool_calls

    pieces = [
        ModelDelta("", tool_calls=(ToolCallDelta(0, "c0", "f", '{"a"'),)),
        ModelDelta("", tool_calls=(ToolCallDelta(0, arguments=": 1"),)),
        ModelDelta("", tool_calls=(ToolCallDelta(0, arguments="}"),)),
        ModelDelta("", tool_calls=(ToolCallDelta(1, "c1", "g", "{}"),)),
        ModelDelta("", finish_reason="tool_calls", usage=Usage(1, 2)),
    ]
    (merged,) = _merged(list(pieces))
    assert merged.tool_calls == (
        ToolCallDelta(0, "c0", "f", '{"a": 1}'),
        ToolCallDelta(1, "c1", "g", "{}"),
    )
    assert (merged.finish_reason, merged.usage) == ("tool_calls", Usage(1, 2))
    assert join_tool_calls(merged.tool_calls) == join_tool_calls(
        p for d in pieces for p in d.tool_calls
    )


def test_a_piece_that_opens_a_call_is_never_glued_to_the_previous_one():
    from runtime.models._wire import ToolCallDelta, _merged

    a = ModelDelta("", tool_calls=(ToolCallDelta(0, "c0", "f", "{}"),))
    b = ModelDelta("", tool_calls=(ToolCallDelta(0, "c9", "f", "{}"),))  # a new call, same index
    (merged,) = _merged([a, b])
    assert [p.id for p in merged.tool_calls] == ["c0", "c9"]


def test_text_after_a_tool_call_is_not_merged_into_it():
    from runtime.models._wire import ToolCallDelta, _merged

    call = ModelDelta("", tool_calls=(ToolCallDelta(0, "c0", "f", "{}"),))
    text = ModelDelta("later")
    assert _merged([call, text]) == [call, text]
    # text before a call merges: one chunk renders text, then calls -- the same order
    (merged,) = _merged([text, call])
    assert (merged.text, merged.tool_calls) == ("later", call.tool_calls)
