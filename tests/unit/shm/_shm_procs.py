"""Child-process bodies for the shm tests (importable by name, so spawn can run them)."""

import os
import struct
import time

from shm import Lapped, RingBuffer, RingBufferClosed

PATTERN = bytes(range(256)) * 8
SEQ = struct.Struct("Q")


def stamped(seq: int, n: int) -> bytes:
    """A self-describing payload: its seq, then bytes that depend on the seq."""
    start = seq % 251
    return SEQ.pack(seq) + PATTERN[start : start + n - 8]


def check_stamped(data) -> int:
    """Return the seq of a stamped payload; raise AssertionError if any byte is wrong."""
    (seq,) = SEQ.unpack_from(data)
    start = seq % 251
    assert bytes(data[8:]) == PATTERN[start : start + len(data) - 8], f"torn record {seq}"
    return seq


def read_all(handle, expected: int, conn, start: str = "oldest") -> None:
    """Attach, read ``expected`` records, send them back."""
    reader = RingBuffer.attach(handle, start=start)
    conn.send("attached")
    got = []
    while len(got) < expected:
        got.extend(reader.read_many(64, timeout_s=10))
    reader.close()
    conn.send(got)


def write_then_close(count: int, conn) -> None:
    """Create a ring, send its handle, wait for "go", write ``count`` records, close."""
    ring = RingBuffer.create(capacity_bytes=1 << 16)
    conn.send(ring.handle)
    assert conn.recv() == "go"
    for i in range(count):
        ring.write(b"rec-%d" % i)
    ring.close()
    conn.recv()  # keep the segment until the parent has read everything
    ring.unlink()


def write_forever(capacity: int, on_full: str, sizes: tuple[int, int], conn) -> None:
    """Create a ring, send its handle, then write stamped records until killed or stopped."""
    ring = RingBuffer.create(capacity_bytes=capacity, on_full=on_full)
    conn.send(ring.handle)
    lo, hi = sizes
    seq = 0
    span = hi - lo + 1
    while not conn.poll():
        for _ in range(16):  # single records, then a batch (frames): both must survive laps
            ring.write(stamped(seq, lo + (seq * 7919) % span))
            seq += 1
        batch = [stamped(seq + i, lo + ((seq + i) * 7919) % span) for i in range(16)]
        ring.write_many(batch)
        seq += len(batch)
    conn.send(seq)
    ring.close()
    ring.unlink()


def write_some_then_hang(count: int, conn) -> None:
    """Create a ring, write ``count`` records, report, then idle until SIGKILLed."""
    ring = RingBuffer.create(capacity_bytes=1 << 16)
    for i in range(count):
        ring.write(b"%d" % i)
    conn.send(ring.handle)
    while True:
        time.sleep(1)


def attach_and_hang(handle, conn) -> None:
    """Attach a reader, report, then idle until SIGKILLed (a reader that dies)."""
    reader = RingBuffer.attach(handle, start="oldest")
    conn.send(os.getpid())
    while True:
        time.sleep(1)
    reader.close()


def create_and_hang(conn) -> None:
    """Create a ring, report its name, then idle until SIGKILLed (a writer that dies)."""
    ring = RingBuffer.create(capacity_bytes=4096)
    conn.send(ring.name)
    while True:
        time.sleep(1)
    ring.close()


def idle_cpu(handle, conn) -> None:
    """Measure the CPU a reader burns while waiting on an idle ring, after 100 ms."""
    reader = RingBuffer.attach(handle)
    assert reader.read(timeout_s=0.1) is None  # the first 100 ms: spin, then settle
    wall0, cpu0 = time.perf_counter(), time.process_time()
    assert reader.read(timeout_s=1.0) is None
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    reader.close()
    conn.send((cpu, wall))


def lapping_reader(handle, seconds: float, conn) -> None:
    """Read an overwrite ring that laps us; verify every byte; report counts."""
    reader = RingBuffer.attach(handle, start="oldest")
    conn.send("attached")
    records = laps = lost = 0
    expected = None  # next seq: consecutive, except for gaps that Lapped reported exactly
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        try:
            batch = reader.read_many(32, timeout_s=1.0)
        except Lapped as exc:
            laps += 1
            lost += exc.lost
            expected = None if expected is None else expected + exc.lost
            continue
        except RingBufferClosed:
            break
        for data in batch:
            seq = check_stamped(data)
            assert expected is None or seq == expected, (seq, expected)
            expected = seq + 1
            records += 1
    reader.close()
    conn.send((records, laps, lost))
