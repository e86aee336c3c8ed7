"""Streaming handlers on LocalRuntime (the executor path every runtime shares), and how the
gateway folds a chat agent's stream into model-style deltas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agents import (
    Agent,
    Backpressure,
    ChatRequest,
    Context,
    HandlerError,
    ModelReply,
    SendTimeout,
    Usage,
    codec,
    handler,
)
from agents.model import Handoff, TextStream
from agents.testing import ScriptedModel
from examples.assistant import Assistant
from runtime import LocalRuntime, RaygentConfig
from runtime.config import AgentConfig
from runtime.core.streaming import MAX_BUFFERED
from runtime.gateway.agent_streams import ChatFold, run_handoffs


@dataclass
class Count:
    n: int
    fail_at: int = -1
    pause_s: float = 0.0


class Counter(Agent):
    """Streams 0..n-1; the test steps it with ``gate`` (one item per set) when given."""

    gate: asyncio.Queue[None] | None = None
    cancelled = 0
    yielded = 0

    @handler
    async def count(self, msg: Count, ctx: Context) -> AsyncIterator[int]:
        try:
            for i in range(msg.n):
                if i == msg.fail_at:
                    raise ValueError(f"failed at {i}")
                if Counter.gate is not None:
                    await Counter.gate.get()
                Counter.yielded += 1
                yield i
                await asyncio.sleep(msg.pause_s)
        except asyncio.CancelledError:
            Counter.cancelled += 1
            raise

    @handler
    async def upper(self, msg: str, ctx: Context) -> str:
        return msg.upper()

    @handler
    async def relay(self, msg: float, ctx: Context) -> AsyncIterator[int]:
        """Streams another agent's stream on: ``ctx.stream`` inside a streaming handler."""
        async for i in ctx.stream("counter", Count(int(msg))):
            yield i * 10


@pytest.fixture(autouse=True)
def _reset():
    Counter.gate, Counter.cancelled, Counter.yielded = None, 0, 0


async def _collect(stream: AsyncIterator[int], into: list[int]) -> None:
    async for x in stream:
        into.append(x)


def _config(**agent: object) -> RaygentConfig:
    return RaygentConfig(agents=[AgentConfig(import_path=f"{__name__}:Counter", **agent)])


async def test_items_reach_the_caller_while_the_handler_runs():
    Counter.gate = asyncio.Queue()
    async with LocalRuntime([Counter]) as rt:
        stream = rt.stream("counter", Count(3))
        got = []
        for _ in range(3):
            Counter.gate.put_nowait(None)  # let exactly one more item out
            got.append(await asyncio.wait_for(anext(stream), 5))
        assert got == [0, 1, 2]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_send_to_a_streaming_handler_returns_every_item_and_stream_of_a_plain_one_one():
    async with LocalRuntime([Counter]) as rt:
        assert await rt.send("counter", Count(4)) == [0, 1, 2, 3]
        assert [x async for x in rt.stream("counter", "hi")] == ["HI"]
        assert [x async for x in rt.stream("counter", Count(0))] == []
        assert [x async for x in rt.stream("counter", 3.0)] == [0, 10, 20]


async def test_an_error_mid_stream_comes_after_the_items_before_it():
    async with LocalRuntime([Counter]) as rt:
        got: list[int] = []
        with pytest.raises(HandlerError, match="failed at 2"):
            await _collect(rt.stream("counter", Count(5, fail_at=2)), got)
        assert got == [0, 1]
        assert await rt.send("counter", "still serving") == "STILL SERVING"


async def test_leaving_early_or_timing_out_cancels_the_handler():
    async with LocalRuntime([Counter]) as rt:
        stream = rt.stream("counter", Count(1000, pause_s=0.01))
        assert await anext(stream) == 0
        await stream.aclose()
        for _ in range(100):
            if Counter.cancelled:
                break
            await asyncio.sleep(0.01)
        assert Counter.cancelled == 1
        with pytest.raises(SendTimeout):
            await _collect(rt.stream("counter", Count(1000, pause_s=0.01), timeout_s=0.1), [])
        for _ in range(100):
            if Counter.cancelled == 2:
                break
            await asyncio.sleep(0.01)
        assert Counter.cancelled == 2


async def test_a_handler_waits_at_yield_while_its_caller_lags():
    async with LocalRuntime([Counter]) as rt:
        stream = rt.stream("counter", Count(5000))
        assert await anext(stream) == 0
        for _ in range(3000):  # let the handler run as far as the buffer lets it
            await asyncio.sleep(0)
        produced = Counter.yielded
        assert MAX_BUFFERED <= produced <= MAX_BUFFERED + 2  # not the 5000 it would yield
        rest = [x async for x in stream]
        assert rest == list(range(1, 5000))  # nothing lost or reordered by the waits


