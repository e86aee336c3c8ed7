"""The writing end of a ring: record layout, the TAIL/INTENT/WRITE publish, the block policy.

Where the time goes (cProfile, and ``time.process_time`` loops in one process so that other
work on the machine does not count; 64 B records, Python 3.11, this 2-core VM):

    write()                       ~1.0 us/record   read()                       ~1.0 us/record
    write_many(32) (one frame)    ~0.27 us/record  read_many() of those frames  ~0.24 us/record
    one 8-byte cursor store ~30 ns; header pack_into + 64 B slice copy ~180 ns; an empty loop
    turn ~30 ns. So ``write`` is ~25 bytecode-level steps of 30-180 ns, none of them dominant.

So:

- ``write`` has a straight-line fast path (no wrap, space known free, TAIL stored only when it
  moves); everything else goes through ``write_many``. Going faster for one record at a time
  needs fewer interpreter steps per record, i.e. C: ``shm._ringfast`` (when built) does the
  fast paths of ``write`` and ``write_many`` in one call each -- the record or frame laid out
  and copied straight into the mapping, the publish with release stores, the wake-ups -- and
  hands anything else (a wrap, a wait, buffers that are not ``bytes``) to the code below.
  ``python -m bench.shm``, 64 B records 1 -> 1: one at a time 1.5 M/s (0.44 M/s in Python),
  batches of 32 23 M/s (2.1 M/s).
- ``write_many`` packs small records into batch frames (one ring record holding a count, a
  lengths array and the records back to back): per record that is a ``len`` in ``map``, one
  array element and a ``b"".join`` -- C loops -- instead of a header per record: ~0.1 us per
  extra record, on top of a fixed ~5 us per call (argument checks, layout, publish). Each contiguous
  run goes into the mapping with one slice assignment, and the cursors are published once per
  run. Payloads of ``DIRECT_COPY_BYTES`` or more skip the join and are copied straight into
  the mapping: exactly one copy on the writer's side.
- The block policy reads the reader slots only when the cached limit (slowest live reader +
  capacity) is reached, or when a reader attached (NEW_READER). A blocked writer spins
  (yielding), then sleeps, like a waiting reader; once blocked for ``EVICT_AFTER_S`` it checks
  whether the readers holding it back are alive (a ``/proc`` read each) and evicts the dead
  ones, at most every ``LIVENESS_INTERVAL_S``.
"""

from __future__ import annotations

import array
import collections
import logging
import os
import socket
import time
import weakref
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, cast

from shm import _layout as L
from shm import _segment, _wait
from shm._mapping import Mapping, RingHandle
from shm.errors import RecordTooLarge, RingBufferClosed, RingBufferFull

logger = logging.getLogger("shm")

DIRECT_COPY_BYTES = 4096
_PADS = tuple(bytes(i) for i in range(L.ALIGN))

# Bound once: a global or attribute lookup on the hot path costs as much as the work itself.
_REC_pack = L.RECORD.pack
_FRAME_COUNT_pack = L.FRAME_COUNT.pack
_FRAME_FLAG = L.FRAME_FLAG
_REC_pack_into = L.RECORD.pack_into
_DEBUG = L.DEBUG
_KEY = L.CHECK_KEY
_M32 = L.MASK32
_WRAP = L.WRAP_LENGTH
_Q_TAIL = L.Q_TAIL
_Q_INTENT = L.Q_INTENT
_Q_WRITE = L.Q_WRITE
_Q_LAST = L.Q_LAST
_Q_ATTENTION = L.Q_ATTENTION


def _frame(records: Sequence, lens: list[int], body: int) -> tuple:
    """Pack records into one batch-frame unit: count, lengths, padding, records."""
    count = len(records)
    head = _FRAME_COUNT_pack(count) + array.array("I", lens).tobytes()
    head_len = (4 * count + 11) & -8
    parts = [head, _PADS[head_len - len(head)], *records]
    return parts, head_len + body, count, _FRAME_FLAG


