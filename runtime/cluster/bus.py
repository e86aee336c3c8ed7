"""The node-local event bus of one replica: its own shm ring out, its neighbours' rings in.

Every replica writes its topic messages and state updates to one ring it owns
(``shm.RingBuffer``, block policy); every other replica on the same Ray node attaches a reader
to it. A record is written once and read by every co-located replica — the point of shared
memory — and each reader keeps only what concerns it:

    record (msgpack)                                        a reader ...
    ["t", topic, {agent: replica_id}, payload, traceparent] runs it if its replica_id is the
                                                            target chosen for its agent
    ["s", key, [counter, writer], value | None]             applies it (last writer wins)

A topic message names one target *incarnation* per subscribing agent (chosen by the
publisher), so each agent handles it exactly once even though every neighbour sees it, and a
replica that restarts never re-runs records addressed to its previous life; that is why readers
attach at the *oldest* record still in the ring.

Readers run on the actor's event loop itself: each attached ring's reader sleeps in the loop's
own epoll on its wake socket (``RingReader.wake_fd``; the writer sends it a datagram after a
publish), and when woken the loop reads the ring and queues the records into the mailbox in
place -- no thread, no hop between threads. Measured with ``python -m bench.runtime`` (one
topic message every 2 ms, p50, 2-core VM): with a reader thread, publish to the thread 124 us,
thread to loop 122 us, loop to handler 105 us; read on the loop, publish to loop 156-172 us and
loop to handler ~100 us, end to end 221-257 us where it was 297-445 us (a Compiled Graphs hop
in the same runs: 238-283 us). One poll of every loop reader each ``_POLL_S`` covers a missed
wake-up (possible in theory, see ``shm._wait``) and notices a writer that died: one timer per
bus, not one per ring, because on a small node every timer is a wake-up that the serving path
queues behind. Where the wake socket is unavailable (not Linux) a thread per ring reads
instead, handing each batch to the loop.

A topic record waits for mailbox room: the loop reader stops reading its ring until the
mailbox has taken what it read, so a slow subscriber fills the ring and the publisher gets
``Backpressure`` -- back-pressure travels through shared memory.
A lapped reader (possible only if a reader was evicted as dead) asks the owner for a state
snapshot; readers of a writer that died or closed detach themselves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from shm import (
    Lapped,
    RingBuffer,
    RingBufferClosed,
    RingBufferFull,
    RingHandle,
    ShmError,
    WriterDead,
)

__all__ = ["EventBus"]

log = logging.getLogger(__name__)

Item = tuple[Any, ...]  # ("s", key, (counter, writer), value) | ("t", topic, payload, tp)
BatchSink = Callable[[list[Item]], Awaitable[None]]
BatchSinkNowait = Callable[[list[Item]], int]

_READ_WAIT_S = 0.2  # how often a reader thread notices it should stop
_POLL_S = 0.1  # a loop reader's poll: missed wake-ups, dead writers (shm's futex period)
_READS_PER_TURN = 64  # a loop reader yields the loop after this many batches


class EventBus:
    """One replica's ring and its readers of co-located rings.

    Args:
        replica_id: this incarnation's id (targets in topic records name it).
        agent: this replica's agent name.
        loop: the actor's event loop (the sink runs there).
        on_batch: coroutine run with each batch of state records and of topic records
            addressed to this replica, in ring order.
        on_batch_nowait: takes what it can of a batch at once (the mailbox has room) and
            returns how many items it took; ``on_batch`` gets the rest. None: all go to
            ``on_batch``.
        on_lapped: called (on the loop) when a reader lost records: resync from a snapshot.
        capacity_bytes: size of this replica's ring.
        write_timeout_s: how long a publisher waits for the slowest co-located reader.
    """

    def __init__(
        self,
        *,
        replica_id: str,
        agent: str,
        loop: asyncio.AbstractEventLoop,
        on_batch: BatchSink,
        on_lapped: Callable[[], None],
        on_batch_nowait: BatchSinkNowait | None = None,
        capacity_bytes: int = 4 << 20,
        write_timeout_s: float = 5.0,
    ) -> None:
        self.replica_id = replica_id
        self.agent = agent
        self._loop = loop
        self._on_batch = on_batch
        self._on_batch_nowait = on_batch_nowait or (lambda items: 0)
        self._on_lapped = on_lapped
        self._timeout_s = write_timeout_s
        self._ring = RingBuffer.create(capacity_bytes, "block", block_timeout_s=write_timeout_s)
        self._write_lock = threading.Lock()  # the loop and fallback threads both write
        self._readers: dict[str, _LoopReader | _ReaderThread] = {}
        self._poll: asyncio.TimerHandle | None = None  # ticks the loop readers while any exist

    @property
    def handle(self) -> RingHandle:
        return self._ring.handle

    # -- writing -----------------------------------------------------------------------------

    async def publish(
        self, topic: str, targets: dict[str, str], payload: bytes, traceparent: str | None
    ) -> None:
        """Write a topic record. Raises ``RingBufferFull`` after the write timeout."""
        await self._write(msgpack.packb(["t", topic, targets, payload, traceparent]))

    async def put_state(self, key: str, version: tuple[int, str], value: bytes | None) -> None:
        """Write a state record."""
        await self._write(msgpack.packb(["s", key, list(version), value]))

    async def _write(self, record: bytes) -> None:
        # Fast path: the ring has room, no waiting, no thread hop.
        with self._write_lock:
            try:
                self._ring.write(record, timeout_s=0)
                return
            except RingBufferFull:
                pass
        await asyncio.to_thread(self._write_blocking, record)

    def _write_blocking(self, record: bytes) -> None:
        with self._write_lock:
            self._ring.write(record, timeout_s=self._timeout_s)

    # -- reading -----------------------------------------------------------------------------

    def attach(self, replica_id: str, handle: RingHandle) -> None:
        """Start reading a co-located replica's ring (idempotent)."""
        if replica_id in self._readers or replica_id == self.replica_id:
            return
        try:
            reader = RingBuffer.attach(handle, start="oldest")
        except ShmError as exc:
            log.warning("cannot attach to ring of %s: %s", replica_id, exc)
            return
        try:
            self._readers[replica_id] = _LoopReader(self, replica_id, reader)
            if self._poll is None:
                self._poll = self._loop.call_later(_POLL_S, self._tick)
        except (OSError, NotImplementedError):  # no wake socket, or a loop without add_reader
            t = _ReaderThread(self, replica_id, reader)
            self._readers[replica_id] = t
            t.start()

    def detach(self, replica_id: str) -> None:
        t = self._readers.pop(replica_id, None)
        if t is not None:
            t.stop()

    def _tick(self) -> None:
        """Poll every loop reader (a missed wake-up, a dead writer), then again in ``_POLL_S``
        while any is left."""
        loop_readers = [r for r in self._readers.values() if isinstance(r, _LoopReader)]
        for r in loop_readers:
            r.drain()
        self._poll = self._loop.call_later(_POLL_S, self._tick) if loop_readers else None

    def attached(self) -> set[str]:
        return set(self._readers)

    def close(self) -> None:
        """Stop reading, close and unlink this replica's ring."""
        for rid in list(self._readers):
            self.detach(rid)
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._ring.close()
        self._ring.unlink()

    def _decode(self, batch: list[Any]) -> list[Item]:
        """Decode a batch of records and keep what concerns this replica."""
        items: list[Item] = []
        for raw in batch:
            rec = msgpack.unpackb(raw, raw=False)
            if rec[0] == "s":
                items.append(("s", rec[1], (rec[2][0], rec[2][1]), rec[3]))
            elif rec[0] == "t" and rec[2].get(self.agent) == self.replica_id:
                items.append(("t", rec[1], rec[3], rec[4]))
        return items

    def _dispatch(self, batch: list[Any]) -> None:
        """Run on a reader thread: decode a batch, hand it to the loop in one hop and wait
        until the loop has taken it."""
        items = self._decode(batch)
        if items:
            asyncio.run_coroutine_threadsafe(self._on_batch(items), self._loop).result()


