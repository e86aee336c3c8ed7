"""Agents used by the Ray runtime tests. A module of its own so Ray workers can import it
(the session fixture puts this directory on the workers' PYTHONPATH)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agents import Agent, ChatRequest, Context, ModelReply, Usage, handler


@dataclass
class Ping:
    n: int


@dataclass
class Hold:
    """Handler holds until state key ``release`` is true; records cancellation in state.

    Each test names its own key: deleting a key reaches the replicas asynchronously, so a
    key reused from an earlier test could still read true there.
    """

    tag: str
    release: str = "release"


@dataclass
class Count:
    """Echo streams ``0 .. n-1``, pausing ``pause_s`` after each; raises instead of yielding
    ``fail_at``; records ``cancelled:<tag>`` in state when its caller gives up."""

    n: int
    pause_s: float = 0.0
    fail_at: int = -1
    tag: str = ""


@dataclass
class Note:
    text: str


@dataclass
class Burst:
    """Echo publishes ``n`` notes ``<tag>:0 .. <tag>:n-1`` on ``notes`` as fast as it can."""

    n: int
    tag: str


@dataclass
class Heard:
    """Listener answers the notes it handled that start with ``prefix``, in handling order."""

    prefix: str


@dataclass
class Where:
    """Listener answers where it runs: its Ray node and its process."""


@dataclass
class Job:
    n: int
    data: str = ""


class Echo(Agent):
    model = None

    @handler
    async def burst(self, msg: Burst, ctx: Context) -> int:
        for i in range(msg.n):
            await ctx.publish("notes", Note(f"{msg.tag}:{i}"))
        return msg.n

    async def on_start(self, ctx: Context) -> None:
        await ctx.state.set(f"started:{os.getpid()}", True)

    @handler
    async def ping(self, msg: Ping, ctx: Context) -> dict:
        return {"n": msg.n, "pid": os.getpid()}

    @handler
    async def relay(self, msg: Note, ctx: Context) -> str:
        """Send to the listener's direct handler and publish on notes: tracing + pub/sub."""
        ctx.span.set_attribute("relay.text", msg.text)
        await ctx.publish("notes", msg)
        return await ctx.send("listener", Ping(len(msg.text)))

    @handler
    async def fail(self, msg: str, ctx: Context) -> str:
        raise ValueError(f"bad {msg}")

    @handler
    async def hold(self, msg: Hold, ctx: Context) -> str:
        try:
            while not ctx.state.get(msg.release):  # noqa: ASYNC110 - polls shared state
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            await ctx.state.set(f"cancelled:{msg.tag}", True)
            raise
        return msg.tag

    @handler
    async def count(self, msg: Count, ctx: Context) -> AsyncIterator[int]:
        try:
            for i in range(msg.n):
                if i == msg.fail_at:
                    raise ValueError(f"count failed at {i}")
                yield i
                await asyncio.sleep(msg.pause_s)
        except asyncio.CancelledError:
            if msg.tag:
                await ctx.state.set(f"cancelled:{msg.tag}", True)
            raise

    @handler
    async def set_state(self, msg: dict, ctx: Context) -> None:
        await ctx.state.update(msg)

    @handler
    async def submit(self, msg: Job, ctx: Context) -> str:
        return await ctx.submit("jobs", msg)


class Listener(Agent):
    model = None

    def __init__(self) -> None:
        self._heard: list[str] = []

    @handler
    async def heard(self, msg: Heard, ctx: Context) -> list[str]:
        return [t for t in self._heard if t.startswith(msg.prefix)]

    @handler(topic="notes")
    async def on_note(self, msg: Note, ctx: Context) -> None:
        self._heard.append(msg.text)
        await ctx.state.set(f"heard:{msg.text}", ctx.state.get(f"heard:{msg.text}", 0) + 1)

    @handler
    async def ping(self, msg: Ping, ctx: Context) -> int:
        return msg.n * 10

    @handler
    async def relay_count(self, msg: Count, ctx: Context) -> AsyncIterator[int]:
        """Streams echo's count on, times ten: a stream that calls a stream."""
        async for i in ctx.stream("echo", msg):
            yield i * 10

    @handler
    async def whereabouts(self, msg: Where, ctx: Context) -> dict:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    @handler
    async def where(self, msg: str, ctx: Context) -> dict:
        return {"pid": os.getpid(), "state": {k: ctx.state[k] for k in ctx.state}}


