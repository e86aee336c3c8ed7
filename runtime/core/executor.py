"""``AgentExecutor``: one agent instance, its bounded mailbox, its workers — shared by runtimes.

Both runtimes run handlers the same way; only where messages come from differs (an asyncio
call in ``LocalRuntime``, a Ray actor call or a shared-memory ring in the Ray runtime). So the
part that turns an envelope into a handler call and its outcome into a reply, a task ack or a
log line lives here, once:

    caller ──envelope──► Mailbox (interactive | background, bounded)
                            │  max_concurrency workers
                            ▼
                 handler(msg, ctx) in its own task ──► reply bytes / TaskQueue.ack|fail
                     ▲ cancelled when the caller's future is cancelled

Replies leave as encoded bytes: the caller decodes them, so a reply that could not cross a
process boundary fails in every runtime alike. A streaming handler's items leave one by one
through a :class:`~runtime.core.streaming.ReplyStream` while it runs (``stream``), or together as a
list when it ends (``send``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agents import Agent, codec
from agents.context import Context
from agents.errors import (
    AgentError,
    Backpressure,
    HandlerError,
    MessageEncodeError,
    RuntimeClosed,
)
from agents.handlers import Channel, HandlerInfo
from agents.model import TextStream
from agents.runtime_api import Priority
from agents.tracing import RecordingSpan, TraceContext
from runtime.config import AgentConfig
from runtime.core.loops import Loops
from runtime.core.mailbox import Mailbox, MailboxFull
from runtime.core.streaming import ReplyStream
from runtime.queues import TaskQueue, TaskRecord

__all__ = ["AgentExecutor", "Envelope", "context_factory"]

log = logging.getLogger(__name__)

_CHANNEL: dict[str, Channel] = {"send": "direct", "topic": "topic", "task": "queue"}
"""The handler table's channel of an envelope's kind."""

_RELEASE_TIMEOUT_S = 2.0
"""How long a stopping executor waits for its queue to take back tasks that never ran."""

ContextFactory = Callable[[RecordingSpan], Context]


def context_factory(
    cls: type[Agent], settings: AgentConfig, runtime: Any, models: Mapping[str, Any]
) -> ContextFactory:
    """How one agent's handler contexts are made: its model (the config's ``model``, else the
    class's) and the runtime its ``ctx`` talks to."""
    model_name = settings.model or cls.model
    llm = models.get(model_name) if model_name else None
    known = tuple(models)

    traced = getattr(llm, "traced", None)  # a model server client: calls join the trace

    def make_context(span: RecordingSpan) -> Context:
        return Context(
            agent=cls.name,
            runtime=runtime,
            span=span,
            llm=traced(span.context) if traced is not None else llm,
            model_name=model_name,
            models_known=known,
        )

    return make_context


@dataclass(eq=False)
class Envelope:
    """A message in a mailbox: the encoded payload plus what the worker needs to answer."""

    kind: Literal["send", "topic", "task"]
    payload: bytes
    handler: HandlerInfo | None  # None: resolved from the decoded message (remote callers)
    trace: TraceContext | None  # the caller's position; the handler span is its child
    key: str | None = None  # the topic or queue
    future: asyncio.Future[bytes | None] | None = None  # send: the caller waits on it
    task: TaskRecord | None = None  # task: the queue's record
    stream: ReplyStream | None = None  # a stream request: where yielded items go

    def describe(self) -> str:
        return self.handler.describe() if self.handler else f"{self.kind} message"


