"""The ring's robustness promises, each with a test: torn reads, untrusted lengths, dead writers
and readers, attach/exit cycles, the janitor, /dev/shm exhaustion, spawn, idle CPU."""

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import _shm_procs as procs
import pytest

import shm._reader
import shm.ring
from shm import (
    Lapped,
    RingBuffer,
    RingBufferFull,
    SegmentCorrupt,
    SegmentNoSpace,
    ShmError,
    WriterDead,
    _segment,
    sweep_dead_segments,
)
from shm import _layout as L

FORK = mp.get_context("fork")
SPAWN = mp.get_context("spawn")


def _start(ctx, target, *args):
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    return proc, parent


def _wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        assert time.perf_counter() < deadline, "condition not met in time"
        time.sleep(0.001)


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)


# -- torn reads --------------------------------------------------------------------------------


@pytest.mark.pure_only
@pytest.mark.parametrize("how", ["read", "read_many", "read_zero_copy"])
def test_a_copy_overwritten_mid_read_is_never_returned(ring_factory, monkeypatch, how):
    """Deterministic race: the writer laps the reader between the header load and the copy."""
    ring = ring_factory(1024, on_full="overwrite")
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"A" * 100)
    real_unpack = shm._reader._REC_unpack
    fired = []

    def unpack_then_lap(buf, off):
        header = real_unpack(buf, off)
        if not fired:
            fired.append(True)
            ring.write_many([b"B" * 100] * 12)  # a whole lap: the "A" record is gone
        return header

    monkeypatch.setattr(shm._reader, "_REC_unpack", unpack_then_lap)
    read = {
        "read": lambda: reader.read(timeout_s=1),
        "read_many": lambda: reader.read_many(10, timeout_s=1),
        "read_zero_copy": lambda: reader.read(timeout_s=1, copy=False),
    }[how]
    with pytest.raises(Lapped) as info:
        read()
    assert fired and info.value.lost >= 1
    monkeypatch.undo()
    for data in reader.read_many(100, timeout_s=1):
        assert data == b"B" * 100  # whatever comes next is whole
    reader.close()


def test_racing_writer_across_wraps_never_yields_torn_bytes():
    """A writer process laps a 4 KiB overwrite ring as fast as it can; a reader process checks
    every byte of every record it gets, and that gaps equal what Lapped reported."""
    writer, wconn = _start(FORK, procs.write_forever, 4096, "overwrite", (8, 600))
    handle = wconn.recv()
    reader, rconn = _start(FORK, procs.lapping_reader, handle, 1.0)
    assert rconn.recv() == "attached"
    records, laps, lost = rconn.recv()
    wconn.send("stop")
    written = wconn.recv()
    reader.join(5)
    writer.join(5)
    assert reader.exitcode == 0 and writer.exitcode == 0
    assert records > 1000 and laps > 0 and lost > 0, (records, laps, lost, written)


# -- lengths and cursors from shared memory are never trusted --------------------------------


def _ring_with_records(ring_factory, on_full="block"):
    ring = ring_factory(1024, on_full=on_full)
    reader = RingBuffer.attach(ring.handle)
    ring.write(b"one")
    ring.write(b"two")
    return ring, reader


@pytest.mark.parametrize("length", [1024, 10_000, 2**31, L.WRAP_LENGTH - 1])
def test_corrupt_record_length_raises(ring_factory, length):
    ring, reader = _ring_with_records(ring_factory)
    off = ring._base + reader._c % ring.capacity_bytes
    n, chk, seq = L.RECORD.unpack_from(ring._mm, off)
    L.RECORD.pack_into(ring._mm, off, length, L.record_check(length, seq), seq)  # check passes
    with pytest.raises(SegmentCorrupt, match="length|frame"):
        reader.read(timeout_s=1)
    with pytest.raises(SegmentCorrupt):
        reader.read_many(10, timeout_s=1)
    reader.close()


