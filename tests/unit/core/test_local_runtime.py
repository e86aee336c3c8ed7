"""LocalRuntime: send, publish, submit, state, backpressure, cancellation, shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from agents import (
    Agent,
    Backpressure,
    Context,
    HandlerError,
    MessageEncodeError,
    MessageTooLarge,
    NoHandler,
    RuntimeClosed,
    SendTimeout,
    TaskNotFound,
    TaskState,
    UnknownAgent,
    UnknownModel,
    UnknownQueue,
    UnknownTopic,
    handler,
)
from agents.testing import ScriptedModel
from runtime import LocalRuntime, RaygentConfig
from runtime.config import AgentConfig, LimitsConfig, QueuesConfig


@dataclass
class Question:
    text: str


@dataclass
class Block:
    """Handler waits on a per-test event (held by the agent class)."""

    tag: str


class Assistant(Agent):
    @handler
    async def answer(self, msg: Question, ctx: Context) -> str:
        reply = await ctx.llm.chat([{"role": "user", "content": msg.text}], max_tokens=8)
        await ctx.publish("answers", {"q": msg.text, "a": reply.text})
        return reply.text


class Listener(Agent):
    model = None

    @handler(topic="answers")
    async def on_answer(self, msg: dict, ctx: Context) -> None:
        await ctx.state.set("heard", [*ctx.state.get("heard", []), msg["a"]])


class Counter(Agent):
    model = None

    @handler(topic="answers")
    async def on_answer(self, msg: dict, ctx: Context) -> None:
        await ctx.state.set("counted", ctx.state.get("counted", 0) + 1)


def test_the_issue_example_shape():
    async def main():
        async with LocalRuntime(
            agents=[Assistant, Listener, Counter], models={"default": ScriptedModel(["hi there"])}
        ) as rt:
            assert await rt.send("assistant", Question("hello?")) == "hi there"

    asyncio.run(main())


async def test_publish_reaches_every_subscriber_once():
    model = ScriptedModel(["one", "two"])
    async with LocalRuntime([Assistant, Listener, Counter], {"default": model}) as rt:
        await rt.send("assistant", Question("a"))
        await rt.send("assistant", Question("b"))
        await rt.shutdown()  # drains the topic deliveries
        assert rt.state["heard"] == ["one", "two"]
        assert rt.state["counted"] == 2
    assert [c.prompt for c in model.calls] == [
        [{"role": "user", "content": "a"}],
        [{"role": "user", "content": "b"}],
    ]


async def test_unknown_agent_topic_queue_and_type_are_typed_errors():
    async with LocalRuntime([Assistant, Listener], {"default": ScriptedModel(["x"])}) as rt:
        with pytest.raises(UnknownAgent, match="'nobody'.*assistant"):
            await rt.send("nobody", Question("q"))
        with pytest.raises(NoHandler, match="assistant.*float"):
            await rt.send("assistant", 1.5)
        with pytest.raises(UnknownTopic, match="'nothing'.*answers"):
            await rt.publish("nothing", {})
        with pytest.raises(NoHandler, match="listener"):
            await rt.publish("answers", "not a dict")
        with pytest.raises(UnknownQueue):
            await rt.submit("jobs", {})
        with pytest.raises(MessageEncodeError):
            await rt.send("assistant", Question(object()))


async def test_agent_without_configured_model_gets_unknown_model():
    async with LocalRuntime([Assistant, Listener]) as rt:
        with pytest.raises(UnknownModel, match="'default'"):
            await rt.send("assistant", Question("q"))


class Failing(Agent):
    model = None

    @handler
    async def boom(self, msg: str, ctx: Context) -> str:
        if msg == "agent-error":
            await ctx.send("nobody", "x")
        raise ValueError(f"bad input {msg}")

    @handler
    async def unencodable(self, msg: int, ctx: Context) -> object:
        return object()


async def test_handler_errors_are_typed_and_the_agent_keeps_serving():
    async with LocalRuntime([Failing]) as rt:
        with pytest.raises(HandlerError) as e:
            await rt.send("failing", "x")
        assert e.value.agent == "failing" and e.value.cause_type == "ValueError"
        assert "bad input x" in str(e.value)
        # An SDK error from inside the handler passes through unchanged.
        with pytest.raises(UnknownAgent):
            await rt.send("failing", "agent-error")
        with pytest.raises(MessageEncodeError, match="reply of failing.unencodable"):
            await rt.send("failing", 3)
        with pytest.raises(HandlerError):
            await rt.send("failing", "still serving")


class Gate(Agent):
    """Blocks each message until released; records starts and cancellations."""

    model = None
    release = None  # set per test
    started: list
    cancelled: list

    async def on_start(self, ctx: Context) -> None:
        Gate.started, Gate.cancelled = [], []

    @handler
    async def wait(self, msg: Block, ctx: Context) -> str:
        Gate.started.append(msg.tag)
        try:
            await Gate.release.wait()
        except asyncio.CancelledError:
            Gate.cancelled.append(msg.tag)
            raise
        return msg.tag


def gate_config(mailbox_size: int, max_concurrency: int = 1) -> RaygentConfig:
    path = f"{Gate.__module__}:{Gate.__qualname__}"
    return RaygentConfig(
        agents=[
            AgentConfig(
                import_path=path, mailbox_size=mailbox_size, max_concurrency=max_concurrency
            )
        ]
    )


async def until(predicate):
    """Yield to the loop until handlers reach a point (bounded by the test timeout)."""
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(0)


async def test_full_mailbox_raises_backpressure_and_loses_nothing_accepted():
    Gate.release = asyncio.Event()
    async with LocalRuntime([Gate], config=gate_config(mailbox_size=2)) as rt:
        first = asyncio.create_task(rt.send("gate", Block("running")))
        await until(lambda: Gate.started == ["running"])
        queued = [asyncio.create_task(rt.send("gate", Block(f"q{i}"))) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Backpressure) as e:
            await rt.send("gate", Block("rejected"))
        assert e.value.retryable and e.value.agent == "gate" and e.value.capacity == 2
        Gate.release.set()
        assert await asyncio.gather(first, *queued) == ["running", "q0", "q1"]
        assert "rejected" not in Gate.started


async def test_send_timeout_cancels_the_handler():
    Gate.release = asyncio.Event()
    async with LocalRuntime([Gate], config=gate_config(mailbox_size=4)) as rt:
        with pytest.raises(SendTimeout, match="within 0.05s") as e:
            await rt.send("gate", Block("slow"), timeout_s=0.05)
        assert e.value.retryable
        await until(lambda: Gate.cancelled == ["slow"])


async def test_cancelling_the_caller_cancels_the_handler():
    Gate.release = asyncio.Event()
    async with LocalRuntime([Gate], config=gate_config(mailbox_size=4)) as rt:
        call = asyncio.create_task(rt.send("gate", Block("c")))
        await until(lambda: Gate.started == ["c"])
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: Gate.cancelled == ["c"])


async def test_caller_that_gave_up_while_queued_is_never_run():
    Gate.release = asyncio.Event()
    async with LocalRuntime([Gate], config=gate_config(mailbox_size=4)) as rt:
        running = asyncio.create_task(rt.send("gate", Block("first")))
        await until(lambda: Gate.started == ["first"])
        with pytest.raises(SendTimeout):
            await rt.send("gate", Block("queued"), timeout_s=0.01)
        Gate.release.set()
        assert await running == "first"
        assert await rt.send("gate", Block("after")) == "after"
        assert Gate.started == ["first", "after"]


async def test_shutdown_drains_then_refuses_and_is_idempotent():
    Gate.release = asyncio.Event()
    rt = LocalRuntime([Gate], config=gate_config(mailbox_size=4))
    await rt.start()
    pending = [asyncio.create_task(rt.send("gate", Block(str(i)))) for i in range(3)]
    await until(lambda: len(Gate.started) == 1)
    stopping = asyncio.create_task(rt.shutdown(timeout_s=5))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeClosed):
        await rt.send("gate", Block("late"))
    Gate.release.set()
    await stopping
    assert await asyncio.gather(*pending) == ["0", "1", "2"]
    await rt.shutdown()  # second call is a no-op


async def test_shutdown_timeout_fails_the_stuck_callers_with_runtime_closed():
    Gate.release = asyncio.Event()  # never set
    rt = LocalRuntime([Gate], config=gate_config(mailbox_size=4))
    await rt.start()
    stuck = asyncio.create_task(rt.send("gate", Block("stuck")))
    queued = asyncio.create_task(rt.send("gate", Block("queued")))
    await until(lambda: Gate.started == ["stuck"])
    await rt.shutdown(timeout_s=0.01)
    for call in (stuck, queued):
        with pytest.raises(RuntimeClosed):
            await call
    assert Gate.cancelled == ["stuck"] and Gate.started == ["stuck"]


class Lifecycle(Agent):
    model = None
    events: list = []

    async def on_start(self, ctx: Context) -> None:
        Lifecycle.events.append("start")
        await ctx.state.set("started_by", ctx.agent)

    async def on_stop(self, ctx: Context) -> None:
        Lifecycle.events.append("stop")

    @handler
    async def ping(self, msg: str, ctx: Context) -> str:
        return "pong"


class BrokenStart(Agent):
    model = None

    async def on_start(self, ctx: Context) -> None:
        raise RuntimeError("cannot start")


async def test_lifecycle_hooks_and_failed_start_cleans_up():
    Lifecycle.events = []
    async with LocalRuntime([Lifecycle]) as rt:
        assert rt.state["started_by"] == "lifecycle"
        assert await rt.send("lifecycle", "ping") == "pong"
    assert Lifecycle.events == ["start", "stop"]

    Lifecycle.events = []
    rt = LocalRuntime([Lifecycle, BrokenStart])
    with pytest.raises(RuntimeError, match="cannot start"):
        await rt.start()
    assert Lifecycle.events == ["start", "stop"]
    with pytest.raises(RuntimeClosed):
        await rt.send("lifecycle", "ping")


@dataclass
class Job:
    n: int


class Worker(Agent):
    model = None
    attempts: dict = {}

    @handler(queue="jobs")
    async def run(self, msg: Job, ctx: Context) -> int:
        Worker.attempts[msg.n] = Worker.attempts.get(msg.n, 0) + 1
        if msg.n < 0:
            raise ValueError("negative")
        if msg.n == 0 and Worker.attempts[0] < 2:
            raise ConnectionError("flaky once")
        return msg.n * 2


class Submitter(Agent):
    model = None

    @handler
    async def go(self, msg: Job, ctx: Context) -> str:
        return await ctx.submit("jobs", msg)


async def test_submit_runs_tasks_retries_and_dead_letters():
    Worker.attempts = {}
    cfg = RaygentConfig(agents=[], queues=QueuesConfig(max_attempts=3))
    async with LocalRuntime([Worker, Submitter], config=cfg) as rt:
        ok = await rt.send("submitter", Job(21))
        flaky = await rt.submit("jobs", Job(0))
        dead = await rt.submit("jobs", Job(-1))
        done = await rt.wait_task(ok, timeout_s=5)
        assert done.state is TaskState.DONE and done.result == 42 and done.attempts == 1
        retried = await rt.wait_task(flaky, timeout_s=5)
        assert retried.state is TaskState.DONE and retried.attempts == 2
        failed = await rt.wait_task(dead, timeout_s=5)
        assert failed.state is TaskState.DEAD and failed.attempts == 3
        assert "HandlerError" in failed.error and "negative" in failed.error
        assert (await rt.task(ok)).queue == "jobs"
        with pytest.raises(TaskNotFound):
            await rt.task("nope")
        with pytest.raises(NoHandler):
            await rt.submit("jobs", "not a job")


async def test_state_is_shared_copied_on_read_and_checked_on_write():
    async with LocalRuntime([Lifecycle]) as rt:
        await rt.state.set("cfg", {"items": [1]})
        got = rt.state["cfg"]
        got["items"].append(2)  # a copy: shared state unchanged
        assert rt.state["cfg"] == {"items": [1]}
        assert "cfg" in rt.state and len(rt.state) == 2 and set(rt.state) == {"cfg", "started_by"}
        await rt.state.delete("cfg")
        assert "cfg" not in rt.state and rt.state.get("cfg") is None
        with pytest.raises(MessageEncodeError):
            await rt.state.set("bad", object())
        with pytest.raises(TypeError, match="await ctx.state.set"):
            rt.state["x"] = 1
        with pytest.raises(TypeError, match="non-empty"):
            await rt.state.set("", 1)


class Mixed(Agent):
    """Serves tasks (background) and questions (interactive), one at a time, logging which."""

    model = None
    log: list

    async def on_start(self, ctx: Context) -> None:
        Mixed.log = []

    @handler(queue="mixed")
    async def task(self, msg: Job, ctx: Context) -> None:
        Mixed.log.append("task")
        await asyncio.sleep(0.001)

    @handler
    async def ask(self, msg: Question, ctx: Context) -> None:
        Mixed.log.append("ask")
        await asyncio.sleep(0.001)


async def test_a_task_backlog_leaves_room_for_interactive_sends_and_the_share_holds():
    """A deep backlog does not fill the mailbox (a claimer pulls only what the workers can
    start), so interactive sends are never refused by it, and while both wait they get the
    configured share of the worker."""
    cfg = RaygentConfig(
        agents=[AgentConfig(import_path=f"{__name__}:Mixed", mailbox_size=8, max_concurrency=1)]
    )
    async with LocalRuntime([Mixed], config=cfg) as rt:
        for i in range(200):
            await rt.submit("mixed", Job(i))
        await until(lambda: len(Mixed.log) >= 3)  # the worker is busy on tasks
        ex = rt._agents["mixed"]
        assert ex.mailbox.depth("background") <= 1
        assert await ex.backlog() >= 190  # the rest waits in the queue, for any replica

        async def client() -> None:  # a closed loop that keeps one question queued
            for _ in range(25):
                await rt.send("mixed", Question("q"))  # Backpressure here fails the test

        start = len(Mixed.log)
        await asyncio.gather(*(client() for _ in range(4)))
        contested = Mixed.log[start:]
        share = contested.count("ask") / len(contested)
        assert contested.count("ask") == 100
        assert 0.6 <= share <= 0.8, share  # configured: 0.7 (AgentConfig.interactive_share)


async def test_message_size_limit_is_enforced_before_queueing():
    cfg = RaygentConfig(agents=[], limits=LimitsConfig(max_message_bytes=1024))
    async with LocalRuntime([Lifecycle], config=cfg) as rt:
        with pytest.raises(MessageTooLarge, match="max_message_bytes"):
            await rt.send("lifecycle", "x" * 2000)
        with pytest.raises(MessageTooLarge):
            await rt.state.set("big", b"x" * 2000)
        assert await rt.send("lifecycle", "small") == "pong"


class Relay(Agent):
    model = None

    @handler
    async def relay(self, msg: str, ctx: Context) -> str:
        ctx.span.set_attribute("relay.msg", msg)
        return await ctx.send("lifecycle", msg)


async def test_trace_context_flows_from_caller_through_agents():
    from agents import TraceContext

    parent = TraceContext.new_root()
    async with LocalRuntime([Relay, Lifecycle]) as rt:
        assert await rt.send("relay", "x", trace=parent) == "pong"
        spans = {s.name: s for s in rt.spans}
    relay, ping = spans["relay.relay"], spans["lifecycle.ping"]
    assert relay.context.trace_id == ping.context.trace_id == parent.trace_id
    assert relay.parent_span_id == parent.span_id
    assert ping.parent_span_id == relay.context.span_id
    assert relay.attributes["relay.msg"] == "x"


async def test_local_runtime_honours_the_runtime_protocol():
    from agents import Runtime

    async with LocalRuntime([Lifecycle]) as rt:
        assert isinstance(rt, Runtime)
        assert rt.agents == ["lifecycle"]


class Chatty(Agent):
    model = None

    @handler
    async def say(self, msg: str, ctx: Context) -> None:
        ctx.logger.info("saying %s", msg)


async def test_ctx_logger_tags_records_with_agent_and_trace(caplog):
    import logging

    from agents import TraceContext

    parent = TraceContext.new_root()
    with caplog.at_level(logging.INFO, logger="raygent.agent.chatty"):
        async with LocalRuntime([Chatty]) as rt:
            await rt.send("chatty", "hi", trace=parent)
    (record,) = [r for r in caplog.records if r.name == "raygent.agent.chatty"]
    assert record.getMessage() == "saying hi"
    assert record.agent == "chatty" and record.trace_id == parent.trace_id