class Worker(Agent):
    model = None

    @handler(queue="jobs")
    async def run(self, msg: Job, ctx: Context) -> int:
        if msg.n < 0:
            raise ValueError("negative job")
        return msg.n * 2


class Tap(Agent):
    """A second subscriber of ``notes`` (placed beside or away from the publisher)."""

    model = None

    @handler(topic="notes")
    async def on_note(self, msg: Note, ctx: Context) -> None:
        await ctx.state.set(f"tapped:{msg.text}", os.getpid())

    @handler
    async def look(self, msg: str, ctx: Context) -> object:
        return ctx.state.get(msg)


class SlowWorker(Agent):
    """Serves ``slow``: announces itself in state, then works until state ``fast`` is set."""

    model = None

    @handler(queue="slow")
    async def run(self, msg: Job, ctx: Context) -> dict:
        await ctx.state.set(f"running:{msg.n}:{os.getpid()}", True)
        while not ctx.state.get("fast"):  # noqa: ASYNC110 - polls shared state
            await asyncio.sleep(0.02)
        done = ctx.state.get(f"done:{msg.n}", 0) + 1
        await ctx.state.set(f"done:{msg.n}", done)
        return {"n": msg.n, "pid": os.getpid()}


@dataclass
class Turn:
    """One piece of ``Crawler`` work, ``work_s`` long; ``tag`` names who asked."""

    tag: str
    work_s: float = 0.02


class Crawler(Agent):
    """Serves the ``crawl`` queue and direct ``Turn`` calls alike (test config: one at a
    time, queue-depth autoscaling). Answers its replica's pid and the turn's place in that
    replica's order of work, so a test can see which class the mailbox served when."""

    model = None
    served = 0  # per process: per replica

    @handler(queue="crawl")
    async def crawl(self, msg: Turn, ctx: Context) -> dict:
        return await self._serve(msg)

    @handler
    async def turn(self, msg: Turn, ctx: Context) -> dict:
        return await self._serve(msg)

    async def _serve(self, msg: Turn) -> dict:
        Crawler.served += 1
        seq = Crawler.served
        await asyncio.sleep(msg.work_s)
        return {"pid": os.getpid(), "seq": seq, "tag": msg.tag}


class Flaky(Agent):
    """Answers chats only once shared state ``flaky_ok`` is true; fails before that (the
    gateway must not cache the failure)."""

    model = None

    @handler
    async def chat(self, msg: ChatRequest, ctx: Context) -> str:
        if not ctx.state.get("flaky_ok"):
            raise RuntimeError("not yet")
        return "ok: " + msg.messages[-1]["content"]


class Words(Agent):
    """Streams the last chat turn back word by word, ending with its usage (words in, out)."""

    model = None

    @handler
    async def chat(self, msg: ChatRequest, ctx: Context) -> AsyncIterator[str | ModelReply]:
        words = msg.messages[-1]["content"].split(" ")
        for i, w in enumerate(words):
            yield w if i == 0 else " " + w
            await asyncio.sleep(0.05)
        yield ModelReply(" ".join(words), "words", "stop", Usage(len(words), len(words)))


STOP_MARKS = Path(tempfile.gettempdir()) / "raygent-test-on-stop"
"""Where :class:`Stopper` replicas record that their ``on_stop`` ran (one file per process)."""


class Stopper(Agent):
    """Records its ``on_stop`` in :data:`STOP_MARKS` (the replica's drain reached it)."""

    model = None

    @handler
    async def ping(self, msg: Ping, ctx: Context) -> int:
        return msg.n

    async def on_stop(self, ctx: Context) -> None:
        STOP_MARKS.mkdir(exist_ok=True)
        (STOP_MARKS / f"{os.getpid()}").write_text("stopped")
