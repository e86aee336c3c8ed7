"""Shared fixtures. Every async test is checked for leaked asyncio tasks."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(autouse=True)
async def _no_leaked_tasks():
    """Fail a test that leaves tasks running on its loop (every task needs an owner)."""
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for t in leaked:
        t.cancel()
    assert not leaked, f"test leaked asyncio tasks: {leaked}"
