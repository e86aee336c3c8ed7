"""The OS resources behind one end of a ring, and the picklable handle that names a ring."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from shm import _layout as L
from shm import _segment, _wait

logger = logging.getLogger("shm")

try:
    from shm._ringfast import Seg as _Seg
except ImportError:  # not built (no C compiler at install time): the Python paths run alone
    _Seg = None

NATIVE = _Seg is not None and not L.PURE
"""Whether new ring ends use the C hot paths (``shm._ringfast``). Read when an end is made, so
a test can switch it per ring; the Python paths are the reference and stay complete."""


@dataclass(frozen=True)
class RingHandle:
    """What a reader needs to attach: small, immutable and picklable (send it to a Ray actor).

    Attributes:
        name: Segment name under ``/dev/shm`` (``raygent-<owner pid>-<hex>``).
        capacity_bytes: Size of the data region, checked against the header at attach.
        boot_id: Boot id of the node that made the ring; attaching elsewhere fails clearly.
    """

    name: str
    capacity_bytes: int
    boot_id: str

    def is_local(self) -> bool:
        """Tell whether this handle was made on the calling process's node (same boot id)."""
        own = _segment.boot_id()
        return not (self.boot_id and own) or self.boot_id == own


class Mapping:
    """An open segment: fd (for ``flock``), mapping, its views and futex, released exactly once
    by ``close`` or by the owner's ``weakref.finalize`` (which must not reference the owner).

    Attributes:
        q: The mapping as 8-byte words; every cross-process cursor goes through it (see
            ``shm._layout`` for why not ``struct``).
        view: The mapping as bytes; zero-copy reads are slices of it.
    """

    def __init__(self, name: str, fd: int, mm, owner: bool) -> None:
        self.name = name
        self.fd = fd
        self.mm = mm
        self.view = memoryview(mm)
        self.q = self.view.cast("Q")
        self.futex = _wait.Futex(mm, L.OFF_FUTEX)
        self.owner = owner
        self.pid = os.getpid()  # a forked child inherits this object but owns nothing
        self.slot = -1
        self.slot_token = 0
        self.open = True
        self.native = None

    def native_paths(self, data_offset: int, capacity: int, frame_max: int):
        """The C hot paths over this mapping (``shm._ringfast.Seg``), or None when they are
        not built or switched off (:data:`NATIVE`). They hold a buffer export of the mapping
        until :meth:`close`."""
        if NATIVE and _Seg is not None:
            self.native = _Seg(self.mm, data_offset, capacity, frame_max)
        return self.native

    def free_slot(self) -> None:
        """Release this reader's slot, if it still holds it (the writer may have evicted it)."""
        if self.slot < 0:
            return
        q = self.q
        with _segment.locked(self.fd):
            pid_i = L.slot_q(self.slot, L.SLOT_PID)
            token_i = L.slot_q(self.slot, L.SLOT_TOKEN)
            if q[pid_i] == os.getpid() and q[token_i] == self.slot_token:
                q[pid_i] = 0
        self.slot = -1

    def close(self, unlink: bool = False) -> None:
        """Unmap; the owner also marks the ring closed and wakes sleeping readers."""
        inherited = os.getpid() != self.pid
        if self.open:
            self.open = False
            if inherited:
                pass  # a fork of the owner/reader: unmap our copy, touch nothing shared
            elif self.owner:
                self.q[L.Q_CLOSED] = 1
                self.futex.wake_all()
            else:
                self.free_slot()
            self.futex.release()
            if self.native is not None:
                self.native.release()
                self.native = None
            self.q.release()
            self.view.release()
            try:
                self.mm.close()
            except BufferError:
                # A caller still holds a zero-copy view; the mapping goes when the view does.
                logger.warning("ring %s closed while zero-copy views are alive", self.name)
            os.close(self.fd)
        if unlink and self.owner and not inherited:
            _segment.unlink(self.name)
