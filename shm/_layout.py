"""Byte layout of a raygent ring segment: every offset, record format and cursor rule.

A segment is one file in ``/dev/shm`` named ``raygent-<owner pid>-<random hex>``: a header
region (page aligned) followed by the data region of ``capacity`` bytes.

Header region::

    off  size  field          written by   meaning
    ---  ----  -------------  -----------  ------------------------------------------------
      0     8  MAGIC          creator      b"RAYGRING"; written last, so a half-made header
                                           never looks valid
      8     4  VERSION        creator      LAYOUT_VERSION
     12     4  FLAGS          creator      bit 0: CRC32 of every payload in the record header
     16     8  CAPACITY       creator      size of the data region (multiple of 8)
     24     8  DATA_OFFSET    creator      where the data region starts (page aligned)
     32     4  POLICY         creator      0 = block, 1 = overwrite
     36     4  MAX_READERS    creator      number of reader slots
     40     8  WRITER_PID     creator      owner's pid
     48     8  WRITER_START   creator      owner's start time (/proc/<pid>/stat field 22)
     56     8  WRITER_PIDNS   creator      inode of the owner's pid namespace
    ---- 64: one cache line written only by the writer ----------------------------------
     64     8  TAIL           writer       start of the oldest record that is still intact
     72     8  INTENT         writer       end of the bytes the writer may be writing now
     80     8  WRITE          writer       end of the last published record (low 32 bits
                                           are the futex word readers sleep on)
     88     8  LAST           writer       start of the last published record
     96     8  CLOSED         writer       1 once the writer closed the ring
    ---- 128: one cache line written by readers -----------------------------------------
    128     1  WAITERS        readers      1 = a reader may be asleep on the futex; the writer
                                           clears it and wakes them (FUTEX_WAKE)
    129     1  NEW_READER     attach       1 = a reader attached; the writer clears it and
                                           re-reads the slot table before its next write
                                           (the writer loads bytes 128..135 as one word)
    136     8  SLOTS_HIGH     attach       slots [0, SLOTS_HIGH) may be in use
    ---- 256: reader slot table, MAX_READERS x 64 bytes (one cache line per reader) -------
    +0      8  PID            reader       0 = free; written last on claim, first on release
    +8      8  START          reader       reader's start time (pid-reuse guard)
    +16     8  PIDNS          reader       reader's pid namespace (liveness checkable?)
    +24     8  TOKEN          reader       random; tells two readers of one process apart
    +32     8  CURSOR         reader       everything before this has been consumed
    +40     8  WAKE           reader       1 = asleep in an event loop: after a publish the
                                           writer clears it and sends one datagram to the
                                           reader's socket (``wake_address(pid, token)``)

Data region: records laid end to end, each 8-byte aligned; a record never straddles the end::

    0                                                                    capacity
    |[hdr|payload..|pad][hdr|payload|pad] ... [hdr|payload|pad][WRAP|0000]|
     ^ phys(TAIL)                                   phys(LAST) ^     ^ phys(WRITE)

    record header (16 bytes, native order):
    +0   u32  length     payload bytes; FRAME_FLAG (bit 31) set: a batch frame of
                         (length & ~FRAME_FLAG) bytes; WRAP_LENGTH: a wrap marker
    +4   u32  check      record_check(length, seq) -- or the payload CRC32 seeded with it
    +8   u64  seq        index of the (first) record: 0, 1, 2, ... counting the records
                         inside frames one by one; a wrap marker carries the next seq
    +16  payload, then padding up to a multiple of 8

    batch frame payload (write_many packs many small records into one ring record, so that
    the per-record work is C loops -- join, array, accumulate -- instead of Python bytecode):
    +0   u32  count      records in the frame (>= 2)
    +4   u32  lengths[count]
    ...  zero padding to a multiple of 8, then the records back to back; the lengths must
         add up to exactly the rest of the frame, or the frame is corrupt

Cursors (TAIL, INTENT, WRITE, LAST, a slot's CURSOR) are *monotonic* byte offsets: they only
grow, and ``cursor % capacity`` is the physical offset. A record of ``size`` bytes that does not
fit before the end is preceded by a wrap marker (or, if fewer than 16 bytes remain, by nothing:
a reader skips a tail shorter than a header) and starts at physical 0 of the next lap.

Record states as a reader at cursor ``c`` sees them (``cap`` = capacity)::

    condition                                   state      reader action
    ------------------------------------------  ---------  -----------------------------------
    c == WRITE                                  empty      wait (CLOSED -> RingBufferClosed,
                                                           dead writer -> WriterDead)
    c < WRITE, INTENT <= c + cap, header valid  readable   copy the payload, then re-check
                                                           INTENT (seqlock) before returning it
    INTENT > c + cap (before or after the copy) lapped     discard the copy, move to TAIL,
                                                           raise Lapped(lost)
    length == WRAP_LENGTH                       wrap       skip to the next lap
    length & FRAME_FLAG, valid frame            readable   as a record; yields `count`
                                                           records, seq .. seq + count - 1
    cap - c % cap < HEADER_SIZE                 wrap       skip to the next lap (no marker)
    c > WRITE, or header invalid while          corrupt    raise SegmentCorrupt
    INTENT <= c + cap

Reader slot states::

    PID   meaning                 who moves it
    ----  ----------------------  ----------------------------------------------------------
    0     free                    attach claims it (under flock); writer never reads CURSOR
    pid   live reader             reader moves CURSOR forward after every read
    pid   dead reader             writer (blocked) or a later attach finds pid dead and
                                  frees it (under flock) -- eviction

Why the writer publishes INTENT *before* it writes and WRITE *after*: a record that occupied
``[c, c + size)`` is physically overwritten only by writes at monotonic positions
``>= c + cap``, so a copy taken between two loads is intact iff ``INTENT <= c + cap`` at the
second load (Aeron's broadcast buffer uses the same "tail intent" rule).

How a cursor is stored matters. Every 8-byte field that another process reads while it changes
(TAIL, INTENT, WRITE, LAST, SLOTS_HIGH, a slot's PID and CURSOR) is stored and loaded through a
``memoryview`` of the mapping cast to ``"Q"``: ``q[i] = x`` is one aligned 8-byte ``memcpy``, a
single machine store. ``struct.pack_into`` must not be used for them: it first ``memset``s the
destination to zero and then writes the fields, so a concurrent reader can see a cursor of 0
(found the hard way: a zero INTENT made a torn copy look intact). ``struct`` is fine for record
headers, which nobody trusts before the INTENT check, and for fields written once at creation.
x86-64 keeps stores in program order and loads in program order (TSO), which is what makes
"payload, then WRITE" a publish; on weakly ordered CPUs create the ring with ``checksum=True``.
"""

