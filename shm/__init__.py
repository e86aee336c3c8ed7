"""Shared-memory ring buffer: one writer, many broadcast readers, on one node.

Standard library only (records are bytes; callers encode them, e.g. with msgpack). Every public
name is importable from here; ``shm.ring`` explains the modules behind them, ``shm._layout``
draws the bytes. ``python -m shm.janitor`` removes segments of dead writers.

Example:
    >>> from shm import RingBuffer
    >>> ring = RingBuffer.create(capacity_bytes=1 << 20, on_full="block")
    >>> reader = RingBuffer.attach(ring.handle)
    >>> ring.write(b"payload")
    >>> reader.read(timeout_s=1.0)
    b'payload'
    >>> reader.close(); ring.close(); ring.unlink()
"""

from shm._janitor import sweep_dead_segments
from shm.errors import (
    Lapped,
    RecordTooLarge,
    RingBufferClosed,
    RingBufferFull,
    SegmentCorrupt,
    SegmentError,
    SegmentNoSpace,
    ShmError,
    TooManyReaders,
    WriterDead,
)
from shm.ring import RingBuffer, RingHandle, RingReader, RingWriter

__all__ = [
    "Lapped",
    "RecordTooLarge",
    "RingBuffer",
    "RingBufferClosed",
    "RingBufferFull",
    "RingHandle",
    "RingReader",
    "RingWriter",
    "SegmentCorrupt",
    "SegmentError",
    "SegmentNoSpace",
    "ShmError",
    "TooManyReaders",
    "WriterDead",
    "sweep_dead_segments",
]
