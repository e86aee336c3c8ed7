"""The ring's public behaviour, in one process: order, broadcast, policies, errors, lifecycle."""

import random
import time
from multiprocessing.reduction import ForkingPickler

import pytest

import shm
from shm import (
    Lapped,
    RecordTooLarge,
    RingBuffer,
    RingBufferClosed,
    RingBufferFull,
    RingHandle,
    SegmentCorrupt,
    SegmentError,
    ShmError,
    TooManyReaders,
)
from shm import _layout as L


def test_all_is_complete_and_every_error_is_exported():
    public = {n for n in dir(shm) if not n.startswith("_")}
    modules = {"errors", "janitor", "ring"}
    assert set(shm.__all__) == public - modules
    errors = [getattr(shm.errors, n) for n in shm.errors.__all__]
    assert all(issubclass(e, ShmError) for e in errors)
    assert set(shm.errors.__all__) <= set(shm.__all__)


def test_round_trip_in_order(ring_factory):
    ring = ring_factory(1 << 16)
    reader = RingBuffer.attach(ring.handle)
    records = [b"", b"a", b"x" * 7, b"y" * 8, b"z" * 1000]
    for r in records:
        ring.write(r)
    ring.write_many([b"m1", b"m2"])
    got = [reader.read(timeout_s=1) for _ in records]
    assert got == records
    assert reader.read_many(max_items=10, timeout_s=1) == [b"m1", b"m2"]
    assert reader.read(timeout_s=0) is None
    assert reader.read_many(timeout_s=0.01) == []
    reader.close()


def test_accepts_any_bytes_like(ring_factory):
    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    ring.write(bytearray(b"ba"))
    ring.write(memoryview(b"mv"))
    ring.write(memoryview(bytes(range(8))).cast("I"))  # 2 items of 4 bytes: 8 bytes
    ring.write_many([bytearray(b"1"), memoryview(b"2"), b"3"])
    got = reader.read_many(10, timeout_s=1)
    assert got == [b"ba", b"mv", bytes(range(8)), b"1", b"2", b"3"]
    reader.close()


def test_every_reader_sees_every_record(ring_factory):
    ring = ring_factory(1 << 12)
    readers = [RingBuffer.attach(ring.handle) for _ in range(3)]
    rng = random.Random(1)
    sent = [bytes([i % 256]) * rng.randrange(0, 300) for i in range(400)]  # ~15 laps
    got = [[] for _ in readers]
    for i in range(0, len(sent), 5):
        if i % 2:
            ring.write_many(sent[i : i + 5])
        else:
            for s in sent[i : i + 5]:
                ring.write(s)
        for reader, out in zip(readers, got, strict=True):
            out.extend(reader.read_many(3, timeout_s=1))
            out.extend(reader.read_many(3, timeout_s=0))
    for reader, out in zip(readers, got, strict=True):
        while len(out) < len(sent):
            out.extend(reader.read_many(64, timeout_s=1))
        assert out == sent
        reader.close()


@pytest.mark.parametrize("on_full", ["overwrite", "block"])
def test_wraps_with_every_gap_size(ring_factory, on_full):
    # Capacity 256: walking the record size over 0..240 puts the wrap point at every offset,
    # including gaps of 8 bytes (too small for a marker) and exactly 16 (a bare marker).
    # A block writer must wait for the reader to pass a wrap marker, so read in a thread.
    import threading

    ring = ring_factory(256, on_full=on_full)
    reader = RingBuffer.attach(ring.handle)
    sent = [(bytes([n % 256, k]) * 121)[:n] for n in range(241) for k in range(3)]
    got = []
    thread = threading.Thread(target=lambda: [got.append(reader.read(timeout_s=5)) for _ in sent])
    thread.start()
    for payload in sent:
        ring.write(payload)
        if on_full == "overwrite":
            while reader.lag_bytes():  # never lap the reader
                time.sleep(0)
    thread.join(10)
    assert got == sent
    reader.close()


