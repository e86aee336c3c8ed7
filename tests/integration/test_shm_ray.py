"""shm rings between the driver and Ray actors on one node: handles travel through Ray, readers
attach in the actor's worker process, a killed writer actor is detected and swept."""

import os
import signal
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from shm import RingBuffer, RingBufferClosed, WriterDead, sweep_dead_segments  # noqa: E402
from shm import _layout as L  # noqa: E402

pytestmark = pytest.mark.integration

# Workers cannot import this test module by name: ship the actor classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def ray_node(ray_session):
    """The session's local Ray (tests/conftest.py starts it once)."""
    return ray_session


@pytest.fixture(autouse=True)
def no_leaked_segments():
    before = {n for n in os.listdir(L.SHM_DIR) if n.startswith(L.NAME_PREFIX)}
    yield
    after = {n for n in os.listdir(L.SHM_DIR) if n.startswith(L.NAME_PREFIX)}
    sweep_dead_segments()
    leaked = {n for n in after - before if os.path.exists(L.segment_path(n))}
    assert not leaked, leaked


@ray.remote(num_cpus=0)
class Consumer:
    """Attaches to a ring in its own worker process and reads from it."""

    def __init__(self, handle):
        self.reader = RingBuffer.attach(handle, start="oldest")

    def read(self, count):
        out = []
        while len(out) < count:
            out.extend(self.reader.read_many(64, timeout_s=10))
        return out

    def close(self):
        self.reader.close()


@ray.remote(num_cpus=0)
class Producer:
    """Owns a ring in its worker process."""

    def __init__(self):
        self.ring = RingBuffer.create(capacity_bytes=1 << 16)

    def handle(self):
        return self.ring.handle

    def pid(self):
        return os.getpid()

    def write(self, records):
        self.ring.write_many(records)

    def close(self):
        self.ring.close()
        self.ring.unlink()


def test_driver_broadcasts_to_actors(ray_node):
    ring = RingBuffer.create(capacity_bytes=1 << 14)
    try:
        consumers = [Consumer.remote(ring.handle) for _ in range(2)]
        ray.get([c.read.remote(0) for c in consumers])  # attached
        sent = [b"%d" % i * (i % 50) for i in range(3000)]  # several laps of the ring
        pending = [c.read.remote(len(sent)) for c in consumers]
        for i in range(0, len(sent), 100):
            ring.write_many(sent[i : i + 100], timeout_s=30)
        assert ray.get(pending, timeout=60) == [sent, sent]
        ray.get([c.close.remote() for c in consumers])
        assert ring.live_readers() == 0
    finally:
        ring.close()
        ring.unlink()


def test_actor_writes_driver_reads(ray_node):
    producer = Producer.remote()
    handle = ray.get(producer.handle.remote())
    reader = RingBuffer.attach(handle, start="oldest")
    ray.get(producer.write.remote([b"a", b"b", b"c"]))
    assert reader.read_many(10, timeout_s=10) == [b"a", b"b", b"c"]
    ray.get(producer.close.remote())
    with pytest.raises(RingBufferClosed):
        reader.read(timeout_s=10)
    reader.close()
    ray.kill(producer)


def test_killed_writer_actor_is_detected_and_swept(ray_node):
    producer = Producer.remote()
    handle = ray.get(producer.handle.remote())
    pid = ray.get(producer.pid.remote())
    reader = RingBuffer.attach(handle, start="oldest")
    ray.get(producer.write.remote([b"last"]))
    os.kill(pid, signal.SIGKILL)
    killed = time.perf_counter()
    assert reader.read(timeout_s=5) == b"last"
    with pytest.raises(WriterDead):
        reader.read(timeout_s=10)
    assert time.perf_counter() - killed < 2.0
    reader.close()
    deadline = time.perf_counter() + 5
    while handle.name not in sweep_dead_segments():
        assert time.perf_counter() < deadline, "segment of the killed actor was not swept"
        time.sleep(0.05)
    assert not os.path.exists(L.segment_path(handle.name))