class AgentExecutor:
    """Runs one agent instance's handlers.

    Args:
        cls: the agent class (instantiated here, with no arguments).
        settings: mailbox size, concurrency, interactive share.
        make_context: builds the ``Context`` of one handler call from its span.
        tasks: the task queue this agent's queue handlers ack to.
        on_span: called with each finished handler span (tests, telemetry).
        consumer: this replica's consumer name on task queues.
        progress: set after every handler finishes (shared by a runtime's executors, so
            shutdown can wait for "anything finished" on one event).
    """

    def __init__(
        self,
        cls: type[Agent],
        settings: AgentConfig,
        make_context: ContextFactory,
        tasks: TaskQueue,
        on_span: Callable[[RecordingSpan], None] | None = None,
        consumer: str = "",
        progress: asyncio.Event | None = None,
    ) -> None:
        self.cls = cls
        self.name = cls.name
        self.settings = settings
        self.instance = cls()
        self.mailbox: Mailbox[Envelope] = Mailbox(settings.mailbox_size, settings.interactive_share)
        self.inflight = 0
        self.progress = progress or asyncio.Event()
        self._make_context = make_context
        self._tasks = tasks
        self._on_span = on_span
        self._consumer = consumer or cls.name
        self._workers: list[asyncio.Task[None]] = []
        self._claimers = Loops(f"agent {self.name}")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Run ``on_start``, then start the workers and one claimer per served task queue."""
        span = RecordingSpan.start(f"{self.name}.on_start", None)
        await self.instance.on_start(self._make_context(span))
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self.name}-worker-{i}")
            for i in range(self.settings.max_concurrency)
        ]
        for q in self.cls.routes().keys("queue"):  # a claimer that fails is restarted
            self._claimers.start(f"{self.name}-claim-{q}", functools.partial(self._claim, q))

    def healthy(self) -> bool:
        """Every worker is running (a dead worker would silently shrink the concurrency)."""
        return bool(self._workers) and not any(w.done() for w in self._workers)

    def busy(self) -> int:
        """Messages waiting or running."""
        return len(self.mailbox) + self.inflight

    async def backlog(self) -> int:
        """Tasks waiting in this agent's queues for any replica to claim."""
        queues = self.cls.routes().keys("queue")
        return sum([await self._tasks.backlog(q) for q in queues])

    async def stop_claiming(self) -> None:
        """Stop taking tasks from queues (first step of shutdown)."""
        await self._claimers.close()

    async def stop(self) -> None:
        """Cancel the workers (their running handlers are cancelled), fail what still waits,
        give claimed tasks back, and run ``on_stop``."""
        await self.stop_claiming()
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        unrun: list[TaskRecord] = []
        for env in self.mailbox.drain():
            if env.future is not None and not env.future.done():
                env.future.set_exception(RuntimeClosed("the runtime shut down before delivery"))
            if env.task is not None:
                unrun.append(env.task)
        if unrun:
            await self._give_back(unrun)
        try:
            span = RecordingSpan.start(f"{self.name}.on_stop", None)
            await self.instance.on_stop(self._make_context(span))
        except Exception:
            log.exception("on_stop of agent %r failed", self.name)

    async def _give_back(self, records: list[TaskRecord]) -> None:
        """Release claimed tasks that never ran, waiting at most :data:`_RELEASE_TIMEOUT_S`:
        when the whole application stops, the task queue may be stopping too and never
        answer. A task not released returns to its queue when its lease ends (the queue's
        visibility timeout), so waiting longer would only keep ``on_stop`` from running."""
        calls = [asyncio.ensure_future(self._settle_task("release", r)) for r in records]
        done, late = await asyncio.wait(calls, timeout=_RELEASE_TIMEOUT_S)
        for call in late:
            call.cancel()
        for call in done:
            if call.exception() is not None:
                log.warning("agent %r: a task was not released: %s", self.name, call.exception())
        if late:
            log.info("agent %r: %d tasks not released in time", self.name, len(late))

    # -- intake ------------------------------------------------------------------------------

    def send(
        self,
        payload: bytes,
        handler: HandlerInfo | None,
        trace: TraceContext | None,
        priority: Priority,
    ) -> asyncio.Future[bytes | None]:
        """Queue a request; the future resolves to the encoded reply (a streaming handler's:
        the list of its items). Cancelling the future cancels the handler. Raises
        ``Backpressure`` when the mailbox is full. Without a ``handler`` the message's type
        picks one when it runs (``NoHandler`` then fails the future)."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._put_nowait(Envelope("send", payload, handler, trace, future=fut), priority)
        return fut

    def stream(
        self,
        payload: bytes,
        handler: HandlerInfo | None,
        trace: TraceContext | None,
        priority: Priority,
        accepts_handoff: bool = False,
    ) -> ReplyStream:
        """Queue a request whose reply streams: a streaming handler's items as it yields them,
        a plain handler's reply as the one item. Raises ``Backpressure`` like :meth:`send`.
        ``accepts_handoff``: the caller runs model streams the handler yields unread."""
        loop = asyncio.get_running_loop()
        stream = ReplyStream(loop.create_future(), accepts_handoff=accepts_handoff)
        env = Envelope("send", payload, handler, trace, future=stream.future, stream=stream)
        self._put_nowait(env, priority)
        return stream

    def deliver(
        self, topic: str, payload: bytes, handler: HandlerInfo | None, trace: TraceContext | None
    ) -> None:
        """Queue a topic message (background class). Raises ``Backpressure``."""
        self._put_nowait(Envelope("topic", payload, handler, trace, topic), "background")

    async def deliver_wait(self, topic: str, payload: bytes, trace: TraceContext | None) -> None:
        """Queue a topic message, waiting for room (for transports that have already
        accepted it, such as a shared-memory ring)."""
        await self.mailbox.put(Envelope("topic", payload, None, trace, topic), "background")

    def _put_nowait(self, env: Envelope, priority: Priority) -> None:
        try:
            self.mailbox.put_nowait(env, priority)
        except MailboxFull:
            raise Backpressure(self.name, self.mailbox.capacity) from None

    async def _claim(self, queue: str) -> None:
        """Take tasks of ``queue`` as a competing consumer, waiting for mailbox room so a task
        already claimed is never dropped. A task is claimed only while fewer than
        ``max_concurrency`` background messages wait (``Mailbox.room_for``): the rest of the
        mailbox stays free for interactive sends, and the queue's backlog stays claimable by
        every replica (the autoscaler adds replicas for it; ``backlog``)."""
        routes = self.cls.routes()
        while True:
            await self.mailbox.room_for("background", self.settings.max_concurrency)
            rec = await self._tasks.claim(queue, consumer=self._consumer)
            try:
                handler = routes.find("queue", queue, codec.decode(rec.payload))
            except AgentError as exc:
                await self._tasks.fail(rec, f"{type(exc).__name__}: {exc}")
                continue
            try:
                env = Envelope("task", rec.payload, handler, rec.trace, queue, task=rec)
                await self.mailbox.put(env)
            except asyncio.CancelledError:
                await self._tasks.release(rec)
                raise

    # -- execution ---------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            env = await self.mailbox.get()
            if env.future is not None and env.future.done():
                continue  # the caller gave up while it waited in the mailbox
            self.inflight += 1
            try:
                await self._run(env)
            finally:
                self.inflight -= 1
                self.progress.set()

    async def _run(self, env: Envelope) -> None:
        name = env.handler.name if env.handler else env.kind
        span = RecordingSpan.start(f"{self.name}.{name}", env.trace)
        span.set_attribute("raygent.agent", self.name)
        span.set_attribute("raygent.channel", env.kind)
        span.kind = "server" if env.kind == "send" else "consumer"
        failure: BaseException | None = None
        if env.future is None:
            # Topic messages and tasks have no caller that could give up; only shutdown
            # cancels them, by cancelling this worker. So run them inline: one task and one
            # loop turn less per message.
            try:
                result = await self._invoke(env, span)
            except asyncio.CancelledError:
                await self._settle(env, None, None, cancelled=True)
                raise
            except Exception as exc:
                failure = exc
                await self._settle(env, None, exc)
            else:
                await self._settle(env, result, None)
        else:
            # A request runs in its own task so that the caller giving up (its future
            # cancelled) cancels the handler without touching this worker.
            call = asyncio.create_task(self._invoke(env, span))
            env.future.add_done_callback(lambda f: f.cancelled() and call.cancel())
            try:
                await asyncio.wait({call})
            except asyncio.CancelledError:  # the worker itself is being stopped
                call.cancel()
                await asyncio.wait({call})
                await self._settle(env, *_outcome(call))
                raise
            outcome = _outcome(call)
            failure = outcome[1]
            await self._settle(env, *outcome)
        span.end(f"{type(failure).__name__}: {failure}" if failure is not None else None)
        if self._on_span is not None:
            self._on_span(span)

    async def _invoke(self, env: Envelope, span: RecordingSpan) -> bytes | None:
        msg = codec.decode(env.payload)
        if env.handler is None:
            env.handler = self.cls.routes().find(_CHANNEL[env.kind], env.key, msg)
            span.name = f"{self.name}.{env.handler.name}"
        h = env.handler
        ctx = self._make_context(span)
        if not h.streams:
            return self._encode_reply(h, await h.func(self.instance, msg, ctx))
        gen = h.func(self.instance, msg, ctx)
        items: list[Any] = []
        n = 0
        out = env.stream
        try:
            async for item in gen:
                if not isinstance(item, TextStream):
                    n += 1
                    if out is not None:
                        await out.put(self._encode_reply(h, item))
                    else:
                        items.append(item)
                elif out is not None and out.accepts_handoff and _can_hand_off(item):
                    # The caller runs the stream itself: its tokens skip this replica.
                    n += 1
                    await out.put(self._encode_reply(h, item.handoff))
                    await item.aclose()
                else:
                    async for sub in item.items():  # a stream yielded: its items, in place
                        n += 1
                        if out is not None:
                            await out.put(self._encode_reply(h, sub))
                        else:
                            items.append(sub)
        finally:
            await gen.aclose()
        span.set_attribute("raygent.stream.items", n)
        return None if out is not None else self._encode_reply(h, items)

    def _encode_reply(self, h: HandlerInfo, reply: Any) -> bytes:
        try:
            return codec.encode(reply)
        except MessageEncodeError as exc:
            raise MessageEncodeError(
                f"reply of {self.name}.{h.name} cannot be encoded: {exc}"
            ) from exc

    async def _settle(
        self,
        env: Envelope,
        result: bytes | None,
        exc: BaseException | None,
        cancelled: bool = False,
    ) -> None:
        """Hand the handler's outcome to whoever waits for it."""
        error: BaseException | None = None
        if cancelled:
            error = RuntimeClosed(f"{self.name}: handler cancelled")
        elif exc is not None:
            error = exc
            if not isinstance(exc, AgentError):
                error = HandlerError(self.name, env.describe(), type(exc).__name__, str(exc))
                error.__cause__ = exc
        if env.kind == "send":
            fut = env.future
            if fut is not None and not fut.done():
                if error is None:
                    fut.set_result(result)
                else:
                    fut.set_exception(error)
        elif env.kind == "task":
            assert env.task is not None
            if cancelled:
                await self._settle_task("release", env.task)
            elif error is None:
                await self._settle_task("ack", env.task, result)
            else:
                log.warning(
                    "task %s on %r failed (attempt %d): %s",
                    env.task.id,
                    env.task.queue,
                    env.task.attempts,
                    error,
                )
                await self._settle_task("fail", env.task, f"{type(error).__name__}: {error}")
        elif error is not None:
            log.error("agent %r failed on %s: %s", self.name, env.describe(), error, exc_info=exc)

    async def _settle_task(self, op: str, rec: TaskRecord, *args: Any) -> None:
        """ack / fail / release with a few retries on a retryable queue error (a Redis blip),
        so one failed round trip neither kills this worker nor leaves the task claimed; if all
        fail, the queue's visibility timeout hands the task to another worker."""
        for attempt in range(3):
            try:
                await getattr(self._tasks, op)(rec, *args)
                return
            except AgentError as exc:
                if not exc.retryable or attempt == 2:
                    log.error("task %s: %s failed: %s", rec.id, op, exc)
                    return
                await asyncio.sleep(0.1 * 2**attempt)


def _outcome(
    call: asyncio.Task[bytes | None],
) -> tuple[bytes | None, BaseException | None, bool]:
    """(result, exception, cancelled) of a finished handler task."""
    if call.cancelled():
        return None, None, True
    exc = call.exception()
    return (None, exc, False) if exc is not None else (call.result(), None, False)


def _can_hand_off(stream: TextStream) -> bool:
    return stream.handoff is not None and not stream.started
