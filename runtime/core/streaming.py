"""Streamed replies: what a generator handler yields, on its way to the caller.

A streaming handler (``async def h(...) -> AsyncIterator[T]`` with ``yield``) runs in its
replica like any handler — one mailbox slot, its own task, cancelled when the caller gives up —
but its items leave while it runs::

    handler ──yield──► ReplyStream (encoded items, in order) ──batches()──► transport ──► decoded()
                        ▲ the handler's error or end                      (in process, Ray
                        └ closing the stream early cancels the handler     generator, Serve stream)

Items travel in *batches*: everything yielded since the consumer last took some. An idle
consumer gets each item at once; a busy one (or a slow hop) gets what piled up in one message,
so a fast producer costs one Ray object per hop, not one per token — the same coalescing the
model server does for its deltas.

The buffer is bounded (:data:`MAX_BUFFERED` items): a handler that yields faster than its
caller reads waits at its ``yield`` — backpressure, as a full mailbox gives a sender. Across Ray
the streaming generator is bounded the same way (``AgentHost.deliver_stream``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from agents import codec
from agents.errors import SendTimeout
from runtime.core.timeouts import within

__all__ = ["MAX_BUFFERED", "ReplyStream", "decoded"]

MAX_BUFFERED = 256
"""Items a streamed reply holds for a caller that lags before the handler's ``yield`` waits."""


class ReplyStream:
    """The caller's end of one streamed reply, fed by the executor running the handler.

    ``future`` settles when the handler ends: ``None`` after a streaming handler, the encoded
    reply of a plain one (which then streams as its one item), or the handler's error.
    Cancelling it cancels the handler.
    """

    __slots__ = ("_buf", "_limit", "_room", "_wake", "accepts_handoff", "future")

    def __init__(
        self,
        future: asyncio.Future[bytes | None],
        limit: int = MAX_BUFFERED,
        accepts_handoff: bool = False,
    ) -> None:
        self.future = future
        self.accepts_handoff = accepts_handoff
        """The caller runs a model stream the handler yields unread (it gets a ``Handoff``
        item in its place); otherwise the stream's items are sent."""
        self._buf: list[bytes] = []
        self._limit = limit
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        future.add_done_callback(self._settled)

    def _settled(self, future: asyncio.Future[bytes | None]) -> None:
        self._wake.set()
        if not future.cancelled():
            future.exception()  # seen: batches() raises it; a caller that left needs no log

    async def put(self, item: bytes) -> None:
        """One encoded item from the handler; waits while ``limit`` items are unread."""
        while len(self._buf) >= self._limit:
            self._room.clear()
            await self._room.wait()
        self._buf.append(item)
        self._wake.set()

    async def batches(self) -> AsyncGenerator[list[bytes], None]:
        """Encoded items, as soon as there are any, then the handler's error if it raised.
        Closing this early (or cancelling its consumer) cancels the handler."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._buf:
                    batch, self._buf = self._buf, []
                    self._room.set()
                    yield batch
                if self.future.done() and not self._buf:
                    last = self.future.result()  # raises the handler's error
                    if last is not None:
                        yield [last]
                    return
        finally:
            if not self.future.done():
                self.future.cancel()


async def decoded(
    batches: AsyncGenerator[list[bytes], None], agent: str, what: str, timeout_s: float | None
) -> AsyncGenerator[Any, None]:
    """The items of ``batches``, decoded; ``SendTimeout`` once ``timeout_s`` has passed since
    the start (the same bound ``send`` puts on the whole reply). Closes ``batches`` however it
    ends, which stops the handler if it still runs."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    try:
        while True:
            try:
                if deadline is None:
                    batch = await anext(batches)
                else:
                    batch = await within(anext(batches), deadline - loop.time())
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise SendTimeout(agent, what, timeout_s or 0.0) from None
            for item in batch:
                yield codec.decode(item)
    finally:
        await batches.aclose()