def test_late_reader_starts_at_newest_or_oldest(ring_factory):
    ring = ring_factory(256, on_full="overwrite")
    for i in range(50):  # many laps: only the last few records are still present
        ring.write(b"%02d" % i + b"." * 30)
    newest = RingBuffer.attach(ring.handle)
    oldest = RingBuffer.attach(ring.handle, start="oldest")
    assert newest.read(timeout_s=1)[:2] == b"49"
    first_old = int(oldest.read(timeout_s=1)[:2])
    assert 40 < first_old < 49
    ring.write(b"50")
    assert newest.read(timeout_s=1) == b"50"
    rest = oldest.read_many(100, timeout_s=1)
    assert [int(r[:2]) for r in rest] == list(range(first_old + 1, 51))
    newest.close()
    oldest.close()


def test_reader_of_an_empty_ring_gets_the_first_record(ring_factory):
    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"first")
    assert reader.read(timeout_s=1) == b"first"
    reader.close()


def test_record_too_large_is_raised_before_any_copy(ring_factory):
    ring = ring_factory(256)
    reader = RingBuffer.attach(ring.handle)
    assert ring.max_record_bytes == 240
    ring.write(b"x" * 240)  # exactly fits
    assert reader.read(timeout_s=1) == b"x" * 240
    written = ring._w
    with pytest.raises(RecordTooLarge, match="capacity_bytes"):
        ring.write(b"x" * 241)
    with pytest.raises(RecordTooLarge):
        ring.write_many([b"ok", b"x" * 241])
    assert isinstance(RecordTooLarge("x"), ValueError)
    assert ring._w == written  # nothing moved: not even the good record of the batch
    assert reader.read(timeout_s=0) is None
    reader.close()


def test_overwrite_policy_reports_lapped_and_resumes_at_oldest(ring_factory):
    ring = ring_factory(1024, on_full="overwrite")
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"r0" + bytes(62))
    assert reader.read(timeout_s=1)[:2] == b"r0"
    for i in range(1, 100):  # 80-byte records: 12 fit in 1024 bytes
        ring.write(b"r%d" % i + bytes(62))
    with pytest.raises(Lapped) as info:
        reader.read(timeout_s=1)
    oldest = int(reader.read(timeout_s=1)[1:].split(b"\0")[0])
    assert info.value.lost == oldest - 1
    assert 100 - oldest <= 1024 // 80
    rest = reader.read_many(100, timeout_s=1)
    assert len(rest) == 99 - oldest
    reader.close()


def test_block_policy_times_out_with_full_and_reports_progress(ring_factory):
    ring = ring_factory(1024, on_full="block", block_timeout_s=0.2)
    reader = RingBuffer.attach(ring.handle)
    for i in range(12):  # 12 x 80 bytes fit
        ring.write(b"%d" % i + bytes(63))
    t0 = time.perf_counter()
    with pytest.raises(RingBufferFull, match="block_timeout_s") as info:
        ring.write_many([bytes(64)] * 5, timeout_s=0.15)
    elapsed = time.perf_counter() - t0
    assert info.value.written == 0
    assert 0.15 <= elapsed < 1.0
    with pytest.raises(RingBufferFull):
        ring.write(b"x")  # the ring's own block_timeout_s
    # The reader never lost anything: block means block.
    got = reader.read_many(100, timeout_s=1)
    assert [int(g.split(b"\0")[0]) for g in got] == list(range(12))
    ring.write(b"after")
    assert reader.read(timeout_s=1) == b"after"
    reader.close()


def test_block_writer_waits_for_the_slowest_reader(ring_factory):
    ring = ring_factory(512, block_timeout_s=0.05)
    fast, slow = RingBuffer.attach(ring.handle), RingBuffer.attach(ring.handle)
    for _ in range(6):
        ring.write(bytes(64))
    fast.read_many(100, timeout_s=1)
    with pytest.raises(RingBufferFull):
        ring.write(bytes(64))
    slow.read_many(1, timeout_s=1)
    ring.write(bytes(64))  # one slot freed by the slow reader
    slow.close()
    ring.write_many([bytes(64)] * 4)  # a closed reader no longer holds the writer back
    fast.close()


def test_zero_copy_views(ring_factory):
    ring = ring_factory(1024)
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"hello")
    view = reader.read(timeout_s=1, copy=False)
    assert isinstance(view, memoryview) and bytes(view) == b"hello"
    # Block policy: the record behind the view is not reclaimed before the next read.
    with pytest.raises(RingBufferFull):
        ring.write_many([bytes(100)] * 12, timeout_s=0.05)
    assert bytes(view) == b"hello" and reader.views_intact()
    views = reader.read_many(100, timeout_s=1, copy=False)
    assert all(len(v) == 100 for v in views)
    del view, views
    reader.close()


