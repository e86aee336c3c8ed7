"""The C hot paths (``shm._ringfast``) against the layout and the rules of the Python ones.

The rest of the shm suite runs on both paths (``ring_paths`` in conftest), and so do the batch
tests here; the ``native_only`` ones pin what only the C side can get wrong: its copy of the
layout constants and its seqlock check. The batch tests cover what the C writer must split into
several frames or hand back to the Python path half-way.
"""

import pytest

from shm import RingBuffer, _mapping
from shm import _layout as L
from shm.errors import RecordTooLarge, RingBufferFull

native = pytest.importorskip("shm._ringfast") if _mapping._Seg is not None else None


@pytest.fixture
def native_only(ring_paths):
    if ring_paths != "native":
        pytest.skip("about the C paths")


def test_the_c_layout_is_the_python_layout(native_only):
    for name in (
        *("Q_TAIL", "Q_INTENT", "Q_WRITE", "Q_LAST", "Q_SLOTS_HIGH"),
        *("OFF_WAITERS", "OFF_NEW_READER", "OFF_FUTEX", "OFF_MAX_READERS", "OFF_SLOTS"),
        *("SLOT_SIZE", "SLOT_PID", "SLOT_TOKEN", "SLOT_WAKE", "CHECK_KEY"),
    ):
        assert getattr(native, name) == getattr(L, name), name
    from shm._writer import DIRECT_COPY_BYTES

    assert native.DIRECT_COPY_BYTES == DIRECT_COPY_BYTES


def test_both_ends_use_the_c_paths(ring_factory, native_only):
    ring = ring_factory(4096)
    reader = RingBuffer.attach(ring.handle)
    assert ring._native is not None and reader._native is not None
    reader.close()
    assert reader._native is None  # released with the mapping


def test_a_copy_the_writer_may_have_overwritten_is_refused(ring_factory, native_only):
    """The seqlock check: INTENT past c + capacity after the copy means the bytes may be torn;
    the C read refuses the copy (the Python path then sorts out the lap)."""
    ring = ring_factory(1024, on_full="overwrite")
    reader = RingBuffer.attach(ring.handle, start="oldest")
    ring.write(b"A" * 100)
    q = reader._q
    intent = q[L.Q_INTENT]
    q[L.Q_INTENT] = reader._c + 1024 + 8  # as a writer about to overwrite the record would
    assert reader._native.get1(reader._c, reader._s, -1) is False
    records, *_ = reader._native.copy_run(reader._c, q[L.Q_WRITE], reader._s, 10)
    assert records == [b"A" * 100]  # copied, but the caller's INTENT check throws it away
    q[L.Q_INTENT] = intent
    assert reader._native.get1(reader._c, reader._s, -1) == b"A" * 100
    reader.close()


def test_a_batch_larger_than_a_frame_goes_out_as_several_frames_in_order(ring_factory):
    ring = ring_factory(1 << 20)
    reader = RingBuffer.attach(ring.handle, start="oldest")
    records = [i.to_bytes(8, "little") * 8 for i in range(5000)]  # 64 B each: 5 frames
    ring.write_many(records)
    got = []
    while len(got) < len(records):
        got += reader.read_many(1000, timeout_s=1)
    assert got == records
    reader.close()


def test_mixed_batches_cross_wraps_and_come_back_whole(ring_factory):
    """Small records (frames), large ones (alone) and non-bytes buffers in one call, through a
    ring small enough to wrap several times: the C path hands over to the Python path at a
    wrap and takes over again."""
    ring = ring_factory(32 * 1024)
    reader = RingBuffer.attach(ring.handle, start="oldest")
    for lap in range(40):
        batch = [bytes([lap]) * (lap % 7 + 1) for _ in range(50)]
        batch.insert(25, bytes([lap]) * 5000)
        batch.append(bytearray(b"tail-%d" % lap))
        ring.write_many(batch)
        got = []
        while len(got) < len(batch):
            got += reader.read_many(64, timeout_s=1)
        assert got == [bytes(b) for b in batch]
    reader.close()


def test_a_record_too_large_refuses_the_whole_batch_before_any_copy(ring_factory):
    ring = ring_factory(4096)
    reader = RingBuffer.attach(ring.handle, start="oldest")
    with pytest.raises(RecordTooLarge):
        ring.write_many([b"a", b"b", bytes(5000)])
    assert reader.read(timeout_s=0) is None
    reader.close()


def test_a_full_ring_reports_what_the_c_path_already_wrote(ring_factory):
    ring = ring_factory(8192, block_timeout_s=0.05)
    reader = RingBuffer.attach(ring.handle, start="oldest")
    records = [bytes(100)] * 200  # ~20 KiB: more than the ring holds while nobody reads
    with pytest.raises(RingBufferFull) as info:
        ring.write_many(records)
    written = info.value.written
    assert 0 < written < len(records)
    got = []
    while True:
        batch = reader.read_many(256, timeout_s=0)
        if not batch:
            break
        got += batch
    assert len(got) == written
    reader.close()