class _LoopReader:
    """Reads one co-located ring on the bus's event loop (see the module docstring)."""

    def __init__(self, bus: EventBus, replica_id: str, reader: Any) -> None:
        self._bus = bus
        self._replica_id = replica_id
        self._reader = reader
        self._loop = loop = bus._loop
        self._fd = reader.wake_fd()  # OSError: no wake socket here (the caller falls back)
        self._pending: asyncio.Task | None = None  # a delivery waiting for mailbox room
        self._closed = False
        loop.add_reader(self._fd, self.drain)
        loop.call_soon(self.drain)

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._pending is not None:
            self._pending.cancel()
        self._reader.close()

    def drain(self) -> None:
        """Read what the ring holds, queue it, then arm the wake-up and go back to sleep."""
        if self._closed or self._pending is not None:
            return
        bus, reader = self._bus, self._reader
        for _ in range(_READS_PER_TURN):
            try:
                batch = reader.read_many(max_items=256, timeout_s=0)
            except Lapped:
                bus._on_lapped()
                continue
            except (WriterDead, RingBufferClosed):
                self.stop()  # its owner is gone; membership will tell the bus
                return
            if not batch:
                if reader.arm():
                    continue  # a record landed while arming: no wake-up is coming for it
                return
            try:
                items = bus._decode(batch)
                taken = bus._on_batch_nowait(items) if items else 0
            except Exception:
                log.exception("bus: bad records from %s", self._replica_id)
                continue
            if taken < len(items):  # the mailbox is full: wait for room, reading nothing more
                self._pending = self._loop.create_task(self._deliver(items[taken:]))
                return
            if taken:
                # Queued: let the mailbox's worker (woken by the put, so ahead of us in the
                # loop's queue) start the handler before this reader looks again and re-arms.
                # Measured at one message every 2 ms: mailbox -> worker 69 us p50 when the
                # look-again came first.
                break
        self._loop.call_soon(self.drain)  # after the loop's other callbacks

    async def _deliver(self, items: list[Item]) -> None:
        try:
            await self._bus._on_batch(items)
        except Exception:
            log.exception("bus: delivering records from %s failed", self._replica_id)
        finally:
            self._pending = None
        self.drain()


class _ReaderThread(threading.Thread):
    def __init__(self, bus: EventBus, replica_id: str, reader: Any) -> None:
        super().__init__(name=f"raygent-bus-{replica_id}", daemon=True)
        self._bus = bus
        self._replica_id = replica_id
        self._reader = reader
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batch = self._reader.read_many(max_items=256, timeout_s=_READ_WAIT_S)
                except Lapped:
                    self._bus._loop.call_soon_threadsafe(self._bus._on_lapped)
                    continue
                except (WriterDead, RingBufferClosed):
                    return  # its owner is gone; membership will tell the bus
                if not batch or self._stop.is_set():
                    continue
                try:
                    self._bus._dispatch(batch)
                except Exception:
                    if self._stop.is_set() or self._bus._loop.is_closed():
                        return
                    log.exception("bus: bad records from %s", self._replica_id)
        finally:
            self._reader.close()