def test_zero_copy_views_detect_overwrite(ring_factory):
    ring = ring_factory(1024, on_full="overwrite")
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"hello")
    view = reader.read(timeout_s=1, copy=False)
    assert reader.views_intact()
    ring.write_many([bytes(100)] * 20)
    assert not reader.views_intact()
    del view
    reader.close()


def test_checksum_mode_round_trips_and_catches_payload_damage(ring_factory):
    ring = ring_factory(1 << 12, checksum=True)
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"abc")
    ring.write_many([b"d" * 10, b"e" * 5000 if False else b"e" * 2000])
    assert reader.read(timeout_s=1) == b"abc"
    assert reader.read_many(10, timeout_s=1) == [b"d" * 10, b"e" * 2000]
    ring.write(b"precious")
    ring._mm[ring._base + (reader._c % ring.capacity_bytes) + L.HEADER_SIZE] ^= 0xFF
    with pytest.raises(SegmentCorrupt, match="CRC"):
        reader.read(timeout_s=1)
    reader.close()


def test_close_semantics(ring_factory):
    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"last words")
    ring.close()
    ring.close()  # twice is fine
    with pytest.raises(RingBufferClosed):
        ring.write(b"more")
    assert reader.read(timeout_s=1) == b"last words"  # drains first
    t0 = time.perf_counter()
    with pytest.raises(RingBufferClosed):
        reader.read(timeout_s=5)
    assert time.perf_counter() - t0 < 1.0  # the close woke the reader
    reader.close()
    reader.close()
    with pytest.raises(RingBufferClosed):
        reader.read(timeout_s=0)
    assert not hasattr(reader, "unlink") and not hasattr(reader, "write")


def test_closing_wakes_a_sleeping_reader(ring_factory):
    import threading

    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    result = {}

    def wait():
        t0 = time.perf_counter()
        try:
            reader.read(timeout_s=10)
        except RingBufferClosed:
            result["closed_after"] = time.perf_counter() - t0

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)  # let it get past spinning, into the futex sleep
    ring.close()
    thread.join(5)
    assert 0.2 <= result["closed_after"] < 0.5
    reader.close()


def test_unlink_removes_the_segment_and_attach_fails_clearly(ring_factory):
    ring = RingBuffer.create(4096)
    path = L.segment_path(ring.name)
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"kept")
    ring.unlink()
    ring.unlink()
    import os

    assert not os.path.exists(path)
    assert reader.read(timeout_s=1) == b"kept"  # an attached reader keeps its mapping
    with pytest.raises(SegmentError, match="unlinked"):
        RingBuffer.attach(ring.handle)
    reader.close()


def test_context_managers_clean_up():
    import os

    with RingBuffer.create(4096) as ring:
        path = L.segment_path(ring.name)
        with RingBuffer.attach(ring.handle) as reader:
            ring.write(b"x")
            assert reader.read(timeout_s=1) == b"x"
        assert reader.closed
    assert not os.path.exists(path)


def test_garbage_collected_writer_unlinks_its_segment():
    import gc
    import os

    ring = RingBuffer.create(4096)
    path = L.segment_path(ring.name)
    del ring
    gc.collect()
    assert not os.path.exists(path)


def test_handle_is_small_and_picklable_but_the_ends_are_not(ring_factory):
    ring = ring_factory()
    blob = ForkingPickler.dumps(ring.handle)
    assert len(blob) < 300
    handle = ForkingPickler.loads(blob)
    assert handle == ring.handle and isinstance(handle, RingHandle)
    reader = RingBuffer.attach(handle)
    with pytest.raises(TypeError, match="handle"):
        ForkingPickler.dumps(ring)
    with pytest.raises(TypeError, match="handle"):
        ForkingPickler.dumps(reader)
    exc = ForkingPickler.loads(ForkingPickler.dumps(Lapped(3)))
    assert exc.lost == 3
    exc = ForkingPickler.loads(ForkingPickler.dumps(RingBufferFull("m", written=2)))
    assert exc.written == 2
    reader.close()


