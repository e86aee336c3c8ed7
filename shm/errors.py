"""Typed errors of the ``shm`` package, all under one base, :class:`ShmError`.

Each docstring says whether the condition is *recoverable* (the same object can be used again)
or *fatal* (the ring, or this end of it, is finished and must be closed). Operating-system errors
are translated into these at one boundary (``shm._segment``), always with ``from exc``.
"""

from __future__ import annotations

__all__ = [
    "Lapped",
    "RecordTooLarge",
    "RingBufferClosed",
    "RingBufferFull",
    "SegmentCorrupt",
    "SegmentError",
    "SegmentNoSpace",
    "ShmError",
    "TooManyReaders",
    "WriterDead",
]


class ShmError(Exception):
    """Base of every error raised by ``shm``; catch this to handle them all."""


class RingBufferFull(ShmError):
    """A ``block``-policy writer waited its whole timeout for the slowest live reader.

    Recoverable: the records before ``written`` were published, the rest were not; retry them,
    or raise the ``timeout_s`` argument / the ring's ``block_timeout_s``.

    Attributes:
        written: How many records of the failed call were published before the timeout.
    """

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written

    def __reduce__(self) -> tuple[type[RingBufferFull], tuple[str, int]]:
        return (type(self), (str(self), self.written))


class Lapped(ShmError):
    """The writer overwrote records this reader had not read yet (``overwrite`` policy).

    Recoverable: the reader has already been moved to the oldest record still present; the next
    read returns it. ``lost`` is how many records were skipped.

    Attributes:
        lost: Number of records this reader will never see.
    """

    def __init__(self, lost: int) -> None:
        super().__init__(f"reader was lapped by the writer and lost {lost} record(s)")
        self.lost = lost

    def __reduce__(self) -> tuple[type[Lapped], tuple[int]]:
        # Exceptions with custom __init__ arguments need this to cross process boundaries
        # (Ray and multiprocessing ship exceptions by value).
        return (type(self), (self.lost,))


class RecordTooLarge(ShmError, ValueError):
    """A record does not fit in the ring. Raised before any byte is copied.

    Recoverable: the ring is untouched. Create a ring with a larger ``capacity_bytes``.
    """


class RingBufferClosed(ShmError):
    """The ring is closed: the writer closed it and this reader has read every record, or this
    end was closed locally. Fatal for this end."""


class WriterDead(ShmError):
    """The writer process died without closing the ring, and every record it published has been
    read. Fatal: the ring will never receive another record."""


class TooManyReaders(ShmError):
    """Every reader slot is held by a live reader. Recoverable once a reader closes; or create
    the ring with a larger ``max_readers``."""


class SegmentError(ShmError):
    """The shared-memory segment cannot be created or opened (missing, other node, permissions).
    Fatal for the call."""


class SegmentNoSpace(SegmentError):
    """``/dev/shm`` has too little free space for the requested ring. Raised at creation, so that
    a full tmpfs never surfaces later as SIGBUS. Fatal for the call; ask for less, or free or
    enlarge ``/dev/shm``."""


class SegmentCorrupt(SegmentError):
    """A value read from shared memory is out of range (bad magic, cursor or record length) and
    is not explained by the writer lapping the reader. Fatal: the segment is not trustworthy."""
