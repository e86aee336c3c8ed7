"""``LocalRuntime``: every agent on one asyncio loop, no Ray — for unit tests and notebooks.

It honours the same contract as the Ray runtime (``agents.Runtime``) and keeps the properties that
make an agent that passes here work there:

* every message, reply, task and state value is encoded and decoded with ``agents.codec``, so a
  value that could not cross a process boundary fails here too;
* each agent has a bounded two-class :class:`~runtime.core.mailbox.Mailbox` and ``max_concurrency``
  workers; a full mailbox raises ``Backpressure`` at once, never queues without bound;
* a caller that times out or is cancelled cancels the handler (``CancelledError`` at its await);
* trace context flows from caller to handler span to the handler's own sends.

One instance per agent (one "replica"); replicas, restarts and shared memory are the Ray
runtime's business.

Example:
    >>> import asyncio
    >>> from agents import Agent, Context, handler
    >>> from agents.testing import ScriptedModel
    >>> class Assistant(Agent):
    ...     @handler
    ...     async def answer(self, msg: str, ctx: Context) -> str:
    ...         return (await ctx.llm.chat([{"role": "user", "content": msg}])).text
    >>> async def main():
    ...     async with LocalRuntime([Assistant], {"default": ScriptedModel(["hi there"])}) as rt:
    ...         return await rt.send("assistant", "hello?")
    >>> asyncio.run(main())
    'hi there'
"""

from __future__ import annotations

import asyncio
import collections
import logging
import typing
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from agents import Agent, codec
from agents.errors import (
    Backpressure,
    MessageEncodeError,
    MessageTooLarge,
    RuntimeClosed,
    SendTimeout,
    UnknownAgent,
    UnknownQueue,
    UnknownTopic,
)
from agents.handlers import HandlerInfo
from agents.model import ModelClient
from agents.runtime_api import Priority, SharedState, TaskInfo
from agents.tracing import RecordingSpan, TraceContext
from runtime.config import AgentConfig, RaygentConfig
from runtime.core.executor import AgentExecutor, context_factory
from runtime.core.streaming import decoded
from runtime.queues import InProcessTaskQueue, QueueFull, TaskQueue

__all__ = ["LocalRuntime"]

log = logging.getLogger(__name__)