from __future__ import annotations

import os
import struct
import sys

# -- segment naming ---------------------------------------------------------------------------
SHM_DIR = "/dev/shm"
NAME_PREFIX = "raygent-"

# -- header region ----------------------------------------------------------------------------
MAGIC = b"RAYGRING"
LAYOUT_VERSION = 1
PAGE_SIZE = 4096

OFF_MAGIC = 0
OFF_VERSION = 8
OFF_FLAGS = 12
OFF_CAPACITY = 16
OFF_DATA_OFFSET = 24
OFF_POLICY = 32
OFF_MAX_READERS = 36
OFF_WRITER_PID = 40
OFF_WRITER_START = 48
OFF_WRITER_PIDNS = 56

OFF_TAIL = 64
OFF_INTENT = 72
OFF_WRITE = 80
OFF_LAST = 88
OFF_CLOSED = 96

OFF_ATTENTION = 128  # the word holding WAITERS and NEW_READER
OFF_WAITERS = 128
OFF_NEW_READER = 129
OFF_SLOTS_HIGH = 136

OFF_SLOTS = 256
SLOT_SIZE = 64
SLOT_PID = 0
SLOT_START = 8
SLOT_PIDNS = 16
SLOT_TOKEN = 24
SLOT_CURSOR = 32
SLOT_WAKE = 40

# The futex word is the low half of WRITE: it changes on every publish.
OFF_FUTEX = OFF_WRITE if sys.byteorder == "little" else OFF_WRITE + 4

