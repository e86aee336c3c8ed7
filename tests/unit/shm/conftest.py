"""Fixtures for the shm tests: debug invariants on, and no leaked segments after any test."""

import os

# Before shm is imported anywhere (children inherit the environment): assert the ring
# invariants after every cursor move.
os.environ["RAYGENT_SHM_DEBUG"] = "1"

import pytest  # noqa: E402

from shm import RingBuffer, _mapping, _segment  # noqa: E402
from shm import _layout as L  # noqa: E402


@pytest.fixture(autouse=True, params=["native", "pure"])
def ring_paths(request, monkeypatch):
    """Every shm test runs twice: with the C hot paths (``shm._ringfast``) and with the pure
    Python ones, which must stay complete on their own (a machine without a compiler runs
    them). Forked children inherit the switch; spawned ones read ``RAYGENT_SHM_PURE``. A test
    marked ``pure_only`` injects faults into Python internals that the C path does not call."""
    if request.param == "native":
        if L.PURE:
            pytest.skip("RAYGENT_SHM_PURE=1 in the environment")
        if _mapping._Seg is None:
            pytest.fail("shm._ringfast is not built: pip install -e . with a C compiler")
        if request.node.get_closest_marker("pure_only"):
            pytest.skip("injects into the Python paths")
        monkeypatch.setattr(_mapping, "NATIVE", True)
        monkeypatch.delenv("RAYGENT_SHM_PURE", raising=False)
    else:
        monkeypatch.setattr(_mapping, "NATIVE", False)
        monkeypatch.setenv("RAYGENT_SHM_PURE", "1")
    return request.param


def _ours_or_orphaned(name: str) -> bool:
    pid = _segment.owner_pid_from_name(name)
    return pid is not None and (pid == os.getpid() or not _segment.is_alive(pid, 0, 0))


def _segments() -> set[str]:
    return {n for n in os.listdir(L.SHM_DIR) if n.startswith(L.NAME_PREFIX)}


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Fail a test that leaves a segment of this process, or of a dead child, in /dev/shm.

    Segments of other live processes (another suite running on the machine) are not ours to
    judge and are ignored.
    """
    before = _segments()
    yield
    leaked = sorted(n for n in _segments() - before if _ours_or_orphaned(n))
    for name in leaked:
        _segment.unlink(name)
    assert not leaked, f"test leaked shm segments: {leaked}"


@pytest.fixture
def ring_factory():
    """Create rings that are closed and unlinked after the test, whatever happens."""
    made = []

    def make(capacity_bytes=4096, on_full="block", **kwargs):
        ring = RingBuffer.create(capacity_bytes=capacity_bytes, on_full=on_full, **kwargs)
        made.append(ring)
        return ring

    yield make
    for ring in made:
        ring.close()
        ring.unlink()