@pytest.mark.parametrize(
    ("count", "lengths", "match"),
    [
        (0, [], "count"),
        (1000, [], "count"),
        (2, [3, 999], "add up"),
        (2, [2**32 - 1, 4], "add up"),
        (3, [1, 1, 1], "add up"),
    ],
)
def test_corrupt_batch_frame_raises(ring_factory, count, lengths, match):
    ring = ring_factory(1024)
    reader = RingBuffer.attach(ring.handle)
    ring.write_many([b"abc", b"defg"])  # one frame: count 2, lengths [3, 4]
    payload = ring._base + reader._c % ring.capacity_bytes + L.HEADER_SIZE
    L.FRAME_COUNT.pack_into(ring._mm, payload, count)
    for i, n in enumerate(lengths[:2]):
        L.FRAME_COUNT.pack_into(ring._mm, payload + 4 + 4 * i, n)
    with pytest.raises(SegmentCorrupt, match=match):
        reader.read_many(10, timeout_s=1)
    reader.close()


def test_batch_frames_round_trip_with_partial_reads(ring_factory):
    ring = ring_factory(1 << 16)
    reader = RingBuffer.attach(ring.handle)
    views = RingBuffer.attach(ring.handle)
    sent = [bytes([i]) * (i % 13) for i in range(100)]
    ring.write_many(sent)
    got = [reader.read(timeout_s=1) for _ in range(3)]
    got += reader.read_many(5, timeout_s=1)
    got += reader.read_many(1000, timeout_s=1)
    assert got == sent
    got = views.read_many(10, timeout_s=1, copy=False)
    got += [views.read(timeout_s=1, copy=False)]
    got += views.read_many(1000, timeout_s=1)  # copy=True after views: bytes
    assert [bytes(g) for g in got] == sent
    assert all(type(g) is bytes for g in got[11:])
    del got
    reader.close()
    views.close()


def test_corrupt_record_check_and_seq_raise(ring_factory):
    ring, reader = _ring_with_records(ring_factory)
    off = ring._base + reader._c % ring.capacity_bytes
    n, chk, seq = L.RECORD.unpack_from(ring._mm, off)
    L.RECORD.pack_into(ring._mm, off, n + 1, chk, seq)  # length changed, check not
    with pytest.raises(SegmentCorrupt, match="check"):
        reader.read(timeout_s=1)
    L.RECORD.pack_into(ring._mm, off, n, chk, seq + 5)
    with pytest.raises(SegmentCorrupt, match="seq"):
        reader.read(timeout_s=1)
    reader.close()


@pytest.mark.parametrize(
    "write_cursor", [3, 8, 2**63, 2**64 - 8], ids=["unaligned", "behind", "far", "max"]
)
def test_corrupt_write_cursor_raises(ring_factory, write_cursor):
    ring, reader = _ring_with_records(ring_factory)
    reader.read(timeout_s=1)
    L.U64.pack_into(ring._mm, L.OFF_WRITE, write_cursor)
    with pytest.raises(SegmentCorrupt):
        reader.read(timeout_s=1)
    reader.close()


def test_corrupt_tail_during_lap_recovery_raises(ring_factory):
    ring, reader = _ring_with_records(ring_factory, on_full="overwrite")
    L.U64.pack_into(ring._mm, L.OFF_WRITE, 10 * ring.capacity_bytes)  # looks lapped
    L.U64.pack_into(ring._mm, L.OFF_TAIL, 12345)
    with pytest.raises(SegmentCorrupt):
        reader.read(timeout_s=1)
    reader.close()


def test_corrupt_slot_cursor_does_not_hold_the_writer(ring_factory):
    ring = ring_factory(1024, block_timeout_s=0.05)
    reader = RingBuffer.attach(ring.handle)
    ring._q[reader._slot_cursor] = 2**63  # a garbage cursor
    ring.write_many([bytes(64)] * 100)  # many laps: the garbage cursor is ignored
    reader.close()


