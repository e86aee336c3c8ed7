"""The reading end of a ring: validate every header, copy, then prove the copy was not torn.

A read takes the record at the reader's cursor ``c`` only if its header is exactly what is
expected (sequence number, check, a length that stays inside the lap and before WRITE), copies
it, and then loads INTENT: ``INTENT <= c + capacity`` proves the writer had not started to
overwrite those bytes when the copy ended (the state table is in ``shm._layout``). Anything else
is either a lap (move to TAIL, raise ``Lapped``) or corruption (``SegmentCorrupt``), and the two
are told apart by whether the cursors still move. ``read_many`` does the INTENT check once for a
whole batch, and discards the whole batch if it fails.

A batch frame (``write_many``) is split into its records with C loops (``array``,
``itertools.accumulate``) and one slice per record; records beyond ``max_items`` wait in a
pending list, so ``read`` after ``write_many`` costs a list index per record.

``shm._ringfast`` (when built) does the copying reads in C: ``read``'s fast path in one call,
and ``read_many``'s walk over records, frames and wrap markers, with the same checks; the
INTENT check, laps, corruption and zero-copy views stay here. An event loop can read a ring
without a thread: ``wake_fd`` and ``arm`` (below).
"""

from __future__ import annotations

import array
import logging
import os
import secrets
import socket
import time
import weakref
import zlib
from itertools import accumulate, pairwise

from shm import _layout as L
from shm import _segment, _wait
from shm._mapping import Mapping, RingHandle
from shm.errors import Lapped, RingBufferClosed, SegmentCorrupt, TooManyReaders, WriterDead

logger = logging.getLogger("shm")

_REC_unpack = L.RECORD.unpack_from
_DEBUG = L.DEBUG
_KEY = L.CHECK_KEY
_M32 = L.MASK32
_WRAP = L.WRAP_LENGTH
_FRAME_FLAG = L.FRAME_FLAG
_LEN_MASK = L.FRAME_FLAG - 1
_FRAME_COUNT_unpack = L.FRAME_COUNT.unpack_from
_TIMED_OUT = object()  # _copy_batch: the caller's deadline passed
_ATTACH_WAIT_S = 5.0  # attach waits this long at most for a publish in flight
_Q_TAIL = L.Q_TAIL
_Q_INTENT = L.Q_INTENT
_Q_WRITE = L.Q_WRITE
_Q_LAST = L.Q_LAST


