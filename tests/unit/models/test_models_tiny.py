"""``ensure_tiny_model``'s cache protocol (lock, temporary directory, rename), with the build
itself replaced by a stub so no torch is needed. The real build is an integration test."""

from __future__ import annotations

import threading

import pytest

from runtime.models import tiny


@pytest.fixture
def fake_build(monkeypatch):
    calls = []
    gate = threading.Event()

    def build(out):
        calls.append(out)
        gate.wait(5)  # hold the lock while the other callers pile up behind it
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(tiny, "_build", build)
    return calls, gate


def test_concurrent_first_use_builds_once(tmp_path, fake_build):
    calls, gate = fake_build
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(tiny.ensure_tiny_model(tmp_path)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    target = tmp_path / tiny.TINY_VERSION
    assert results == [target] * 4 and len(calls) == 1
    assert (target / ".complete").exists() and (target / "config.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # built aside, renamed into place


def test_leftovers_of_a_crashed_build_are_replaced(tmp_path, fake_build):
    calls, gate = fake_build
    gate.set()
    stale = tmp_path / f".{tiny.TINY_VERSION}.999.tmp"
    stale.mkdir()
    half = tmp_path / tiny.TINY_VERSION  # no .complete: from a build that never finished
    half.mkdir()
    (half / "junk").write_text("x")
    path = tiny.ensure_tiny_model(tmp_path)
    assert len(calls) == 1 and not stale.exists() and not (path / "junk").exists()
    assert tiny.ensure_tiny_model(tmp_path) == path and len(calls) == 1  # cached now


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch, fake_build):
    _, gate = fake_build
    gate.set()
    monkeypatch.setenv("RAYGENT_MODEL_CACHE", str(tmp_path / "c"))
    assert tiny.ensure_tiny_model() == tmp_path / "c" / tiny.TINY_VERSION