def test_corrupt_header_fields_fail_attach(ring_factory):
    ring = ring_factory()
    ring._mm[L.OFF_MAGIC] ^= 0xFF
    with pytest.raises(SegmentCorrupt, match="magic"):
        RingBuffer.attach(ring.handle)
    ring._mm[L.OFF_MAGIC] ^= 0xFF
    L.U64.pack_into(ring._mm, L.OFF_CAPACITY, 1 << 40)
    with pytest.raises(SegmentCorrupt, match="capacity"):
        RingBuffer.attach(ring.handle)


def test_random_garbage_never_crashes_or_hangs(ring_factory):
    """Fuzz: scribble over cursors and records; every read returns bounded bytes or raises a
    ShmError, promptly."""
    rng = random.Random(7)
    outcomes = set()
    for _ in range(200):
        ring = ring_factory(512, on_full=rng.choice(["block", "overwrite"]))
        reader = RingBuffer.attach(ring.handle)
        ring.write_many([bytes([i]) * rng.randrange(0, 60) for i in range(6)])  # <= 480 bytes
        mm = ring._mm
        for _ in range(rng.randrange(1, 6)):
            target = rng.choice(["data", "write", "intent", "tail"])
            if target == "data":
                pos = ring._base + rng.randrange(0, ring.capacity_bytes - 8)
                mm[pos : pos + 8] = rng.randbytes(8)
            else:
                off = {"write": L.OFF_WRITE, "intent": L.OFF_INTENT, "tail": L.OFF_TAIL}[target]
                value = rng.choice([0, 8, rng.randrange(2**64), rng.randrange(4096) * 8])
                L.U64.pack_into(mm, off, value)
        t0 = time.perf_counter()
        for _ in range(10):
            try:
                batch = reader.read_many(4, timeout_s=0)
                assert all(len(b) <= ring.max_record_bytes for b in batch)
                outcomes.add("data" if batch else "empty")
            except ShmError as exc:
                outcomes.add(type(exc).__name__)
        assert time.perf_counter() - t0 < 1.0
        reader.close()
        ring.close()
        ring.unlink()
    assert "SegmentCorrupt" in outcomes


# -- dead writers and readers ------------------------------------------------------------------


def test_writer_sigkill_is_detected_within_two_seconds():
    proc, conn = _start(FORK, procs.write_some_then_hang, 3)
    handle = conn.recv()
    reader = RingBuffer.attach(handle, start="oldest")
    assert reader.read(timeout_s=1) == b"0"
    os.kill(proc.pid, signal.SIGKILL)  # not reaped yet: a zombie must count as dead too
    killed = time.perf_counter()
    assert reader.read_many(10, timeout_s=1) == [b"1", b"2"]  # what it published is kept
    with pytest.raises(WriterDead):
        reader.read(timeout_s=10)
    assert time.perf_counter() - killed < 2.0
    proc.join(5)
    reader.close()
    assert handle.name in sweep_dead_segments()


def test_dead_reader_is_evicted_and_never_holds_a_block_writer(ring_factory):
    ring = ring_factory(1024, on_full="block", block_timeout_s=1.0)
    proc, conn = _start(FORK, procs.attach_and_hang, ring.handle)
    conn.recv()
    assert ring.live_readers() == 1
    ring.write_many([bytes(100)] * 8)  # full (8 x 120 bytes); the doomed reader read nothing
    _kill(proc)
    t0 = time.perf_counter()
    ring.write_many([bytes(100)] * 50)  # would block forever on the dead reader
    assert time.perf_counter() - t0 < 1.0
    assert ring.live_readers() == 0


def test_stuck_live_reader_blocks_the_writer_only_until_its_timeout(ring_factory):
    ring = ring_factory(1024, on_full="block")
    proc, conn = _start(FORK, procs.attach_and_hang, ring.handle)
    conn.recv()
    ring.write_many([bytes(100)] * 8)  # full
    t0 = time.perf_counter()
    with pytest.raises(RingBufferFull):
        ring.write_many([bytes(100)] * 5, timeout_s=0.3)
    assert 0.3 <= time.perf_counter() - t0 < 1.0
    _kill(proc)


