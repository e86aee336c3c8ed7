"""Names of raygent's Serve deployments, handles to them, and the options they share.

Kept apart from the deployments themselves so that the runtime's clients (which only need to
*reach* deployments) do not import the classes that define them.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

from runtime.config import AutoscalingConfig, GatewayConfig, ResourcesConfig

__all__ = [
    "GATEWAY",
    "REGISTRY",
    "TASK_QUEUE",
    "actor_options",
    "agent_deployment_name",
    "prepare_ray_env",
    "scaling_options",
    "serve_handles",
    "keep_cluster_off_engine_cores",
    "split_cpus_for_engine",
]

HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
"""Serve's switch for its HAProxy ingress; read by every Ray process when it starts."""

GATEWAY = "Gateway"
"""The application's HTTP ingress; it also hosts the models with ``placement: gateway``."""

REGISTRY = "Registry"
"""The application's registry (membership and shared state feeds)."""

TASK_QUEUE = "TaskQueue"
"""The in-process task queue, deployed only when no Redis is configured."""


def agent_deployment_name(agent: str) -> str:
    """The Serve deployment that hosts the replicas of ``agent``."""
    return f"Agent-{agent}"


def serve_handles(app_name: str) -> Callable[[str], Any]:
    """A function from agent name to that agent's ``DeploymentHandle`` in ``app_name``; each
    handle is made once (a handle owns a router: making one per call would cost a lookup and
    lose the router's queue-length cache)."""
    from ray import serve

    @functools.cache
    def handle(agent: str) -> Any:
        return serve.get_deployment_handle(agent_deployment_name(agent), app_name=app_name)

    return handle


def actor_options(resources: ResourcesConfig, *more: ResourcesConfig) -> dict[str, Any]:
    """Serve's ``ray_actor_options`` for a replica with ``resources`` (plus ``more``: a gateway
    replica reserves its own and those of the models it hosts)."""
    every = (resources, *more)
    out: dict[str, Any] = {
        "num_cpus": sum(r.num_cpus for r in every),
        "num_gpus": sum(r.num_gpus for r in every),
    }
    memory = [r.memory_bytes for r in every if r.memory_bytes is not None]
    if memory:
        out["memory"] = sum(memory)
    custom: dict[str, float] = {}
    for r in every:
        for k, v in r.custom.items():
            custom[k] = custom.get(k, 0.0) + v
    if custom:
        out["resources"] = custom
    return out


def scaling_options(replicas: int, autoscaling: AutoscalingConfig | None) -> dict[str, Any]:
    """``num_replicas``, or Serve's ``autoscaling_config`` when the config asks for it."""
    if autoscaling is None:
        return {"num_replicas": replicas}
    return {
        "autoscaling_config": {
            "min_replicas": autoscaling.min_replicas,
            "max_replicas": autoscaling.max_replicas,
            "target_ongoing_requests": autoscaling.target_ongoing_requests,
        }
    }


def prepare_ray_env(gateway: GatewayConfig) -> bool:
    """Set up the environment of the Ray cluster this process is about to start.

    ``serve run serve_app:app`` imports the application *before* it calls ``ray.init``, and the
    processes Ray starts inherit this process's environment; so this is the one moment at which
    the application can pick Serve's ingress (``gateway.ingress``) and name the engine's cores
    (:func:`split_cpus_for_engine`). A variable the user set already wins, and a process already
    connected to Ray (a test, ``serve deploy`` against a running cluster) is left alone: its
    cluster was set up when it started.

    The listen host does not change: Serve forces all interfaces only when the variable is set
    before ``ray.serve`` is imported, which is not the case here, so ``http_options.host``
    keeps its loopback default.

    Returns:
        Whether the environment was changed.
    """
    import ray

    if ray.is_initialized():
        return False
    split_cpus_for_engine()
    os.environ.setdefault(HA_PROXY_ENV, "1" if gateway.ingress == "haproxy" else "0")
    return True


OMP_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
"""vLLM's choice of the cores its CPU engine worker binds its OpenMP threads to."""


def split_cpus_for_engine() -> list[int] | None:
    """On a CPU-only machine, name the cores vLLM's engine will have.

    vLLM's CPU backend binds the engine worker's threads to all cores but the last
    (``VLLM_CPU_NUM_OF_RESERVED_CPU``, default 1), which it leaves to "the frontend". A Ray
    cluster does not know that: the raylet, GCS, dashboard, Serve's controller and HAProxy and
    every replica are scheduled onto the engine's cores too and preempt it. So the split is
    made explicit before Ray starts -- ``VLLM_CPU_OMP_THREADS_BIND`` names vLLM's own choice of
    cores, inherited by every process of the cluster -- and once the engine is warm the gateway
    moves everything else onto the reserved ones (:func:`keep_cluster_off_engine_cores`; not
    before, so a cold start has every core). Measured on 2 cores, the suite's chat load (437
    tokens in, 32 out) at 16 concurrent: 34.7 requests/s as Ray places them, 39-41 split.
    Nothing changes if the user chose a binding already, on a machine with a GPU, or with too
    few cores to split.

    Returns:
        The engine's cores, or None when nothing was changed.
    """
    if OMP_BIND_ENV in os.environ or _has_gpu() or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    reserve = int(os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") or 1)
    if len(cpus) <= reserve:
        return None
    engine = cpus[:-reserve]
    os.environ[OMP_BIND_ENV] = ",".join(map(str, engine))
    return engine


def keep_cluster_off_engine_cores(root: int | None = None) -> int:
    """Move every thread of this node's Ray processes off the engine's cores
    (``VLLM_CPU_OMP_THREADS_BIND``), except the threads vLLM bound to them.

    The processes are ``root`` and its descendants; by default the process that started the
    raylet (``serve run``, whose children are GCS, raylet, dashboard and monitors, and whose
    grandchildren are every worker: Serve's controller and HAProxy, all replicas), or the
    raylet alone when its parent is gone (``ray start``). Nothing outside the cluster -- the
    shell ``serve run`` was typed in -- is touched. The gateway calls this once its engines
    are warm: until then a cold start has every core. Linux only; a thread that cannot be
    moved (another user's, gone) is skipped.

    Returns:
        How many threads were moved.
    """
    bind = os.environ.get(OMP_BIND_ENV)
    if not bind or not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return 0
    engine = {int(c) for c in bind.split(",") if c.strip().isdigit()}
    rest = set(os.sched_getaffinity(0)) - engine
    if not engine or not rest:
        return 0
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int(_stat_fields(int(entry.name))[1])
                children.setdefault(ppid, []).append(int(entry.name))
    if root is None:
        raylet = int(os.environ.get("RAY_RAYLET_PID") or 0)
        if raylet <= 0:
            return 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(_stat_fields(raylet)[1])
            root = parent if parent > 1 else raylet
        if root is None:
            return 0
    moved, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                if os.sched_getaffinity(tid) <= engine:
                    continue  # bound to the engine's cores by vLLM: the engine itself
                os.sched_setaffinity(tid, rest)
                moved += 1
            except OSError:
                continue
    return moved


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, session, ..."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rfind(b")") + 2 :].decode().split()


def _has_gpu() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/accel"))