# Indexes into the mapping viewed as 8-byte words (memoryview.cast("Q")): atomic stores/loads.
Q_TAIL = OFF_TAIL // 8
Q_INTENT = OFF_INTENT // 8
Q_WRITE = OFF_WRITE // 8
Q_LAST = OFF_LAST // 8
Q_CLOSED = OFF_CLOSED // 8
Q_ATTENTION = OFF_ATTENTION // 8
Q_SLOTS_HIGH = OFF_SLOTS_HIGH // 8

FLAG_CRC32 = 1
POLICY_BLOCK = 0
POLICY_OVERWRITE = 1
POLICIES = {"block": POLICY_BLOCK, "overwrite": POLICY_OVERWRITE}

MAX_READERS_LIMIT = 1024

# -- records ----------------------------------------------------------------------------------
HEADER_SIZE = 16
ALIGN = 8
WRAP_LENGTH = 0xFFFFFFFF
FRAME_FLAG = 0x80000000
MAX_LENGTH = FRAME_FLAG - 1  # largest single record (2 GiB - 1)
FRAME_MAX_BYTES = 64 * 1024  # frames stay small: cache-friendly, and a reader's batch unit
FRAME_COUNT = struct.Struct("I")
CHECK_KEY = 0x5AC396E1
MASK32 = 0xFFFFFFFF
MIN_CAPACITY = 64


def frame_max(capacity: int) -> int:
    """Largest frame a ring of ``capacity`` bytes carries: writer and reader must agree."""
    return min(FRAME_MAX_BYTES, capacity - HEADER_SIZE)


# Native formats: one aligned memcpy per field (see the module docstring for why not "<").
U64 = struct.Struct("Q")
RECORD = struct.Struct("IIQ")  # length, check, seq
SLOT = struct.Struct("QQQQQ")  # pid, start, pidns, token, cursor
STATIC = struct.Struct("8sIIQQIIQQQ")  # MAGIC .. WRITER_PIDNS
assert RECORD.size == HEADER_SIZE
assert STATIC.size == OFF_TAIL

# -- debug invariants -------------------------------------------------------------------------
# Off by default: they cost a few percent on the hot path. The tests switch them on. This is the
# only place shm reads the environment.
DEBUG = os.environ.get("RAYGENT_SHM_DEBUG", "") == "1"
# RAYGENT_SHM_PURE=1: never use the C hot paths (shm._ringfast), even when they are built.
PURE = os.environ.get("RAYGENT_SHM_PURE", "") == "1"


def record_check(length: int, seq: int) -> int:
    """Return the 32-bit header check of a record; all-zero memory never passes it.

    Args:
        length: Payload length (or WRAP_LENGTH).
        seq: Record sequence number.

    Returns:
        The value stored in the header's ``check`` field when payload CRCs are off.
    """
    return (length ^ seq ^ CHECK_KEY) & MASK32


def record_size(length: int) -> int:
    """Return the bytes a record of ``length`` payload bytes occupies, header and padding
    included."""
    return (length + HEADER_SIZE + ALIGN - 1) & -ALIGN


def header_bytes(max_readers: int) -> int:
    """Return the size of the header region for ``max_readers`` slots, rounded to a page."""
    end = OFF_SLOTS + SLOT_SIZE * max_readers
    return (end + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


def slot_offset(index: int) -> int:
    """Return the offset of reader slot ``index`` within the header region."""
    return OFF_SLOTS + SLOT_SIZE * index


def slot_q(index: int, field: int) -> int:
    """Return the 8-byte word index of ``field`` (SLOT_PID, SLOT_CURSOR, ...) of slot
    ``index``."""
    return (OFF_SLOTS + SLOT_SIZE * index + field) // 8


def wake_address(pid: int, token: int) -> bytes:
    """Return the abstract Unix socket address an event-loop reader (``RingReader.wake_fd``)
    is woken at: derived from its slot's PID and TOKEN, so the writer needs nothing else."""
    return b"\0raygent-wake-%d-%x" % (pid, token)


def segment_path(name: str) -> str:
    """Return the file path of the segment called ``name``."""
    return os.path.join(SHM_DIR, name)