# -- attaching processes never destroy the segment (CPython issue 82300) -----------------------

_CYCLES_DRIVER = textwrap.dedent(
    """
    import os, sys
    from shm import RingBuffer, RingHandle
    handle = RingHandle(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    for i in range({cycles}):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                reader = RingBuffer.attach(handle, start="oldest")
                code = 0 if reader.read(timeout_s=5) == b"hello" else 2
                if i % 2:
                    reader.close()  # the other half exit without closing
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status:
            sys.exit("cycle %d failed: %d" % (i, status))
    print("ok")
    """
)


def test_200_attach_exit_cycles_leave_the_segment_alive(ring_factory):
    # Children are forked from a fresh interpreter that never started a resource tracker, the
    # situation in which Python 3.11's SharedMemory attach unlinks the segment at exit.
    ring = ring_factory(4096, max_readers=8)
    ring.write(b"hello")
    driver = _CYCLES_DRIVER.format(cycles=200)
    handle = ring.handle
    repo = os.path.dirname(os.path.dirname(shm.ring.__file__))
    env = {**os.environ, "PYTHONPATH": repo}
    result = subprocess.run(
        [sys.executable, "-c", driver, handle.name, str(handle.capacity_bytes), handle.boot_id],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert os.path.exists(L.segment_path(ring.name))
    reader = RingBuffer.attach(ring.handle, start="oldest")  # dead readers' slots were reused
    ring.write(b"still here")
    assert reader.read_many(5, timeout_s=1) == [b"hello", b"still here"]
    reader.close()
    assert ring.live_readers() == 0


# -- the janitor ---------------------------------------------------------------------------------


def test_janitor_removes_segments_of_sigkilled_writers(ring_factory):
    mine = ring_factory()  # a live owner: must survive the sweep
    writers = [_start(FORK, procs.create_and_hang) for _ in range(20)]
    names = [conn.recv() for _, conn in writers]
    for proc, _ in writers:
        os.kill(proc.pid, signal.SIGKILL)
    for proc, _ in writers[:10]:
        proc.join(5)  # half reaped, half left as zombies
    for proc, _ in writers[10:]:
        _wait_until(lambda pid=proc.pid: not _segment.is_alive(pid, 0, 0))  # SIGKILL landed
    removed = sweep_dead_segments()
    assert set(names) <= set(removed)
    left = [n for n in names if os.path.exists(L.segment_path(n))]
    assert left == []
    assert os.path.exists(L.segment_path(mine.name))
    for proc, _ in writers[10:]:
        proc.join(5)


def test_janitor_spares_unknown_and_foreign_names(tmp_path):
    (tmp_path / "not-ours").write_bytes(b"x")
    (tmp_path / f"{L.NAME_PREFIX}{os.getpid()}-abc").write_bytes(b"x" * 10)  # live owner
    (tmp_path / f"{L.NAME_PREFIX}junk").write_bytes(b"x")
    assert sweep_dead_segments(shm_dir=str(tmp_path)) == []
    dead = FORK.Process(target=os.getpid)
    dead.start()
    dead.join()
    (tmp_path / f"{L.NAME_PREFIX}{dead.pid}-abc").write_bytes(b"")  # half-made, owner gone
    assert sweep_dead_segments(dry_run=True, shm_dir=str(tmp_path)) == [
        f"{L.NAME_PREFIX}{dead.pid}-abc"
    ]
    assert sweep_dead_segments(shm_dir=str(tmp_path)) == [f"{L.NAME_PREFIX}{dead.pid}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["not-ours", f"{L.NAME_PREFIX}{os.getpid()}-abc", f"{L.NAME_PREFIX}junk"]
    )


def test_liveness_sees_pid_reuse_and_zombies():
    me = _segment.current_process()
    assert _segment.is_alive(me.pid, me.start, me.pidns)
    assert not _segment.is_alive(me.pid, me.start + 1, me.pidns)  # same pid, other process
    assert _segment.is_alive(me.pid, me.start, me.pidns + 1)  # other namespace: can't judge
    assert not _segment.is_alive(0, 0, 0)


# -- /dev/shm exhaustion fails at creation -----------------------------------------------------


def test_ring_larger_than_free_shm_fails_at_creation():
    free = _segment.free_bytes()
    before = set(os.listdir(L.SHM_DIR))
    with pytest.raises(SegmentNoSpace, match="capacity_bytes"):
        RingBuffer.create(capacity_bytes=free + (1 << 30))
    assert set(os.listdir(L.SHM_DIR)) == before


def test_posix_fallocate_reservation_failure_is_clear(monkeypatch):
    # Skip the statvfs pre-check so that posix_fallocate itself must refuse. The request is
    # larger than the whole tmpfs, which the kernel rejects before allocating a single page.
    st = os.statvfs(L.SHM_DIR)
    monkeypatch.setattr(_segment, "free_bytes", lambda: 1 << 62)
    before = set(os.listdir(L.SHM_DIR))
    with pytest.raises(SegmentNoSpace, match="cannot reserve"):
        RingBuffer.create(capacity_bytes=st.f_blocks * st.f_frsize + (1 << 30))
    assert set(os.listdir(L.SHM_DIR)) == before


# -- spawn-started processes ---------------------------------------------------------------------


def test_spawned_reader_receives_everything(ring_factory):
    ring = ring_factory(1 << 14)
    sent = [procs.stamped(i, 8 + i % 300) for i in range(2000)]  # several laps
    proc, conn = _start(SPAWN, procs.read_all, ring.handle, len(sent))
    assert conn.recv() == "attached"
    for i in range(0, len(sent), 10):
        ring.write_many(sent[i : i + 10])
    assert conn.recv() == sent
    proc.join(10)
    assert proc.exitcode == 0


def test_spawned_writer_feeds_this_process():
    proc, conn = _start(SPAWN, procs.write_then_close, 500)
    handle = conn.recv()
    reader = RingBuffer.attach(handle, start="oldest")
    conn.send("go")
    got = []

    def drain():
        while True:
            got.extend(reader.read_many(100, timeout_s=10))

    with pytest.raises(shm.RingBufferClosed):
        drain()
    assert got == [b"rec-%d" % i for i in range(500)]
    reader.close()
    conn.send("done")
    proc.join(10)
    assert proc.exitcode == 0


# -- idle readers do not burn a core ---------------------------------------------------------------


def test_idle_reader_cpu_is_below_two_percent(ring_factory):
    ring = ring_factory()
    proc, conn = _start(FORK, procs.idle_cpu, ring.handle)
    cpu, wall = conn.recv()
    proc.join(5)
    assert wall >= 1.0
    assert cpu / wall < 0.02, f"idle reader used {cpu / wall:.1%} of a core"


def test_janitor_command_line_dry_run():
    repo = os.path.dirname(os.path.dirname(shm.ring.__file__))
    result = subprocess.run(
        [sys.executable, "-m", "shm.janitor", "--dry-run"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": repo},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr


def test_readers_wait_without_the_futex_too(ring_factory):
    """Where FUTEX_WAIT is unavailable (seccomp, not Linux) readers sleep in short steps."""
    import threading

    ring = ring_factory()
    reader = RingBuffer.attach(ring.handle)
    reader._res.futex.available = False
    timer = threading.Timer(0.2, ring.write, args=(b"late",))
    timer.start()
    t0 = time.perf_counter()
    assert reader.read(timeout_s=5) == b"late"
    assert time.perf_counter() - t0 < 1.0
    timer.join()
    reader.close()
