"""Shared fixtures. Every async test is checked for leaked asyncio tasks; Ray starts once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

RAY_TEST_AGENTS_DIR = Path(__file__).parent / "integration" / "ray"


@pytest.fixture(autouse=True)
async def _no_leaked_tasks():
    """Fail a test that leaves tasks running on its loop (every task needs an owner).
    Tasks that were already running when the test began (a module's runtime) are not its."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    leaked = [
        t for t in asyncio.all_tasks() if t is not current and t not in before and not t.done()
    ]
    for t in leaked:
        t.cancel()
    assert not leaked, f"test leaked asyncio tasks: {leaked}"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (each start costs seconds on 2
    cores), with Serve's HAProxy ingress. Workers can import the test agent modules in
    tests/integration/ray."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # The ingress ``serve run serve_app:app`` picks by default (runtime.serving), so the
        # Serve tests cross what users' requests cross.
        os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
        path = os.pathsep.join(
            p for p in (str(RAY_TEST_AGENTS_DIR), os.environ.get("PYTHONPATH")) if p
        )
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    yield ray
    ray.shutdown()
