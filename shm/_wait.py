"""How a reader waits for the writer without burning a core: spin, then sleep on a futex.

A waiting reader first spins for ``SPIN_S`` (100 us), calling ``sched_yield`` on every turn:
the next record, or a reply, is usually microseconds away, and noticing a publish then costs one
8-byte load, not a wake-up. The yield matters on a machine with more runnable processes than
cores: measured on 2 cores with one core taken by other work, a reader that busy-spun 20 us
before yielding made every ping-pong hop cost those 20 us (round trip 52 us, against 14 us when
yielding from the first turn), because its peer was waiting for the same core; and
``sched_yield`` returns at once when nothing else wants the core.

After that the reader sets the header's WAITERS byte and sleeps in ``FUTEX_WAIT`` on the low 32
bits of WRITE; the writer, after each publish, loads the attention word (one 8-byte load) and,
only if WAITERS is set, clears it and issues ``FUTEX_WAKE``. An idle reader therefore costs
nothing but a wake-up per ``FUTEX_TIMEOUT_S`` (and a ``/proc`` read per ``LIVENESS_INTERVAL_S``
to notice a dead writer), and a woken reader runs within the kernel's wake-up latency instead of
a sleep quantum. Both periods are long on purpose: an agent replica reads one ring per
co-located replica, so with six of them on a 2-core node, 20 ms and 100 ms periods cost each
idle replica about 1.3 % of a core (measured); 100 ms and 500 ms cost a fifth of that, and a
missed wake-up or a dead writer is still noticed within them.

The WAITERS/WRITE handshake is a Dekker pattern, and Python has no store-load fence, so in theory
a wake-up can be missed; the futex sleep therefore always has a timeout (``FUTEX_TIMEOUT_S``),
which bounds the cost of such a miss. Where the futex syscall is unavailable (not Linux,
seccomp) the reader falls back to sleeping with exponential backoff up to ``MAX_SLEEP_S``.

The futex is deliberately not ``FUTEX_PRIVATE``: the word lives in a mapping shared between
processes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import time

SPIN_S = 100e-6
MIN_SLEEP_S = 20e-6
MAX_SLEEP_S = 2e-3
FUTEX_TIMEOUT_S = 100e-3
LIVENESS_INTERVAL_S = 0.5
EVICT_AFTER_S = 0.02  # a blocked writer looks for dead readers after this long

_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(
    platform.machine().lower()
)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_syscall():
    if _SYS_FUTEX is None or not hasattr(os, "sched_yield"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()


class Futex:
    """A futex on a 32-bit word inside a shared mapping.

    Args:
        buffer: A writable buffer (the segment's mmap).
        offset: 4-byte aligned offset of the word.

    The ctypes view exports the mapping, so :meth:`release` must run before the mapping is
    closed.
    """

    def __init__(self, buffer, offset: int) -> None:
        self._word = ctypes.c_uint32.from_buffer(buffer, offset)
        self._addr = ctypes.c_void_p(ctypes.addressof(self._word))
        self.available = _syscall is not None

    def wait(self, expected: int, timeout_s: float) -> None:
        """Sleep until woken, the word differs from ``expected``, or ``timeout_s`` passes."""
        if not self.available:
            time.sleep(min(timeout_s, MAX_SLEEP_S))
            return
        sec = int(timeout_s)
        ts = _Timespec(sec, int((timeout_s - sec) * 1e9))
        rc = _syscall(
            _SYS_FUTEX,
            self._addr,
            _FUTEX_WAIT,
            ctypes.c_uint32(expected),
            ctypes.byref(ts),
            None,
            0,
        )
        if rc == -1 and ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            self.available = False  # seccomp or an emulator: fall back to sleeping

    def wake_all(self) -> None:
        """Wake every process sleeping on the word."""
        if self.available:
            _syscall(_SYS_FUTEX, self._addr, _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)

    def release(self) -> None:
        """Drop the ctypes export so the mapping can be closed."""
        self._word = None  # type: ignore[assignment]  # released: never used again
        self._addr = None  # type: ignore[assignment]
        self.available = False


class Backoff:
    """Exponential sleep from ``MIN_SLEEP_S`` to ``max_s``: for the rare blocked-writer path."""

    __slots__ = ("_delay", "_max")

    def __init__(self, max_s: float = MAX_SLEEP_S) -> None:
        self._delay = MIN_SLEEP_S
        self._max = max_s

    def sleep(self, limit_s: float) -> None:
        """Sleep for the next step, never longer than ``limit_s``."""
        time.sleep(max(0.0, min(self._delay, limit_s)))
        self._delay = min(self._delay * 2, self._max)