def test_handle_from_another_node_is_refused(ring_factory):
    ring = ring_factory()
    foreign = RingHandle(ring.name, ring.capacity_bytes, "another-boot-id")
    assert not foreign.is_local()
    with pytest.raises(SegmentError, match="node"):
        RingBuffer.attach(foreign)


def test_too_many_readers(ring_factory):
    ring = ring_factory(max_readers=2)
    a, b = RingBuffer.attach(ring.handle), RingBuffer.attach(ring.handle)
    with pytest.raises(TooManyReaders, match="max_readers"):
        RingBuffer.attach(ring.handle)
    a.close()
    c = RingBuffer.attach(ring.handle)  # the freed slot is reused
    assert ring.live_readers() == 2
    b.close()
    c.close()
    assert ring.live_readers() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity_bytes": 8},
        {"on_full": "drop"},
        {"max_readers": 0},
        {"max_readers": 5000},
        {"block_timeout_s": -1},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        RingBuffer.create(**kwargs)


def test_bad_read_arguments_are_refused(ring_factory):
    ring = ring_factory()
    with pytest.raises(ValueError):
        RingBuffer.attach(ring.handle, start="middle")
    reader = RingBuffer.attach(ring.handle)
    with pytest.raises(ValueError):
        reader.read_many(max_items=0)
    reader.close()


def test_a_forked_child_never_closes_or_unlinks_the_parents_ring(ring_factory):
    import os

    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    pid = os.fork()
    if pid == 0:  # the child runs the finalizers that interpreter exit would run
        try:
            reader._finalizer()
            ring._finalizer()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.exists(L.segment_path(ring.name))
    ring.write(b"still open")
    assert reader.read(timeout_s=1) == b"still open"
    assert ring.live_readers() == 1  # the child did not free the parent's reader slot
    reader.close()


# -- readers that sleep in an event loop (wake_fd / arm) ----------------------------------------


def _readable(fd: int, timeout_s: float) -> bool:
    import select

    return bool(select.select([fd], [], [], timeout_s)[0])


def test_an_armed_reader_is_woken_through_its_fd_by_the_next_publish(ring_factory):
    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    fd = reader.wake_fd()
    assert reader.arm() is False  # nothing waiting: sleep
    assert not _readable(fd, 0.05)
    ring.write(b"one")
    assert _readable(fd, 1.0)
    assert reader.read_many(8, timeout_s=0) == [b"one"]
    assert reader.arm() is False  # drains the datagram; armed again
    assert not _readable(fd, 0.05)
    ring.write_many([b"two", b"three"])
    assert _readable(fd, 1.0)
    assert reader.read_many(8, timeout_s=0) == [b"two", b"three"]
    ring.write(b"four")  # not armed: arm says a record is waiting (and drains the old wake-up)
    assert reader.arm() is True
    assert not _readable(fd, 0.05)
    reader.close()


def test_an_armed_reader_in_another_process_is_woken(ring_factory):
    """The writer is another process (forked): the datagram crosses processes, and the reader's
    loop (here ``asyncio``'s) wakes from its own epoll, with no thread."""
    import asyncio
    import multiprocessing as mp

    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    ctx = mp.get_context("fork")
    go = ctx.Event()

    def write_later():
        go.wait(5)
        time.sleep(0.1)
        ring.write(b"from the child")

    async def wait_for_record():
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        loop.add_reader(reader.wake_fd(), woken.set)
        try:
            assert reader.arm() is False
            go.set()
            await asyncio.wait_for(woken.wait(), 5)
            return reader.read_many(8, timeout_s=0)
        finally:
            loop.remove_reader(reader.wake_fd())

    child = ctx.Process(target=write_later)
    child.start()
    assert asyncio.run(wait_for_record()) == [b"from the child"]
    child.join(5)
    assert child.exitcode == 0
    reader.close()


def test_closing_the_ring_wakes_an_armed_reader(ring_factory):
    ring = RingBuffer.create(4096)
    reader = RingBuffer.attach(ring.handle)
    fd = reader.wake_fd()
    assert reader.arm() is False
    ring.close()
    assert _readable(fd, 1.0)
    with pytest.raises(RingBufferClosed):
        reader.read_many(8, timeout_s=0)
    reader.close()
    ring.unlink()