def _byte_view(data) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError("records must be C-contiguous bytes-like objects")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class RingWriter:
    """The writing end and owner of a ring. Made by ``RingBuffer.create``.

    Not thread-safe (one writer, by design) and not picklable: send :attr:`handle` instead.
    The segment lives as long as this object: ``unlink()`` removes it, and so does garbage
    collection or interpreter exit of the owning process (a forked child's copy never closes or
    unlinks it); if the process is killed, the janitor (``shm.sweep_dead_segments``) removes it.

    Example:
        >>> from shm import RingBuffer
        >>> with RingBuffer.create(capacity_bytes=4096, on_full="overwrite") as ring:
        ...     ring.write(b"state-v1")
        ...     ring.write_many([b"event-1", b"event-2"])
    """

    def __init__(
        self, capacity: int, policy: int, block_timeout_s: float, max_readers: int, crc: bool
    ) -> None:
        me = _segment.current_process()
        name = _segment.new_name(me.pid)
        data_off = L.header_bytes(max_readers)
        fd, mm = _segment.create(name, data_off + capacity)
        self._res = res = Mapping(name, fd, mm, owner=True)
        # Unlinks on garbage collection and at interpreter exit; holds no reference to self.
        self._finalizer = weakref.finalize(self, res.close, True)
        L.STATIC.pack_into(
            mm, 0, b"\0" * 8, L.LAYOUT_VERSION, L.FLAG_CRC32 if crc else 0, capacity, data_off,
            policy, max_readers, me.pid, me.start, me.pidns,
        )  # fmt: skip
        mm[L.OFF_MAGIC : L.OFF_MAGIC + 8] = L.MAGIC  # last: the header is now valid
        self._mm = mm
        self._q = res.q
        self._cap = capacity
        self._base = data_off
        self._max_readers = max_readers
        self._block = policy == L.POLICY_BLOCK
        self._crc = crc
        self._timeout_s = block_timeout_s
        self._max_payload = min(capacity - L.HEADER_SIZE, L.MAX_LENGTH)
        self._frame_max = L.frame_max(capacity)
        self._starts: collections.deque[int] = collections.deque()  # record starts >= TAIL
        self._w = 0  # WRITE as last published
        self._seq = 0  # seq of the next record
        self._last = 0  # LAST as last published
        # Block: min(live reader cursors) + capacity, refreshed lazily. Overwrite: no limit
        # for one record; write_many bounds each publish to one lap.
        self._limit = capacity if self._block else 1 << 62
        self._last_evict = 0.0
        self._wake_sock: socket.socket | None = None  # made when a loop reader first sleeps
        self._closed = False
        # Fast path of write() off: closed, CRCs, or a ring so big that a length could collide
        # with FRAME_FLAG.
        self._slow = crc or capacity > L.MAX_LENGTH
        # The C hot paths (shm._ringfast), when built: same layout, same publish order.
        self._native = None if self._slow else res.native_paths(data_off, capacity, self._frame_max)
        self._handle = RingHandle(name, capacity, _segment.boot_id())
        logger.debug("created ring %s: %d bytes, policy %d", name, capacity, policy)

    def __reduce__(self):
        raise TypeError("a RingWriter cannot be pickled; send ring.handle and attach a reader")

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
        self.unlink()

    @property
    def handle(self) -> RingHandle:
        """The picklable handle readers attach with."""
        return self._handle

    @property
    def name(self) -> str:
        """Segment name under ``/dev/shm``."""
        return self._handle.name

    @property
    def capacity_bytes(self) -> int:
        """Size of the data region in bytes."""
        return self._cap

    @property
    def max_record_bytes(self) -> int:
        """Largest payload that fits (``capacity_bytes - 16``)."""
        return self._max_payload

    # -- writing ----------------------------------------------------------------------------

    def write(self, data, timeout_s: float | None = None) -> None:
        """Publish one record (``bytes``-like; zero length allowed).

        Args:
            data: The payload. ``bytes`` is fastest; other buffers are viewed, not copied twice.
            timeout_s: Block policy only: how long to wait for the slowest live reader;
                None uses the ring's ``block_timeout_s``.

        Raises:
            RecordTooLarge: The record does not fit in the ring (nothing was copied).
            RingBufferFull: Block policy, and no space appeared within the timeout.
            RingBufferClosed: This writer was closed.
        """
        native = self._native
        if native is not None:
            end = native.put1(self._w, self._seq, self._limit, data, self._starts)
            if end is not None:
                self._published(end, 1)
                return
        n = len(data)
        w = self._w
        end = w + ((n + 23) & -8)
        cap = self._cap
        pos = w % cap
        if end - w + pos > cap or end > self._limit or self._slow or type(data) is not bytes:
            self.write_many((data,), timeout_s)  # wrap, wait, views, CRC, errors
            return
        q = self._q
        starts = self._starts
        starts.append(w)
        if starts[0] < end - cap:  # records are being overwritten: TAIL moves
            lo = end - cap
            while starts[0] < lo:
                starts.popleft()
            q[_Q_TAIL] = starts[0]
        q[_Q_INTENT] = end  # before any byte moves
        mm = self._mm
        off = self._base + pos
        seq = self._seq
        _REC_pack_into(mm, off, n, (n ^ seq ^ _KEY) & _M32, seq)
        mm[off + 16 : off + 16 + n] = data
        q[_Q_WRITE] = end  # the publish
        q[_Q_LAST] = w
        self._w = end
        self._seq = seq + 1
        self._last = w
        if q[_Q_ATTENTION]:
            self._attention()
        if _DEBUG:
            self._check_invariants()

    def write_many(self, payloads: Iterable, timeout_s: float | None = None) -> None:
        """Publish several records, packed into as few ring records as possible.

        Batching is how the ring beats per-message queues: small records travel in batch
        frames (see ``shm._layout``), so their per-record cost is C loops (``b"".join``,
        ``array``), and the fixed Python cost of a publish is paid once per call. Readers see
        the records one by one, exactly as if written with :meth:`write`.

        Args:
            payloads: Bytes-like records, in order.
            timeout_s: As in :meth:`write`; it bounds each wait for space (progress restarts
                it).

        Raises:
            RecordTooLarge: Some record does not fit; raised before any record is copied.
            RingBufferFull: Block policy and the timeout passed; ``exc.written`` records of
                this call were published, the rest were not.
            RingBufferClosed: This writer was closed.
        """
        native = self._native
        if native is not None and type(payloads) in (list, tuple):
            payloads = cast("Sequence[Any]", payloads)
            i, count = 0, len(payloads)
            while i < count:  # a frame (as large as fits) per turn, until a wrap or a wait
                limit = self._limit if self._block else self._w + self._cap
                put = native.put_frame(self._w, self._seq, limit, payloads, self._starts, i)
                if put is None:
                    break
                end, j = put
                self._published(end, j - i)
                i = j
            if i == count:
                return
            if i:
                try:
                    self.write_many(payloads[i:], timeout_s)  # the general path from here
                except RingBufferFull as exc:
                    exc.written += i
                    raise
                return
        if self._closed:
            raise RingBufferClosed(f"ring {self.name} was closed by its writer")
        if not isinstance(payloads, (list, tuple)):
            payloads = list(payloads)
        if set(map(type, payloads)) - {bytes}:
            payloads = [p if type(p) is bytes else _byte_view(p) for p in payloads]
        if not payloads:
            return
        lens = list(map(len, payloads))
        biggest = max(lens)
        if biggest > self._max_payload:
            raise RecordTooLarge(
                f"record of {biggest} bytes does not fit in ring {self.name}: the largest "
                f"record is {self._max_payload} bytes; create the ring with a larger "
                "capacity_bytes"
            )
        units = self._units(payloads, lens, biggest)
        total = len(units)
        done = 0
        deadline = None
        final = False
        wait_s = self._timeout_s if timeout_s is None else timeout_s
        backoff = _wait.Backoff(max_s=1e-3)
        while True:
            before = self._w
            limit = self._limit if self._block else before + self._cap
            done = self._put(units, done, limit)
            if done >= total:
                return
            if not self._block:
                continue  # overwrite: a publish spans at most one lap, then on to the next
            if self._w != before:  # progress; the next record needs a fresh look at readers
                deadline = None
                final = False
                self._refresh_limit(evict=False)
                continue
            # Block policy, no progress: the slowest live reader holds the space we need.
            now = time.perf_counter()
            if deadline is None:
                deadline = now + wait_s
                blocked_since = now
                backoff = _wait.Backoff(max_s=1e-3)
                self._refresh_limit(evict=False)
                continue
            if final:
                behind = self._w - (self._limit - self._cap)
                written = sum(unit[2] for unit in units[:done])
                raise RingBufferFull(
                    f"ring {self.name} stayed full for {wait_s:.3f}s: the slowest live reader "
                    f"is {behind} bytes behind; {written} of {len(payloads)} record(s) "
                    "written. Raise timeout_s / block_timeout_s, add capacity_bytes, or use "
                    "on_full='overwrite'",
                    written=written,
                )
            if now >= deadline:
                final = True  # one last look, dead readers evicted, before giving up
                self._refresh_limit(evict=True)
                continue
            # Spin (yielding), then sleep -- the same ladder as a waiting reader -- and look
            # for dead readers once blocked for EVICT_AFTER_S (a /proc read per reader).
            blocked = now - blocked_since
            if blocked >= _wait.SPIN_S:
                backoff.sleep(deadline - now)
            else:
                os.sched_yield()
            self._refresh_limit(
                evict=blocked >= _wait.EVICT_AFTER_S
                and now - self._last_evict >= _wait.LIVENESS_INTERVAL_S
            )

    def _units(self, payloads: Sequence, lens: list[int], biggest: int) -> list[tuple]:
        """Group records into ring records ("units"): small ones into batch frames of at most
        ``FRAME_MAX_BYTES``, large ones alone. A unit is (parts, length, records, flag)."""
        count = len(payloads)
        if count == 1:
            return [([payloads[0]], lens[0], 1, 0)]
        frame_max = self._frame_max
        body = sum(lens)
        if biggest < DIRECT_COPY_BYTES and ((4 * count + 11) & -8) + body <= frame_max:
            return [_frame(payloads, lens, body)]  # the common case: the batch is one frame
        units: list[tuple] = []
        group: list = []
        group_lens: list[int] = []
        group_bytes = 0

        def flush() -> None:
            if len(group) == 1:
                units.append(([group[0]], group_lens[0], 1, 0))
            elif group:
                units.append(_frame(group, group_lens, group_bytes))

        for p, n in zip(payloads, lens, strict=True):
            fits = ((4 * len(group) + 15) & -8) + group_bytes + n <= frame_max
            if n >= DIRECT_COPY_BYTES or not fits:
                flush()
                group, group_lens, group_bytes = [], [], 0
            if n >= DIRECT_COPY_BYTES:
                units.append(([p], n, 1, 0))
            else:
                group.append(p)
                group_lens.append(n)
                group_bytes += n
        flush()
        return units

    def _put(self, units: list, i: int, limit: int) -> int:
        """Lay out ``units[i:]`` while the end stays within ``limit``, publish them, and
        return the index of the first unit not written."""
        cap = self._cap
        w = first = self._w
        seq = self._seq
        last = self._last
        pos = w % cap
        crc = self._crc
        starts_append = self._starts.append
        pack = _REC_pack
        pads = _PADS
        segments: list = []  # (physical offset, list of parts | one bytes-like)
        seg_start = pos
        parts: list = []
        add, extend = parts.append, parts.extend
        total = len(units)
        while i < total:
            unit_parts, n, count, flag = units[i]
            size = (n + 23) & -8
            if pos + size > cap:
                # It would straddle the end: mark the rest of this lap as skipped. The marker
                # is published even if the record itself must wait, so that readers can move
                # past the gap and free the space at the start.
                gap = cap - pos
                if w + gap > limit:
                    break
                if gap >= L.HEADER_SIZE:
                    add(pack(_WRAP, (_WRAP ^ seq ^ _KEY) & _M32, seq))
                if parts:
                    segments.append((seg_start, parts))
                    parts = []
                    add, extend = parts.append, parts.extend
                w += gap
                pos = seg_start = 0
            if w + size > limit:
                break
            field = n | flag
            chk = (field ^ seq ^ _KEY) & _M32
            if crc:
                for part in unit_parts:
                    chk = zlib.crc32(part, chk)
            add(pack(field, chk, seq))
            if n >= DIRECT_COPY_BYTES and not flag:
                # Large record: copy it straight into the mapping, never through a join.
                segments.append((seg_start, parts))
                segments.append((pos + 16, unit_parts[0]))
                parts = []
                add, extend = parts.append, parts.extend
                seg_start = pos + size
            else:
                extend(unit_parts)
                if n & 7:
                    add(pads[-n & 7])
            starts_append(w)
            last = w
            w += size
            pos += size
            seq += count
            i += 1
        if w != first:
            if parts:
                segments.append((seg_start, parts))
            self._publish(segments, w, seq, last)
        return i

    def _publish(self, segments: list, end: int, seq: int, last: int) -> None:
        mm = self._mm
        q = self._q
        base = self._base
        starts = self._starts
        lo = end - self._cap
        while starts[0] < lo:
            starts.popleft()
        q[_Q_TAIL] = starts[0]
        q[_Q_INTENT] = end  # before any byte moves
        for phys, obj in segments:
            if type(obj) is list:
                if not obj:
                    continue
                obj = obj[0] if len(obj) == 1 else b"".join(obj)
            off = base + phys
            mm[off : off + len(obj)] = obj
        q[_Q_WRITE] = end  # the publish
        q[_Q_LAST] = last
        self._w = end
        self._seq = seq
        self._last = last
        if q[_Q_ATTENTION]:
            self._attention()
        if _DEBUG:
            self._check_invariants()

    def _published(self, end: int, count: int) -> None:
        """Account for a record (or frame of ``count``) the C path published; ``end`` < 0
        says a reader attached, which a blocking writer must count before writing on."""
        self._last = self._w  # the C path never writes a wrap marker: the record starts here
        self._w = abs(end)
        self._seq += count
        if end < 0 and self._block:
            self._refresh_limit(evict=False)
        if _DEBUG:
            self._check_invariants()

    def _attention(self) -> None:
        """A reader set WAITERS (wake it) or NEW_READER (account for it before writing on)."""
        mm = self._mm
        if mm[L.OFF_NEW_READER]:
            mm[L.OFF_NEW_READER] = 0
            if self._block:
                self._refresh_limit(evict=False)
        if mm[L.OFF_WAITERS]:
            mm[L.OFF_WAITERS] = 0
            self._res.futex.wake_all()
            self._wake_loop_readers()

    def _wake_loop_readers(self) -> None:
        """Send a datagram to every reader asleep in an event loop (``RingReader.arm``)."""
        q = self._q
        for i in range(self._slots_high()):
            wake = L.slot_q(i, L.SLOT_WAKE)
            if q[wake] and q[L.slot_q(i, L.SLOT_PID)]:
                q[wake] = 0
                if self._wake_sock is None:
                    self._wake_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._wake_sock.setblocking(False)
                address = L.wake_address(q[L.slot_q(i, L.SLOT_PID)], q[L.slot_q(i, L.SLOT_TOKEN)])
                try:
                    self._wake_sock.sendto(b"w", address)
                except OSError:
                    pass  # gone, or its socket is full: it is awake already

    # -- block policy: the slowest live reader ---------------------------------------------

    def _slots_high(self) -> int:
        return min(self._q[L.Q_SLOTS_HIGH], self._max_readers)

    def _refresh_limit(self, evict: bool) -> None:
        """Recompute how far the writer may go: ``min(live reader cursors) + capacity``.

        Cursors come from shared memory and are never trusted: one outside
        ``[WRITE - capacity, WRITE]`` belongs to a reader that is lapped already (or is garbage)
        and does not hold the writer back.
        """
        if evict:
            self._last_evict = time.perf_counter()
            self._evict_dead_readers()
        q = self._q
        w = self._w
        oldest_allowed = w - self._cap
        slowest = w
        for i in range(self._slots_high()):
            if q[L.slot_q(i, L.SLOT_PID)]:
                cursor = q[L.slot_q(i, L.SLOT_CURSOR)]
                if oldest_allowed <= cursor < slowest:
                    slowest = cursor
        self._limit = slowest + self._cap

    def _evict_dead_readers(self) -> int:
        """Free the slots of readers whose process is gone; return how many were freed."""
        q = self._q
        freed = 0
        with _segment.locked(self._res.fd):
            for i in range(self._slots_high()):
                pid = q[L.slot_q(i, L.SLOT_PID)]
                start = q[L.slot_q(i, L.SLOT_START)]
                pidns = q[L.slot_q(i, L.SLOT_PIDNS)]
                if pid and not _segment.is_alive(pid, start, pidns):
                    q[L.slot_q(i, L.SLOT_PID)] = 0
                    freed += 1
                    logger.warning("ring %s: evicted dead reader pid %d", self.name, pid)
        return freed

    def live_readers(self) -> int:
        """Evict dead readers, then return how many reader slots are held."""
        if self._closed:
            return 0
        self._evict_dead_readers()
        q = self._q
        return sum(1 for i in range(self._slots_high()) if q[L.slot_q(i, L.SLOT_PID)])

    def _check_invariants(self) -> None:
        q = self._q
        tail, intent, w, last = q[_Q_TAIL], q[_Q_INTENT], q[_Q_WRITE], q[_Q_LAST]
        assert w == self._w == intent, (w, self._w, intent)
        assert w % L.ALIGN == 0 and tail % L.ALIGN == 0, (w, tail)
        assert tail <= last < w and w - tail <= self._cap, (tail, last, w)
        if self._block:
            assert w <= self._limit, ("wrote past the slowest live reader", w, self._limit)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Mark the ring closed (readers drain, then get ``RingBufferClosed``) and unmap it.

        Safe to call twice. Does not remove the segment: call :meth:`unlink` for that.
        """
        self._shut(unlink=False)

    def unlink(self) -> None:
        """Remove the segment name (only the creator can). Attached readers keep their
        mapping until they close; new attaches fail. Safe to call twice; closes too."""
        self._finalizer.detach()
        self._shut(unlink=True)

    def _shut(self, unlink: bool) -> None:
        if self._q is not None and self._res.pid == os.getpid():
            self._q[L.Q_CLOSED] = 1  # before the wake-ups: readers must see it when they wake
            self._wake_loop_readers()  # the futex sleepers are woken by the mapping's close
        if self._wake_sock is not None:
            self._wake_sock.close()
            self._wake_sock = None
        self._closed = self._slow = True
        self._mm = self._q = self._native = None  # type: ignore[assignment]  # closed for good
        self._res.close(unlink=unlink)