class _LocalState(SharedState):
    """Shared state of a LocalRuntime: one dict of encoded values."""

    def __init__(self, max_value_bytes: int) -> None:
        self._data: dict[str, bytes] = {}
        self._max = max_value_bytes

    def _raw(self) -> Mapping[str, bytes]:
        return self._data

    async def _write(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._data.pop(key, None)
            return
        if len(value) > self._max:
            raise MessageTooLarge(f"state value {key!r}", len(value), self._max)
        self._data[key] = value


def settings_for(config: RaygentConfig, cls: type[Agent]) -> AgentConfig:
    """The config entry whose ``import_path`` names ``cls``, or the defaults."""
    path = f"{cls.__module__}:{cls.__qualname__}"
    for entry in config.agents:
        if entry.import_path == path:
            return entry
    return AgentConfig(import_path=path)


def encode_checked(value: Any, what: str, max_bytes: int) -> bytes:
    """Encode a message for transport, naming ``what`` in errors and enforcing the size limit."""
    try:
        data = codec.encode(value)
    except MessageEncodeError as exc:
        raise MessageEncodeError(f"{what}: {exc}") from exc
    if len(data) > max_bytes:
        raise MessageTooLarge(what, len(data), max_bytes)
    return data


async def put_task(
    tasks: TaskQueue,
    queue: str,
    task: Any,
    workers: Sequence[type[Agent]],
    known_queues: Sequence[str],
    trace: TraceContext | None,
    max_bytes: int,
) -> str:
    """Check and queue a task (both runtimes' ``submit``): the queue must have workers, every
    worker must take the task's type, the encoded task must fit; a full queue is
    ``Backpressure``."""
    if not workers:
        raise UnknownQueue(queue, list(known_queues))
    for cls in workers:
        cls.routes().find("queue", queue, task)
    payload = encode_checked(task, f"task {type(task).__name__} for queue {queue!r}", max_bytes)
    try:
        return await tasks.put(queue, payload, trace or TraceContext.new_root())
    except QueueFull:
        raise Backpressure(f"queue:{queue}", tasks.max_pending) from None


class LocalRuntime:
    """Run agents in-process. Use as ``async with LocalRuntime(...) as rt:``.

    Args:
        agents: agent classes; names must be unique.
        models: model clients by name (``ctx.llm`` of an agent is ``models[agent.model]``).
        config: settings per agent (matched by ``import_path``), queue and message limits;
            default: ``RaygentConfig`` defaults.
        drain_timeout_s: how long ``shutdown`` lets queued messages finish.
        task_queue: where ``submit`` puts tasks; default an in-process queue (pass
            ``runtime.queues.make_task_queue(config)`` for the configured Redis Streams one).
    """

    def __init__(
        self,
        agents: Sequence[type[Agent]],
        models: Mapping[str, ModelClient] | None = None,
        *,
        config: RaygentConfig | None = None,
        drain_timeout_s: float = 5.0,
        task_queue: TaskQueue | None = None,
    ) -> None:
        self._config = config or RaygentConfig(agents=[])
        self._models = dict(models or {})
        self._classes = list(agents)
        names = [c.name for c in self._classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"agent names must be unique; repeated: {dupes}")
        self._drain_timeout_s = drain_timeout_s
        self._max_bytes = self._config.limits.max_message_bytes
        self._state = _LocalState(self._max_bytes)
        self._tasks = task_queue or InProcessTaskQueue(
            max_pending=self._config.queues.max_pending,
            max_attempts=self._config.queues.max_attempts,
        )
        self._agents: dict[str, AgentExecutor] = {}
        self._subscribers: dict[str, list[AgentExecutor]] = collections.defaultdict(list)
        self._workers_of: dict[str, list[AgentExecutor]] = collections.defaultdict(list)
        self._progress = asyncio.Event()
        self._phase: Literal["new", "running", "closing", "closed"] = "new"
        self._closed = asyncio.Event()
        self.spans: collections.deque[RecordingSpan] = collections.deque(maxlen=10_000)
        """Finished handler spans, newest last (for tests and debugging)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> LocalRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Create every agent, run its ``on_start``, start workers. If an ``on_start`` raises,
        the agents already started are stopped and the error propagates."""
        if self._phase != "new":
            raise RuntimeClosed("a LocalRuntime starts once")
        self._phase = "running"
        try:
            for cls in self._classes:
                await self._start_agent(cls)
        except BaseException:
            await self.shutdown(timeout_s=0)
            raise

    async def _start_agent(self, cls: type[Agent]) -> None:
        settings = settings_for(self._config, cls)
        make_context = context_factory(cls, settings, self, self._models)
        ex = AgentExecutor(
            cls, settings, make_context, self._tasks, self.spans.append, progress=self._progress
        )
        await ex.start()
        self._agents[cls.name] = ex
        routes = cls.routes()
        for topic in routes.keys("topic"):
            self._subscribers[topic].append(ex)
        for queue in routes.keys("queue"):
            self._workers_of[queue].append(ex)

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Refuse new work, let queued messages finish for up to ``timeout_s`` (default: the
        constructor's ``drain_timeout_s``), then cancel what is left (callers get
        ``RuntimeClosed``) and run every ``on_stop``. Safe to call twice."""
        if self._phase in ("closing", "closed"):
            await self._closed.wait()
            return
        self._phase = "closing"
        try:
            executors = list(self._agents.values())
            for ex in executors:
                await ex.stop_claiming()
            await self._drain(executors, self._drain_timeout_s if timeout_s is None else timeout_s)
            for ex in executors:
                await ex.stop()
            await self._tasks.close()
        finally:
            self._phase = "closed"
            self._closed.set()

    async def _drain(self, executors: list[AgentExecutor], timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (busy := sum(ex.busy() for ex in executors)) and loop.time() < deadline:
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        if busy:
            log.warning(
                "shutdown: %d messages still queued or running after %.1fs; cancelling",
                busy,
                timeout_s,
            )

    # -- the Runtime protocol ----------------------------------------------------------------

    @property
    def state(self) -> SharedState:
        return self._state

    @property
    def agents(self) -> list[str]:
        """Names of the running agents."""
        return sorted(self._agents)

    async def send(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> Any:
        ex, handler, payload = self._request(agent, msg)
        fut = ex.send(payload, handler, trace, priority)
        try:
            # a send's reply is always encoded bytes (None is only a stream's, sent elsewhere)
            return codec.decode(typing.cast(bytes, await asyncio.wait_for(fut, timeout_s)))
        except asyncio.TimeoutError:
            # wait_for cancelled fut; its done-callback cancels the handler if it started.
            raise SendTimeout(agent, type(msg).__name__, timeout_s or 0.0) from None

    async def stream(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> AsyncIterator[Any]:
        ex, handler, payload = self._request(agent, msg)
        reply = ex.stream(payload, handler, trace, priority)
        async for item in decoded(reply.batches(), agent, type(msg).__name__, timeout_s):
            yield item

    def _request(self, agent: str, msg: Any) -> tuple[AgentExecutor, HandlerInfo, bytes]:
        """The target's executor, its handler for ``msg``, and ``msg`` encoded (checked)."""
        self._check_open()
        ex = self._agents.get(agent)
        if ex is None:
            raise UnknownAgent(agent, list(self._agents))
        handler = ex.cls.routes().find("direct", None, msg)
        what = f"message {type(msg).__name__} to {agent!r}"
        return ex, handler, encode_checked(msg, what, self._max_bytes)

    async def publish(self, topic: str, msg: Any, *, trace: TraceContext | None = None) -> None:
        self._check_open()
        subs = self._subscribers.get(topic)
        if not subs:
            raise UnknownTopic(topic, list(self._subscribers))
        handlers = [(ex, ex.cls.routes().find("topic", topic, msg)) for ex in subs]
        what = f"message {type(msg).__name__} on topic {topic!r}"
        payload = encode_checked(msg, what, self._max_bytes)
        # All or nothing: check every mailbox before putting into any.
        for ex, _ in handlers:
            if ex.mailbox.full():
                raise Backpressure(ex.name, ex.mailbox.capacity)
        for ex, handler in handlers:
            ex.deliver(topic, payload, handler, trace)

    async def submit(self, queue: str, task: Any, *, trace: TraceContext | None = None) -> str:
        self._check_open()
        workers = [ex.cls for ex in self._workers_of.get(queue, ())]
        return await put_task(
            self._tasks, queue, task, workers, list(self._workers_of), trace, self._max_bytes
        )

    async def task(self, task_id: str) -> TaskInfo:
        return await self._tasks.info(task_id)

    async def wait_task(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        return await self._tasks.wait(task_id, timeout_s)

    def _check_open(self) -> None:
        if self._phase != "running":
            raise RuntimeClosed(f"the runtime is {self._phase}")
