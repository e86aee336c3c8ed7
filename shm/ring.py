"""The shared-memory ring: one writer process, any number of broadcast readers on one node.

``RingBuffer.create`` makes a segment and returns its :class:`RingWriter`; ``RingBuffer.attach``
opens it elsewhere and returns a :class:`RingReader` with an independent cursor. The two roles are
two classes so that a reader has no ``write`` or ``unlink`` to call by mistake: only the creator
writes and only the creator unlinks. This module validates and normalises arguments and
delegates; the pieces behind it::

    shm._layout    every offset, the record format, the cursor rules and state tables
    shm._writer    RingWriter: record layout, the TAIL/INTENT/WRITE publish, block policy
    shm._reader    RingReader: header validation, the seqlock check, laps, waiting
    shm._wait      spin, then futex sleep (how an idle reader costs no CPU)
    shm._segment   /dev/shm segments without resource_tracker; process liveness
    shm._mapping   the OS resources of one end; RingHandle
"""

from __future__ import annotations

from typing import Literal

from shm import _layout as L
from shm._mapping import RingHandle
from shm._reader import RingReader
from shm._writer import RingWriter
from shm.errors import SegmentError

__all__ = ["RingBuffer", "RingHandle", "RingReader", "RingWriter"]


class RingBuffer:
    """Factory of the two ends of a ring; see :meth:`create` and :meth:`attach`.

    Example:
        >>> from shm import RingBuffer
        >>> ring = RingBuffer.create(capacity_bytes=1 << 16, on_full="block")
        >>> reader = RingBuffer.attach(ring.handle, start="oldest")
        >>> ring.write(b"hello")
        >>> ring.write_many([b"a", b"b"])
        >>> reader.read(timeout_s=1.0)
        b'hello'
        >>> reader.read_many(max_items=8, timeout_s=1.0)
        [b'a', b'b']
        >>> reader.close(); ring.close(); ring.unlink()
    """

    @staticmethod
    def create(
        capacity_bytes: int = 1 << 20,
        on_full: Literal["block", "overwrite"] = "block",
        *,
        block_timeout_s: float = 10.0,
        max_readers: int = 64,
        checksum: bool = False,
    ) -> RingWriter:
        """Create a ring segment and return its writer (the owner).

        Args:
            capacity_bytes: Data region size; rounded up to a multiple of 8. A record takes its
                payload plus 16 header bytes, padded to 8.
            on_full: ``"block"``: the writer waits for the slowest live reader (dead readers are
                evicted), up to a timeout, then raises ``RingBufferFull``. ``"overwrite"``: the
                writer never waits; a lapped reader gets ``Lapped``.
            block_timeout_s: Default wait of a blocked writer (``timeout_s`` overrides per call).
            max_readers: Reader slots (1..1024); each costs 64 bytes of header.
            checksum: Store a CRC32 of each payload (or batch frame) and verify it on read.
                Off by default: on x86-64 the INTENT/WRITE protocol already rules out torn
                reads, and a CRC is one more pass over every payload on both sides. Turn it on
                for weakly ordered CPUs, or to catch stray writes into the segment.

        Returns:
            The writer. Its ``handle`` attaches readers; its ``unlink`` removes the segment.

        Raises:
            ValueError: An argument is out of range.
            SegmentNoSpace: ``/dev/shm`` cannot hold the ring (checked now, never SIGBUS later).
            SegmentError: The segment cannot be created.
        """
        if on_full not in L.POLICIES:
            raise ValueError(f"on_full={on_full!r}; expected 'block' or 'overwrite'")
        capacity = (int(capacity_bytes) + L.ALIGN - 1) & -L.ALIGN
        if capacity < L.MIN_CAPACITY:
            raise ValueError(f"capacity_bytes={capacity_bytes}; must be >= {L.MIN_CAPACITY}")
        if not 1 <= max_readers <= L.MAX_READERS_LIMIT:
            raise ValueError(f"max_readers={max_readers}; must be in 1..{L.MAX_READERS_LIMIT}")
        if block_timeout_s < 0:
            raise ValueError(f"block_timeout_s={block_timeout_s}; must be >= 0")
        return RingWriter(
            capacity, L.POLICIES[on_full], float(block_timeout_s), max_readers, checksum
        )

    @staticmethod
    def attach(handle: RingHandle, *, start: Literal["newest", "oldest"] = "newest") -> RingReader:
        """Attach a reader with its own cursor to an existing ring (any process on the node).

        Args:
            handle: ``writer.handle``.
            start: ``"newest"``: the first read returns the newest record already published
                (or the first one written, if none was); records published together by one
                ``write_many`` count as one here, so that batch is read whole. ``"oldest"``: the
                oldest record still present in the ring.

        Returns:
            A reader; close it when done (it frees its slot; ``with`` works too).

        Raises:
            SegmentError: The ring is gone or belongs to another node.
            SegmentCorrupt: The segment is not a ring of this layout version.
            TooManyReaders: Every slot is held by a live reader.
        """
        if start not in ("newest", "oldest"):
            raise ValueError(f"start={start!r}; expected 'newest' or 'oldest'")
        if not handle.is_local():
            raise SegmentError(
                f"ring {handle.name} was created on another node (boot id {handle.boot_id}); "
                "shm rings are node-local"
            )
        return RingReader(handle, start)