async def test_a_full_mailbox_refuses_a_stream_with_backpressure():
    Counter.gate = asyncio.Queue()  # nothing released: the first stream holds the only worker
    cfg = _config(mailbox_size=1, max_concurrency=1)
    async with LocalRuntime([Counter], config=cfg) as rt:
        first = rt.stream("counter", Count(1))
        running = asyncio.ensure_future(anext(first))
        await asyncio.sleep(0.05)
        queued = rt.stream("counter", Count(1))
        waiting = asyncio.ensure_future(anext(queued))
        await asyncio.sleep(0.05)
        with pytest.raises(Backpressure):
            await anext(rt.stream("counter", Count(1)))
        Counter.gate.put_nowait(None)
        Counter.gate.put_nowait(None)
        assert await running == 0 and await waiting == 0
        await first.aclose()
        await queued.aclose()


async def test_the_assistant_streams_tokens_then_its_reply_with_usage():
    model = ScriptedModel(["one two three"], cycle=True)
    async with LocalRuntime([Assistant], {"default": model}) as rt:
        chat = ChatRequest([{"role": "user", "content": "q"}], stream=True)
        *tokens, reply = [x async for x in rt.stream("assistant", chat)]
        assert tokens == ["one", " two", " three"]
        assert isinstance(reply, ModelReply) and reply.usage == Usage(1, 3)
        # a caller that does not stream gets the whole reply from one chat call
        (whole,) = await rt.send("assistant", ChatRequest([{"role": "user", "content": "q"}]))
        assert whole.text == "one two three"
    assert [c.kind for c in model.calls] == ["stream", "chat"]


def _fold(items: list[object]) -> list[tuple[str, int, str | None, Usage | None]]:
    fold = ChatFold("agent:x")
    out = [d for item in items for d in fold.deltas(item)] + fold.end()
    return [(d.text, d.index, d.finish_reason, d.usage) for d in out]


def test_chat_fold_streams_text_and_takes_usage_from_the_closing_reply():
    closing = ModelReply("a b", "tiny", "length", Usage(2, 2))
    assert _fold(["a", " b", closing]) == [
        ("a", 0, None, None),
        (" b", 0, None, None),
        ("", 0, "length", Usage(2, 2)),
    ]
    # a reply alone is the whole answer: its text is sent, every choice
    assert _fold([ModelReply("x", "tiny", choices=("x", "y"))]) == [
        ("x", 0, None, None),
        ("y", 1, None, None),
        ("", 0, "stop", None),
        ("", 1, "stop", Usage()),
    ]
    # other messages are their JSON; nothing at all is an empty answer that stopped
    assert _fold([{"k": 1}]) == [('{"k": 1}', 0, None, None), ("", 0, "stop", Usage())]
    assert _fold([]) == [("", 0, "stop", Usage())]


class Relay(Agent):
    """Passes a model stream on unread; the stream describes itself as a Handoff."""

    model = "default"
    generated = 0

    @handler
    async def chat(self, msg: ChatRequest, ctx: Context) -> AsyncIterator[object]:
        yield TextStream(_words(), Handoff("default", msg.messages, msg.params, None))
        yield "after"


async def _words():
    Relay.generated += 1
    yield "one"
    yield " two"
    yield ModelReply("one two", "default", usage=Usage(1, 2))


async def test_a_yielded_stream_passes_its_items_on_unless_the_caller_runs_it_itself():
    model = ScriptedModel(["one two"], cycle=True)
    chat = ChatRequest([{"role": "user", "content": "q"}], {"seed": 1}, stream=True)
    Relay.generated = 0
    async with LocalRuntime([Relay], {"default": model}) as rt:
        *tokens, reply, after = [x async for x in rt.stream("relay", chat)]
        assert tokens == ["one", " two"] and reply.text == "one two" and after == "after"
        # a caller that runs model streams itself gets the description, and the model is
        # never called by the agent
        ex = rt._agents["relay"]
        out = ex.stream(codec.encode(chat), None, None, "interactive", accepts_handoff=True)
        items = [codec.decode(raw) async for batch in out.batches() for raw in batch]
        assert items == [Handoff("default", chat.messages, {"seed": 1}), "after"]
        assert Relay.generated == 1  # only for the first caller
        # ... and runs it: the same items as the agent would have passed on
        ran = [x async for x in run_handoffs(_aiter(items), {"default": model})]
        assert ran[:2] == ["one", " two"] and ran[2].text == "one two" and ran[3] == "after"
        assert [c.kind for c in model.calls] == ["stream"]


async def _aiter(items):
    for item in items:
        yield item
