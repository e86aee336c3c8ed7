"""``LocalRuntime``: every agent on one asyncio loop, no Ray — for unit tests and notebooks.

It honours the same contract as the Ray runtime (``agents.Runtime``) and keeps the properties that
make an agent that passes here work there:

* every message, reply, task and state value is encoded and decoded with ``agents.codec``, so a
  value that could not cross a process boundary fails here too;
* each agent has a bounded two-class :class:`~runtime.mailbox.Mailbox` and ``max_concurrency``
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agents import Agent, codec
from agents.context import Context
from agents.errors import (
    AgentError,
    Backpressure,
    HandlerError,
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
from runtime.mailbox import Mailbox, MailboxFull
from runtime.queues import InProcessTaskQueue, QueueFull, TaskQueue, TaskRecord

__all__ = ["LocalRuntime"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Envelope:
    """A message in a mailbox: the encoded payload plus what the worker needs to answer."""

    kind: Literal["send", "topic", "task"]
    payload: bytes
    handler: HandlerInfo
    trace: TraceContext | None  # the caller's position; the handler span is its child
    future: asyncio.Future[Any] | None = None  # send: the caller waits on it
    task: TaskRecord | None = None  # task: the queue's record


@dataclass(eq=False)
class _Replica:
    """One agent instance with its mailbox and workers."""

    cls: type[Agent]
    instance: Agent
    settings: AgentConfig
    model_name: str | None
    mailbox: Mailbox[_Envelope]
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    inflight: int = 0

    @property
    def name(self) -> str:
        return self.cls.name


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
        self._replicas: dict[str, _Replica] = {}
        self._subscribers: dict[str, list[_Replica]] = collections.defaultdict(list)
        self._workers_of: dict[str, list[_Replica]] = collections.defaultdict(list)
        self._dispatchers: list[asyncio.Task[None]] = []
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
                await self._start_replica(cls)
            for queue in self._workers_of:
                self._dispatchers.append(asyncio.create_task(self._dispatch(queue)))
        except BaseException:
            await self.shutdown(timeout_s=0)
            raise

    async def _start_replica(self, cls: type[Agent]) -> None:
        settings = self._settings_for(cls)
        rep = _Replica(
            cls=cls,
            instance=cls(),
            settings=settings,
            model_name=settings.model or cls.model,
            mailbox=Mailbox(settings.mailbox_size, settings.interactive_share),
        )
        await rep.instance.on_start(
            self._context(rep, RecordingSpan.start(f"{cls.name}.on_start", None))
        )
        self._replicas[cls.name] = rep
        routes = cls.routes()
        for topic in routes.keys("topic"):
            self._subscribers[topic].append(rep)
        for queue in routes.keys("queue"):
            self._workers_of[queue].append(rep)
        rep.workers = [
            asyncio.create_task(self._work(rep), name=f"{cls.name}-worker-{i}")
            for i in range(settings.max_concurrency)
        ]

    def _settings_for(self, cls: type[Agent]) -> AgentConfig:
        path = f"{cls.__module__}:{cls.__qualname__}"
        for entry in self._config.agents:
            if entry.import_path == path:
                return entry
        return AgentConfig(import_path=path)

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Refuse new work, let queued messages finish for up to ``timeout_s`` (default: the
        constructor's ``drain_timeout_s``), then cancel what is left (callers get
        ``RuntimeClosed``) and run every ``on_stop``. Safe to call twice."""
        if self._phase in ("closing", "closed"):
            await self._closed.wait()
            return
        self._phase = "closing"
        try:
            for t in self._dispatchers:
                t.cancel()
            await asyncio.gather(*self._dispatchers, return_exceptions=True)
            await self._drain(self._drain_timeout_s if timeout_s is None else timeout_s)
            workers = [w for rep in self._replicas.values() for w in rep.workers]
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for rep in self._replicas.values():
                await self._abandon(rep.mailbox.drain())
                try:
                    span = RecordingSpan.start(f"{rep.name}.on_stop", None)
                    await rep.instance.on_stop(self._context(rep, span))
                except Exception:
                    log.exception("on_stop of agent %r failed", rep.name)
            await self._tasks.close()
        finally:
            self._phase = "closed"
            self._closed.set()

    async def _drain(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._busy() and (remaining := deadline - loop.time()) > 0:
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except asyncio.TimeoutError:
                break
        if self._busy():
            log.warning(
                "shutdown: %d messages still queued or running after %.1fs; cancelling",
                self._busy(),
                timeout_s,
            )

    def _busy(self) -> int:
        return sum(len(r.mailbox) + r.inflight for r in self._replicas.values())

    async def _abandon(self, envelopes: list[_Envelope]) -> None:
        for env in envelopes:
            if env.future is not None and not env.future.done():
                env.future.set_exception(RuntimeClosed("the runtime shut down before delivery"))
            if env.task is not None:
                await self._tasks.release(env.task)

    # -- the Runtime protocol ----------------------------------------------------------------

    @property
    def state(self) -> SharedState:
        return self._state

    @property
    def agents(self) -> list[str]:
        """Names of the running agents."""
        return sorted(self._replicas)

    async def send(
        self,
        agent: str,
        msg: Any,
        *,
        timeout_s: float | None = None,
        priority: Priority = "interactive",
        trace: TraceContext | None = None,
    ) -> Any:
        self._check_open()
        rep = self._replicas.get(agent)
        if rep is None:
            raise UnknownAgent(agent, list(self._replicas))
        info = rep.cls.routes().find("direct", None, msg)
        payload = self._encode(msg, f"message {type(msg).__name__} to {agent!r}")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(rep, _Envelope("send", payload, info, trace, future=fut), priority)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            # wait_for cancelled fut; its done-callback cancels the handler if it started.
            raise SendTimeout(agent, type(msg).__name__, timeout_s or 0.0) from None

    async def publish(self, topic: str, msg: Any, *, trace: TraceContext | None = None) -> None:
        self._check_open()
        subs = self._subscribers.get(topic)
        if not subs:
            raise UnknownTopic(topic, list(self._subscribers))
        infos = [(rep, rep.cls.routes().find("topic", topic, msg)) for rep in subs]
        payload = self._encode(msg, f"message {type(msg).__name__} on topic {topic!r}")
        # All or nothing: check every mailbox before putting into any.
        for rep, _ in infos:
            if rep.mailbox.full():
                raise Backpressure(rep.name, rep.mailbox.capacity)
        for rep, info in infos:
            rep.mailbox.put_nowait(_Envelope("topic", payload, info, trace), "background")

    async def submit(self, queue: str, task: Any, *, trace: TraceContext | None = None) -> str:
        self._check_open()
        workers = self._workers_of.get(queue)
        if not workers:
            raise UnknownQueue(queue, list(self._workers_of))
        for rep in workers:  # every worker of a queue must take the task's type
            rep.cls.routes().find("queue", queue, task)
        payload = self._encode(task, f"task {type(task).__name__} for queue {queue!r}")
        try:
            return await self._tasks.put(queue, payload, trace or TraceContext.new_root())
        except QueueFull:
            raise Backpressure(f"queue:{queue}", self._tasks.max_pending) from None

    async def task(self, task_id: str) -> TaskInfo:
        return await self._tasks.info(task_id)

    async def wait_task(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        return await self._tasks.wait(task_id, timeout_s)

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._phase != "running":
            raise RuntimeClosed(f"the runtime is {self._phase}")

    def _encode(self, value: Any, what: str) -> bytes:
        try:
            data = codec.encode(value)
        except MessageEncodeError as exc:
            raise MessageEncodeError(f"{what}: {exc}") from exc
        if len(data) > self._max_bytes:
            raise MessageTooLarge(what, len(data), self._max_bytes)
        return data

    def _enqueue(self, rep: _Replica, env: _Envelope, priority: Priority) -> None:
        try:
            rep.mailbox.put_nowait(env, priority)
        except MailboxFull:
            raise Backpressure(rep.name, rep.mailbox.capacity) from None

    def _context(self, rep: _Replica, span: RecordingSpan) -> Context:
        return Context(
            agent=rep.name,
            runtime=self,
            span=span,
            llm=self._models.get(rep.model_name) if rep.model_name else None,
            model_name=rep.model_name,
            models_known=tuple(self._models),
        )

    async def _dispatch(self, queue: str) -> None:
        """Move tasks from the queue into worker mailboxes, round robin, waiting for space (a
        task already accepted is never dropped for lack of room)."""
        workers = self._workers_of[queue]
        turn = 0
        while True:
            rec = await self._tasks.claim(queue, consumer=f"local-{queue}")
            rep = workers[turn % len(workers)]
            turn += 1
            info = rep.cls.routes().find("queue", queue, codec.decode(rec.payload))
            try:
                await rep.mailbox.put(_Envelope("task", rec.payload, info, rec.trace, task=rec))
            except asyncio.CancelledError:
                await self._tasks.release(rec)
                raise

    async def _work(self, rep: _Replica) -> None:
        while True:
            env = await rep.mailbox.get()
            if env.future is not None and env.future.done():
                continue  # the caller gave up while it waited in the mailbox
            rep.inflight += 1
            try:
                await self._run(rep, env)
            finally:
                rep.inflight -= 1
                self._progress.set()

    async def _run(self, rep: _Replica, env: _Envelope) -> None:
        span = RecordingSpan.start(f"{rep.name}.{env.handler.name}", env.trace)
        span.set_attribute("raygent.agent", rep.name)
        span.set_attribute("raygent.channel", env.kind)
        call = asyncio.create_task(self._invoke(rep, env, span))
        if env.future is not None:
            env.future.add_done_callback(lambda f: f.cancelled() and call.cancel())
        try:
            await asyncio.wait({call})
        except asyncio.CancelledError:  # the worker itself is being stopped
            call.cancel()
            await asyncio.wait({call})
            await self._settle(rep, env, call)
            raise
        await self._settle(rep, env, call)
        self.spans.append(span)

    async def _invoke(self, rep: _Replica, env: _Envelope, span: RecordingSpan) -> bytes:
        msg = codec.decode(env.payload)
        result = await env.handler.func(rep.instance, msg, self._context(rep, span))
        try:
            return codec.encode(result)
        except MessageEncodeError as exc:
            raise MessageEncodeError(
                f"reply of {rep.name}.{env.handler.name} cannot be encoded: {exc}"
            ) from exc

    async def _settle(self, rep: _Replica, env: _Envelope, call: asyncio.Task[bytes]) -> None:
        """Hand the handler's outcome to whoever waits for it."""
        msg_type = env.handler.describe()
        error: BaseException | None = None
        if call.cancelled():
            error = RuntimeClosed(f"{rep.name}: handler cancelled")
        elif (exc := call.exception()) is not None:
            error = (
                exc
                if isinstance(exc, AgentError)
                else HandlerError(rep.name, msg_type, type(exc).__name__, str(exc))
            )
            if error is not exc:
                error.__cause__ = exc
        if env.kind == "send":
            fut = env.future
            if fut is None or fut.done():
                return
            if error is None:
                fut.set_result(codec.decode(call.result()))
            else:
                fut.set_exception(error)
        elif env.kind == "task":
            assert env.task is not None
            if call.cancelled():
                await self._tasks.release(env.task)
            elif error is None:
                await self._tasks.ack(env.task, call.result())
            else:
                log.warning(
                    "task %s on %r failed (attempt %d): %s",
                    env.task.id,
                    env.task.queue,
                    env.task.attempts,
                    error,
                )
                await self._tasks.fail(env.task, f"{type(error).__name__}: {error}")
        elif error is not None and not call.cancelled():
            log.error(
                "agent %r failed on %s: %s", rep.name, msg_type, error, exc_info=call.exception()
            )
