"""Helpers of the model-server tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from runtime.config import LimitsConfig, ModelConfig, WarmupConfig
from runtime.models import ModelServerClient, model_deployment

MAIN = "main"
ENGINE_PIDS: set[int] = set()
"""Every engine process a test saw (through ``stats()``); none may outlive the package."""


def small_model(**overrides: Any) -> ModelConfig:
    """The tiny model, sized for the test box."""
    base: dict[str, Any] = {
        "engine_args": {"max_model_len": 1024, "kv_cache_memory_bytes": 256 * 2**20},
        "resources": {"num_cpus": 0.25},
        "warmup": WarmupConfig(requests=2, concurrency=2, max_tokens=4),
    }
    base.update(overrides)
    return ModelConfig(**base)


LIMITS = LimitsConfig(max_tokens=1000, max_n=3, max_prompt_tokens=512)


@dataclass
class Deployed:
    """A deployed model: its handle, a client, and the app name."""

    name: str
    app: str
    handle: Any
    client: ModelServerClient

    async def stats(self) -> dict[str, Any]:
        stats = await self.handle.stats.remote()
        ENGINE_PIDS.update(stats.get("engine_pids", ()))
        return stats


def deploy(serve_instance, name: str, config: ModelConfig, env: dict[str, str], **kw) -> Deployed:
    app = f"test-{name}"
    handle = serve_instance.run(
        model_deployment(name, config, LIMITS, runtime_env={"env_vars": env}, **kw),
        name=app,
        route_prefix=None,
    )
    return Deployed(name, app, handle, ModelServerClient(handle, name))


RELEASED: set[str] = set()
"""Applications deleted without waiting for them to stop (:func:`release`)."""


def release(serve_instance, *apps: str) -> None:
    """Delete ``apps`` without waiting: each stop costs Serve's ingress drain and an engine's
    shutdown (about 8 s), which the next module's setup then overlaps. The package's teardown
    waits for them (:func:`wait_released`) before it checks that no engine outlived them."""
    for app in apps:
        serve_instance.delete(app, _blocking=False)
        RELEASED.add(app)


def wait_released(serve_instance, timeout_s: float = 120.0) -> None:
    """Wait until every released application is gone."""
    deadline = time.monotonic() + timeout_s
    while left := RELEASED & set(serve_instance.status().applications):
        if time.monotonic() > deadline:
            raise RuntimeError(f"applications not deleted after {timeout_s:g}s: {sorted(left)}")
        time.sleep(0.2)
    RELEASED.clear()


@dataclass
class MainModel(Deployed):
    early_reply: Any = None  # to a chat sent the moment the deploy returned


async def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll async ``predicate`` (state of another process, which offers no event to wait on)
    until it returns a truthy value; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(interval_s)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has exited; it only awaits its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