class RingReader:
    """One reader's cursor over a ring. Made by ``RingBuffer.attach``.

    Every reader sees every record, in order. Not thread-safe, not picklable, and not to be
    used across ``fork``: attach in each process that reads. ``read``/``read_many`` return
    ``bytes`` by default; with ``copy=False`` they return memoryviews into the ring, valid until
    the next read call on this reader (block policy: the writer cannot overwrite them before;
    overwrite policy: check :meth:`views_intact`).

    Example:
        >>> from shm import RingBuffer
        >>> ring = RingBuffer.create(capacity_bytes=4096)
        >>> with RingBuffer.attach(ring.handle) as reader:
        ...     ring.write(b"x")
        ...     reader.read(timeout_s=1.0)
        b'x'
        >>> ring.close(); ring.unlink()
    """

    def __init__(self, handle: RingHandle, start: str) -> None:
        fd, mm = _segment.open_existing(handle.name)
        self._res = res = Mapping(handle.name, fd, mm, owner=False)
        self._finalizer = weakref.finalize(self, res.close)
        try:
            self._handle = handle
            self._read_static(mm)
            self._mm = mm
            self._mv = res.view
            self._q = res.q
            self._views_from = -1
            self._next_liveness = 0.0
            # Records of a batch frame already copied (or viewed) but not yet returned:
            # self._pending[self._next:].
            self._pending: list = []
            self._next = 0
            self._pending_views = False
            self._hold = -1  # start of the frame those views point into
            self._wake: socket.socket | None = None  # wake_fd's socket, made on demand
            # The C hot paths (shm._ringfast), when built; copies only, no CRCs.
            frame_max = L.frame_max(self._cap)
            self._native = None if self._crc else res.native_paths(self._base, self._cap, frame_max)
            self._claim_slot(start)
        except BaseException:
            self._finalizer()
            raise

    def _read_static(self, mm) -> None:
        (magic, version, flags, cap, data_off, policy, max_readers, wpid, wstart,
         wns) = L.STATIC.unpack_from(mm, 0)  # fmt: skip
        name = self._handle.name
        if magic != L.MAGIC or version != L.LAYOUT_VERSION:
            raise SegmentCorrupt(
                f"{name} is not a ring of layout version {L.LAYOUT_VERSION} "
                f"(magic {magic!r}, version {version})"
            )
        if (
            cap != self._handle.capacity_bytes
            or data_off + cap != len(mm)
            or cap % L.ALIGN
            or cap < L.MIN_CAPACITY
            or not 1 <= max_readers <= L.MAX_READERS_LIMIT
            or data_off < L.header_bytes(max_readers)
            or data_off % L.PAGE_SIZE
            or policy not in L.POLICIES.values()
        ):
            raise SegmentCorrupt(
                f"{name}: header says capacity {cap}, data offset {data_off}, {max_readers} "
                f"readers, policy {policy}, but the file is {len(mm)} bytes and the handle "
                f"says capacity {self._handle.capacity_bytes}"
            )
        self._cap = cap
        self._base = data_off
        self._max_readers = max_readers
        self._block = policy == L.POLICY_BLOCK
        self._crc = bool(flags & L.FLAG_CRC32)
        self._writer = (wpid, wstart, wns)

    def __reduce__(self):
        raise TypeError("a RingReader cannot be pickled; send its handle and attach there")

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def handle(self) -> RingHandle:
        """The handle this reader attached with."""
        return self._handle

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._mm is None

    def lag_bytes(self) -> int:
        """Bytes published but not yet read by this reader (0 when caught up)."""
        self._check_open()
        return self._q[_Q_WRITE] - self._c

    # -- attach -----------------------------------------------------------------------------

    def _claim_slot(self, start: str) -> None:
        """Take a free slot (or one of a dead reader) under the segment lock, then position."""
        q = self._q
        me = _segment.current_process()
        token = secrets.randbits(63) | 1
        with _segment.locked(self._res.fd):
            index = None
            for i in range(self._max_readers):
                pid = q[L.slot_q(i, L.SLOT_PID)]
                if pid == 0 or not _segment.is_alive(
                    pid, q[L.slot_q(i, L.SLOT_START)], q[L.slot_q(i, L.SLOT_PIDNS)]
                ):
                    index = i
                    break
            if index is None:
                raise TooManyReaders(
                    f"ring {self._handle.name} has {self._max_readers} live readers already; "
                    "create it with a larger max_readers"
                )
            q[L.slot_q(index, L.SLOT_PID)] = 0
            q[L.slot_q(index, L.SLOT_START)] = me.start
            q[L.slot_q(index, L.SLOT_PIDNS)] = me.pidns
            q[L.slot_q(index, L.SLOT_TOKEN)] = token
            q[L.slot_q(index, L.SLOT_WAKE)] = 0
            q[L.slot_q(index, L.SLOT_CURSOR)] = q[_Q_TAIL]  # hold everything while positioning
            q[L.slot_q(index, L.SLOT_PID)] = me.pid  # last: now the slot is live
            if index >= q[L.Q_SLOTS_HIGH]:
                q[L.Q_SLOTS_HIGH] = index + 1
        self._mm[L.OFF_NEW_READER] = 1
        self._res.slot = index
        self._res.slot_token = token
        self._slot_cursor = L.slot_q(index, L.SLOT_CURSOR)
        self._position(start)
        # Again, now with the final cursor: the writer re-reads the slots before its next
        # write. (A write already in flight may still lap a reader that starts at a record
        # about to be overwritten; its first read then raises Lapped.)
        self._mm[L.OFF_NEW_READER] = 1

    def _position(self, start: str) -> None:
        """Place the cursor on the newest (or oldest) record and learn its sequence number."""
        q = self._q
        seen = None
        for _ in range(10_000):
            w = q[_Q_WRITE]  # WRITE before LAST and TAIL: they are never ahead of it
            last = q[_Q_LAST]
            tail = q[_Q_TAIL]
            if w == 0:
                self._c, self._s = 0, 0
                q[self._slot_cursor] = 0
                return
            c = tail if start == "oldest" else last
            q[self._slot_cursor] = c
            if w <= c <= q[_Q_INTENT] and c % L.ALIGN == 0:
                # The oldest record is being written right now: wait for its publish.
                if self._wait(w, time.perf_counter() + _ATTACH_WAIT_S):
                    continue
                break
            record = self._record_at(c, w)
            if record is not None:
                self._c, self._s = c, record[2]
                return
            now = (w, tail, last)
            if now == seen:
                break  # nothing moves: not a race with the writer
            seen = now
        raise SegmentCorrupt(
            f"ring {self._handle.name}: no valid record at TAIL {tail} / LAST {last} (WRITE {w})"
        )

    def _record_at(self, c: int, w: int) -> tuple[int, int, int] | None:
        """Return the header at cursor ``c`` if it is a valid, intact record start, else None
        (the caller re-reads the cursors and tries again)."""
        cap = self._cap
        if c % L.ALIGN or not w - cap <= c < w:
            return None
        pos = c % cap
        if cap - pos < L.HEADER_SIZE:
            return None
        n, chk, seq = _REC_unpack(self._mm, self._base + pos)
        if self._q[_Q_INTENT] > c + cap or n == _WRAP or n & _LEN_MASK > cap - pos - 16:
            return None
        if not self._crc and chk != (n ^ seq ^ _KEY) & _M32:
            return None
        return n, chk, seq

    # -- reading ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._mm is None:
            raise RingBufferClosed(f"reader of {self._handle.name} is closed")

    def read(self, timeout_s: float | None = None, *, copy: bool = True):
        """Return the next record, waiting up to ``timeout_s``.

        Args:
            timeout_s: None waits until a record arrives (or the writer closes or dies);
                0 polls.
            copy: True returns ``bytes``; False returns a memoryview into the ring, valid until
                the next read call on this reader.

        Returns:
            The record (``b""`` for a zero-length record), or None if the timeout passed.

        Raises:
            Lapped: The writer overwrote unread records (overwrite policy); the reader now
                stands at the oldest record still present.
            RingBufferClosed: The writer closed the ring and every record was read, or this
                reader was closed.
            WriterDead: The writer died and every record it published was read.
            SegmentCorrupt: A value in shared memory is impossible.
        """
        native = self._native
        if native is not None and copy and not self._pending:
            data = native.get1(self._c, self._s, self._slot_cursor if self._block else -1)
            if data.__class__ is bytes:  # else None (empty) or False (not a plain record)
                self._c += (len(data) + 23) & -8
                self._s += 1
                if _DEBUG:
                    self._check_invariants()
                return data
        # computed when first needed: the fast path never reads the clock
        deadline: float | None = -1.0
        while True:
            if self._pending:
                return self._take_pending(1, copy)[0]  # list of 1: cheap, and one code path
            q = self._q
            if q is None:
                raise RingBufferClosed(f"reader of {self._handle.name} is closed")
            c = self._c
            w = q[_Q_WRITE]
            if w == c:  # empty: wait, then try the fast path again
                if deadline == -1.0:
                    deadline = None if timeout_s is None else time.perf_counter() + timeout_s
                if not self._wait(c, deadline):
                    return None
                continue
            cap = self._cap
            pos = c % cap
            if 0 < w - c <= cap and pos <= cap - 16 and not self._crc:
                # Fast path: a plain record is waiting right at the cursor.
                off = self._base + pos
                n, chk, seq = _REC_unpack(self._mm, off)
                end = c + ((n + 23) & -8)
                if (
                    seq == self._s
                    and chk == (n ^ seq ^ _KEY) & _M32
                    and n <= cap - pos - 16
                    and end <= w
                ):
                    data = (self._mm if copy else self._mv)[off + 16 : off + 16 + n]
                    if q[_Q_INTENT] <= c + cap:  # the copy is intact
                        self._c = end
                        self._s = seq + 1
                        if not copy:
                            self._views_from = c
                        if self._block:
                            q[self._slot_cursor] = end if copy else c
                        if _DEBUG:
                            self._check_invariants()
                        return data
            # Anything else (frames, wraps, laps, CRCs, corruption): the general path.
            if deadline == -1.0:
                deadline = None if timeout_s is None else time.perf_counter() + timeout_s
            batch = self._read_many(1, deadline, copy)
            return batch[0] if batch else None

    def read_many(
        self, max_items: int = 256, timeout_s: float | None = None, *, copy: bool = True
    ) -> list:
        """Return up to ``max_items`` records: waits for the first, never for the rest.

        Args:
            max_items: Upper bound on the batch size (>= 1).
            timeout_s: As in :meth:`read`.
            copy: As in :meth:`read`; views of a batch stay valid until the next read call.

        Returns:
            The records in order; an empty list if the timeout passed.

        Raises:
            Same as :meth:`read`. If the writer laps this reader during the copy the whole
            batch is discarded and ``Lapped`` is raised: no possibly torn record is returned.
        """
        if max_items < 1:
            raise ValueError(f"max_items={max_items}; must be >= 1")
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        return self._read_many(max_items, deadline, copy)

    def _read_many(self, max_items: int, deadline: float | None, copy: bool) -> list:
        if self._pending:
            return self._take_pending(max_items, copy)
        while True:
            self._check_open()
            c = self._c
            w = self._q[_Q_WRITE]
            if w == c:
                if not self._wait(c, deadline):
                    return []
                continue
            if w < c or w % L.ALIGN:
                moved = self._lapped_or_corrupt(
                    c, f"WRITE cursor {w} is behind the reader at {c}", deadline
                )
            elif w - c > self._cap:
                moved = self._lapped_or_corrupt(c, "", deadline)
            else:
                batch = self._copy_batch(c, w, max_items, copy, deadline)
                if batch is _TIMED_OUT:
                    return []
                if batch is not None:
                    return batch
                continue
            if not moved:
                return []  # the timeout passed while the writer was mid-publish

    def _copy_batch(self, c: int, w: int, max_items: int, copy: bool, deadline: float | None):
        """Copy (or view) records from ``c`` up to ``w``; validate once against INTENT.

        Returns the batch; or None if only wrap markers were consumed or the reader was moved
        (the caller looks again); or ``_TIMED_OUT``. Records of a frame beyond ``max_items``
        go to the pending list, returned by the next calls.
        """
        start = c
        native = self._native
        if native is not None and copy:
            out, c, s, frame_at, problem = native.copy_run(c, w, self._s, max_items)
            problem = problem or ""
        else:
            out, c, s, frame_at, problem = self._walk(c, w, max_items, copy)
        cap = self._cap
        q = self._q
        if q[_Q_INTENT] > start + cap:  # seqlock: some copied bytes may have been overwritten
            return None if self._lapped_or_corrupt(start, "", deadline) else _TIMED_OUT
        if problem and not out:
            return None if self._lapped_or_corrupt(start, problem, deadline) else _TIMED_OUT
        # With a problem after a good prefix, deliver the prefix; the next call meets the
        # problem again, with nothing before it, and raises.
        self._c = c
        self._s = s
        if not out:
            return None  # only wrap markers were consumed: look again
        if len(out) > max_items:  # the last frame overflowed: keep the rest for later
            self._pending = out
            self._next = max_items
            self._pending_views = not copy
            self._hold = frame_at
            out = out[:max_items]
        if self._block:
            q[self._slot_cursor] = c if copy else start
        self._views_from = -1 if copy else start
        if _DEBUG:
            self._check_invariants()
        return out

    def _walk(self, c: int, w: int, max_items: int, copy: bool) -> tuple:
        """Copy (or view) the records from ``c`` towards ``w``: plain ones, frames split, wrap
        markers skipped, until ``w`` or ``max_items`` (a frame is taken whole). Returns
        ``(records, c, s, frame_at, problem)``; ``problem`` names the first bad header ("" if
        none), and the records before it are returned. ``shm._ringfast`` does the same walk
        in C for copies without CRCs."""
        mm = self._mm
        cap = self._cap
        base = self._base
        source = mm if copy else self._mv
        crc = self._crc
        s = self._s
        out: list = []
        add = out.append
        problem = ""
        frame_at = -1
        while c < w and len(out) < max_items:
            pos = c % cap
            room = cap - pos
            if room < L.HEADER_SIZE:  # implicit wrap: no room for a header before the end
                c += room
                continue
            off = base + pos
            n, chk, seq = _REC_unpack(mm, off)
            if n == _WRAP:
                if seq != s or chk != (_WRAP ^ seq ^ _KEY) & _M32:
                    problem = f"bad wrap marker at {c} (seq {seq}, expected {s})"
                    break
                c += room
                continue
            length = n & _LEN_MASK
            end = c + ((length + 23) & -8)
            if seq != s or length > room - 16 or end > w:
                problem = f"bad record header at {c}: length {n}, seq {seq}, expected seq {s}"
                break
            data = source[off + 16 : off + 16 + length]
            if crc:
                if chk != zlib.crc32(data, (n ^ seq ^ _KEY) & _M32):
                    problem = f"payload CRC mismatch at {c} (seq {seq})"
                    break
            elif chk != (n ^ seq ^ _KEY) & _M32:
                problem = f"bad record check at {c} (length {n}, seq {seq})"
                break
            if n & _FRAME_FLAG:
                records = _split_frame(data)
                if type(records) is str:
                    problem = f"bad batch frame at {c} (seq {seq}): {records}"
                    break
                out += records
                frame_at = c
                s = seq + len(records)
            else:
                add(data)
                s = seq + 1
            c = end
        return out, c, s, frame_at, problem

    def _take_pending(self, max_items: int, copy: bool) -> list:
        """Return up to ``max_items`` records left over from a batch frame."""
        self._check_open()
        pending = self._pending
        first = self._next
        last = first + max_items
        out = pending[first:last]
        if last >= len(pending):
            self._pending = []
            if self._block and (copy or not self._pending_views):
                self._q[self._slot_cursor] = self._c  # nothing of the frame is held any more
        else:
            self._next = last
        if self._pending_views:
            if copy:
                out = [bytes(v) for v in out]
            else:
                self._views_from = self._hold
        return out

    def _lapped_or_corrupt(self, c: int, problem: str, deadline: float | None) -> bool:
        """Handle a reader at ``c`` that cannot read on.

        If the writer has overwritten position ``c``, move to the oldest intact record and
        raise ``Lapped`` -- or return True, if only a wrap marker was overwritten and no
        record was lost. If the oldest intact record is the one being written right now, wait
        for it until ``deadline`` and return False if it passes. Otherwise raise
        ``SegmentCorrupt`` describing ``problem``.
        """
        q = self._q
        cap = self._cap
        intent = q[_Q_INTENT]
        w = q[_Q_WRITE]
        if problem and intent <= c + cap and w - c <= cap:
            raise SegmentCorrupt(f"ring {self._handle.name}: {problem}")
        seen = None
        for attempt in range(10_000):
            w = q[_Q_WRITE]
            tail = q[_Q_TAIL]
            if w <= tail <= q[_Q_INTENT] and tail % L.ALIGN == 0:
                # Everything older is being overwritten and the oldest intact record is the one
                # being written right now: wait for its publish (or the writer's death).
                if not self._wait(w, deadline):
                    return False
                continue
            record = self._record_at(tail, w)
            if record is None:
                # Either the writer moved on while we looked (retry), or nothing moves and the
                # cursors are simply wrong (corrupt).
                now = (w, tail, q[_Q_INTENT])
                if now == seen:
                    break
                seen = now
                if attempt > 10:
                    os.sched_yield()
                continue
            seq = record[2]
            if tail <= self._c or seq < self._s:
                break  # TAIL did not move past us: the cursors contradict each other
            lost = seq - self._s
            self._c, self._s = tail, seq
            if self._block:
                q[self._slot_cursor] = tail
            if lost:
                raise Lapped(lost)
            return True  # only a wrap marker was overwritten: nothing lost, read on
        raise SegmentCorrupt(
            f"ring {self._handle.name}: reader at {c} is inconsistent with WRITE {w} / "
            f"INTENT {intent} ({problem or 'cursor out of range'})"
        )

    # -- waiting ----------------------------------------------------------------------------

    def _wait(self, c: int, deadline: float | None) -> bool:
        """Wait until WRITE moves past ``c``; False if ``deadline`` passed first.

        Spins briefly, then sleeps on the futex (see ``shm._wait``). Checks the CLOSED flag on
        every wake-up and the writer's liveness at most every ``LIVENESS_INTERVAL_S``.
        """
        q = self._q
        if self._block:
            q[self._slot_cursor] = c  # release the zero-copy views of the last batch
        perf_counter = time.perf_counter
        now = perf_counter()
        yield_until = now + _wait.SPIN_S
        if deadline is not None:
            yield_until = min(yield_until, deadline)
        # 1: spin, giving the core away on every turn: the next record (or a reply) is usually
        # microseconds away, and sched_yield returns at once when no one else wants the core.
        yield_cpu = os.sched_yield
        while q[_Q_WRITE] == c:
            now = perf_counter()
            if now >= yield_until:
                break
            yield_cpu()
        else:
            return True
        # 2: sleep on the futex until the writer publishes (or a liveness check is due).
        futex = self._res.futex
        mm = self._mm
        while True:
            self._check_writer(c, now)
            if deadline is not None and now >= deadline:
                return False
            mm[L.OFF_WAITERS] = 1
            w = q[_Q_WRITE]
            if w != c:
                return True
            sleep_s = min(_wait.FUTEX_TIMEOUT_S, max(self._next_liveness - now, 0.0))
            if deadline is not None:
                sleep_s = min(sleep_s, deadline - now)
            futex.wait(w & _M32, max(sleep_s, 1e-6))
            if q[_Q_WRITE] != c:
                return True
            now = perf_counter()

    def _check_writer(self, c: int, now: float) -> None:
        """Raise if no record will ever come: the writer closed the ring, or died.

        CLOSED is one load; the liveness check reads ``/proc`` and runs at most every
        ``LIVENESS_INTERVAL_S``, so a polling reader (``timeout_s=0``) stays cheap.
        """
        q = self._q
        if q[L.Q_CLOSED]:
            if q[_Q_WRITE] == c:  # CLOSED is stored after the last WRITE
                raise RingBufferClosed(
                    f"ring {self._handle.name} was closed by its writer; all records were read"
                )
            return
        if now < self._next_liveness:
            return
        self._next_liveness = now + _wait.LIVENESS_INTERVAL_S
        pid, start, pidns = self._writer
        if not _segment.is_alive(pid, start, pidns) and q[_Q_WRITE] == c:
            raise WriterDead(
                f"writer pid {pid} of ring {self._handle.name} died; all records were read"
            )

    # -- waiting in an event loop -------------------------------------------------------------

    def wake_fd(self) -> int:
        """Return a file descriptor that becomes readable when the writer publishes after
        :meth:`arm` -- for an event loop (``loop.add_reader``) that reads this ring itself,
        with no thread in between.

        The writer, seeing the reader's slot armed after a publish, sends one datagram to an
        abstract Unix socket named after the slot (``shm._layout.wake_address``): the loop
        wakes from its own ``epoll`` and reads with ``timeout_s=0``. As with the futex, a
        wake-up can in theory be missed (no store-load fence from Python), so a loop reader
        should also poll now and then (every ``shm._wait.FUTEX_TIMEOUT_S`` is what the
        blocking reads do). Linux only; raises ``OSError`` elsewhere.
        """
        self._check_open()
        if self._wake is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.bind(L.wake_address(os.getpid(), self._res.slot_token))
            except OSError:
                sock.close()
                raise
            self._wake = sock
        return self._wake.fileno()

    def arm(self) -> bool:
        """Ask for a datagram on :meth:`wake_fd` at the writer's next publish, and drain the
        ones already there. Returns True when a record is waiting already (read it now: no
        wake-up is coming for it); False means sleep until ``wake_fd`` is readable."""
        self._check_open()
        sock = self._wake
        if sock is not None:
            try:
                while sock.recv(64):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
        if self._pending:
            return True
        q = self._q
        if self._block:
            q[self._slot_cursor] = self._c  # release the zero-copy views of the last batch
        q[L.slot_q(self._res.slot, L.SLOT_WAKE)] = 1
        self._mm[L.OFF_WAITERS] = 1
        return q[_Q_WRITE] != self._c

    def views_intact(self) -> bool:
        """Tell whether the memoryviews returned by the last ``copy=False`` read are still
        untouched by the writer. Always True under the block policy (until the next read)."""
        self._check_open()
        if self._views_from < 0:
            return True
        return self._q[_Q_INTENT] <= self._views_from + self._cap

    def _check_invariants(self) -> None:
        w = self._q[_Q_WRITE]
        assert self._c % L.ALIGN == 0, self._c
        assert self._c <= w, ("reader ahead of writer", self._c, w)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Free this reader's slot and unmap. Safe to call twice. Views must not outlive it."""
        self._mm = self._mv = self._q = self._native = None  # type: ignore[assignment]  # closed
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        self._finalizer()


def _split_frame(frame) -> list | str:
    """Split a batch frame (bytes or memoryview) into its records; a str says what is wrong.

    Every value comes from shared memory, so each is checked before it is used: the count
    must leave room for the lengths array, and the lengths must add up to exactly the rest of
    the frame -- then every slice lies inside it.
    """
    size = len(frame)
    if size < 4:
        return f"{size} bytes is too short for a frame"
    count = _FRAME_COUNT_unpack(frame)[0]
    head = (4 * count + 11) & -8
    if count < 2 or head > size:
        return f"count {count} does not fit in {size} bytes"
    lens = array.array("I")
    lens.frombytes(frame[4 : 4 + 4 * count])
    if sum(lens) != size - head:
        return f"record lengths add up to {sum(lens)}, not {size - head}"
    ends = accumulate(lens, initial=head)
    return [frame[a:b] for a, b in pairwise(ends)]
