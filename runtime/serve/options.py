"""Names of raygent's Serve deployments, handles to them, and the options they share.

Kept apart from the deployments themselves so that the runtime's clients (which only need to
*reach* deployments) do not import the classes that define them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from runtime.config import AutoscalingConfig, GatewayConfig, ModelConfig, ResourcesConfig
from runtime.serve.autoscaling import POLICY as QUEUE_DEPTH_POLICY

__all__ = [
    "ENGINE_HOST_SETUP_HOOK",
    "GATEWAY",
    "HA_PROXY_ENV",
    "HA_PROXY_THREADS_ENV",
    "REGISTRY",
    "TASK_QUEUE",
    "actor_options",
    "agent_deployment_name",
    "engine_host_runtime_env",
    "engine_host_setup",
    "engine_host_setup_at",
    "gateway_replicas",
    "prepare_ray_env",
    "keep_cluster_off_engine_cores",
    "pin_engine_loops",
    "scaling_options",
    "serve_at_node_priority",
    "yield_cpu",
    "serve_handles",
    "split_cpus_for_engine",
]

log = logging.getLogger(__name__)

HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
"""Serve's switch for its HAProxy ingress; read by every Ray process when it starts."""

HA_PROXY_THREADS_ENV = "RAY_SERVE_HAPROXY_NBTHREAD"
"""Serve's HAProxy thread count (its default: 4); read by the process that writes the config."""

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


def scaling_options(
    replicas: int, autoscaling: AutoscalingConfig | None, *, queue_depth: bool = True
) -> dict[str, Any]:
    """``num_replicas``, or Serve's ``autoscaling_config`` when the config asks for it: with
    raygent's queue-depth policy (``runtime.serve.autoscaling``) for deployments whose replicas
    report their depth, else Serve's default policy (``queue_depth=False``: the gateway)."""
    if autoscaling is None:
        return {"num_replicas": replicas}
    from ray.serve.config import DEFAULT_METRICS_INTERVAL_S  # how often replicas report

    window = autoscaling.look_back_period_s
    config: dict[str, Any] = {
        "min_replicas": autoscaling.min_replicas,
        "max_replicas": autoscaling.max_replicas,
        "target_ongoing_requests": autoscaling.target_ongoing_requests,
        "upscale_delay_s": autoscaling.upscale_delay_s,
        "downscale_delay_s": autoscaling.downscale_delay_s,
        "look_back_period_s": window,
    }
    if window / 2 < DEFAULT_METRICS_INTERVAL_S:
        # Serve wants reports more often than the window (it warns on the field, deprecated
        # for an environment variable its replicas do not read yet in Ray 2.60).
        config["metrics_interval_s"] = window / 2
    if queue_depth:
        config["policy"] = {"policy_function": QUEUE_DEPTH_POLICY}
    return {"autoscaling_config": config}


def gateway_replicas(gateway: GatewayConfig, hosted: list[ModelConfig]) -> int:
    """``gateway.replicas``, with ``auto`` resolved for this machine (see the field): 2 for a
    thin gateway, or when every model it hosts fits one GPU and there are GPUs for two
    replicas; else 1."""
    if gateway.replicas != "auto":
        return gateway.replicas
    if not hosted:
        return 2
    gpus_each = sum(m.resources.num_gpus for m in hosted)
    if gpus_each <= 0 or any(m.resources.num_gpus > 1 for m in hosted):
        return 1  # a CPU engine takes the machine's cores; two would halve each other
    return 2 if _gpu_count() >= 2 * gpus_each else 1


def prepare_ray_env(gateway: GatewayConfig) -> bool:
    """Set up the environment of the Ray cluster this process is about to start.

    ``serve run serve_app:app`` imports the application *before* it calls ``ray.init``, and the
    processes Ray starts inherit this process's environment; so this is the one moment at which
    the application can pick Serve's ingress (``gateway.ingress``), name the engine's cores
    (:func:`split_cpus_for_engine`) and give HAProxy one thread per core the engine leaves.
    A variable the user set already wins, and a process already connected to Ray (a test,
    ``serve deploy`` against a running cluster) is left alone: its cluster was set up when it
    started.

    The listen host does not change: Serve forces all interfaces only when the variable is set
    before ``ray.serve`` is imported, which is not the case here, so ``http_options.host``
    keeps its loopback default.

    Returns:
        Whether the environment was changed.
    """
    import ray

    if ray.is_initialized():
        return False
    engine = split_cpus_for_engine()
    os.environ.setdefault(HA_PROXY_ENV, "1" if gateway.ingress == "haproxy" else "0")
    if engine is not None:
        # HAProxy runs on the cores the engine leaves (keep_cluster_off_engine_cores): one
        # thread per core. Serve's 4 threads on the one reserved core of a 2-core machine
        # contend with each other and the gateway: at 32 concurrent streams, 4 alternated
        # restarts, 1 thread gave TTFT p50 179 ms against 216 ms with 4 (42-45 req/s both).
        reserved = len(os.sched_getaffinity(0)) - len(engine)
        os.environ.setdefault(HA_PROXY_THREADS_ENV, str(max(1, reserved)))
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


def _engine_cores() -> set[int]:
    """The engine's cores as ``VLLM_CPU_OMP_THREADS_BIND`` names them; empty when unset or
    where affinity cannot be set."""
    bind = os.environ.get(OMP_BIND_ENV)
    if not bind or not hasattr(os, "sched_setaffinity"):
        return set()
    return {int(c) for c in bind.split(",") if c.strip().isdigit()}


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
    engine = _engine_cores()
    if not engine or not os.path.isdir("/proc/self/task"):
        return 0
    rest = set(os.sched_getaffinity(0)) - engine
    if not rest:
        return 0
    if root is None:
        root = _cluster_root()
        if root is None:
            return 0
    moved = 0
    for pid in _tree(root):
        for tid in _threads(pid):
            try:
                if os.sched_getaffinity(tid) <= engine:
                    continue  # bound to the engine's cores by vLLM: the engine itself
                os.sched_setaffinity(tid, rest)
                moved += 1
            except OSError:
                continue
    return moved


def pin_engine_loops(pids: list[int]) -> int:
    """Bind the main thread of each vLLM engine-core process in ``pids`` -- its busy loop:
    schedule a step, hand it to the worker, wait, process the outputs -- to the engine's cores
    (``VLLM_CPU_OMP_THREADS_BIND``), beside its worker. The process's other threads (ZMQ input
    and output, msgpack) stay on the reserved cores.

    The loop and the worker take turns: the worker computes while the loop waits for it, and
    the loop schedules while the worker waits (both spin with ``sched_yield``, so on one core
    each hands the core straight to the other). On the reserved core instead, the loop queues
    behind whatever else runs there -- the HTTP frontend, HAProxy and, in a Ray cluster, every
    replica and daemon (about 4,000 wake-ups a second on an idle 2-core node) -- and every
    decode step waits for it. Measured on 2 cores, the suite's chat load (435 tokens in, 32
    out), alternated rounds on one running server (medians of 4): c=1 8.5 -> 8.6 requests/s,
    c=4 21.5 -> 25.0, c=16 42.2 -> 53.3, c=32 49.8 -> 69.3; TPOT p50 at c=32 16.4 -> 11.1 ms.
    The cost: TTFT p50 at c=16-32 rises 22-50% (57.9 -> 70.7 ms, 91.7 -> 138.4 ms). Every
    thread of the engine core there instead (its I/O too): c=1-4 +11-16%, c=16-32 -7-11%
    against this. Those rounds repeated their prompts, so from the second on vLLM's prefix
    cache held them; with fresh prompts (c=32, 3 rounds) the gain is smaller and the TTFT cost
    larger: 36.4 -> 39.4 requests/s, TPOT p50 21.8 -> 17.9 ms, TTFT p50 189 -> 276 ms, as the
    loop waits its turn beside the worker before it takes in new requests.

    Called once an engine is warm; nothing changes without the split (a GPU, a binding of the
    user's own, too few cores). Linux only.

    Returns:
        How many threads were bound.
    """
    engine = _engine_cores()
    if not engine:
        return 0
    pinned = 0
    for pid in pids:
        try:
            os.sched_setaffinity(pid, engine)  # a pid names its main thread
            pinned += 1
        except OSError:
            continue  # gone, or a core we may not use
    return pinned


def serve_at_node_priority(*, ingress: bool = False) -> int:
    """Run this process -- and, with ``ingress``, Serve's HAProxy on this node -- at the CPU
    priority of the node's raylet instead of Ray's worker niceness.

    Ray starts every worker at niceness 15 (``RAY_worker_niceness``), so that a node busy with
    tasks keeps its raylet and GCS responsive. For a process that holds an inference engine
    that is backwards: the engine core and its worker (spawned from here, they inherit this
    process's niceness), the HTTP frontend and the ingress are the request path, and at nice
    15 they get ~1/28 of the CPU share of any nice-0 process wanting the same core -- Ray's
    dashboard, GCS and raylet, a load generator, anything else on the box -- while plain vLLM
    runs at the node's default. Measured on 2 cores, the suite's chat load (437 tokens in, 32
    out), engine processes at nice 15 vs 0 on one running server: c=1 4.1-4.3 -> 6.1
    requests/s (TPOT p50 6.3 -> 4.6 ms), c=4 11.4-13.3 -> 14.9.

    Every thread of each process is changed (Linux gives each thread its own niceness, and a
    new thread or child process inherits its creator's). Only raising priority back to the
    raylet's level is attempted -- never above it -- and it needs ``CAP_SYS_NICE`` (or an
    ``RLIMIT_NICE`` that allows it); without that, a warning names the alternative: start
    the cluster with ``RAY_worker_niceness=0``. Outside a Ray worker, nothing changes.

    Returns:
        How many threads were changed.
    """
    if not os.path.isdir("/proc/self/task"):
        return 0
    raylet = int(os.environ.get("RAY_RAYLET_PID") or 0)
    try:
        target = os.getpriority(os.PRIO_PROCESS, raylet) if raylet > 0 else None
    except OSError:
        target = None
    if target is None:
        return 0
    pids = [os.getpid()]
    if ingress and (root := _cluster_root()) is not None:
        pids += [p for p in _tree(root) if _comm(p) == "haproxy"]
    changed = 0
    for pid in pids:
        for tid in _threads(pid):
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) > target:
                    os.setpriority(os.PRIO_PROCESS, tid, target)
                    changed += 1
            except PermissionError:
                log.warning(
                    "cannot raise the CPU priority of the serving path to the raylet's "
                    "(nice %d): no CAP_SYS_NICE. The engine runs at Ray's worker niceness and "
                    "yields the CPU to every other process; start Ray with "
                    "RAY_worker_niceness=0 to avoid that",
                    target,
                )
                return changed
            except OSError:
                continue  # the thread is gone
    return changed


def yield_cpu(pids: list[int], niceness: int) -> int:
    """Lower every thread of ``pids`` and of their descendants to ``niceness`` (never raise
    one): for engine processes that should take only the CPU the serving path leaves, such
    as a shadow variant's on a shared CPU -- at nice 19 against 0 a thread gets about 1/70 of
    a contended core. Lowering needs no privilege.

    Returns:
        How many threads were changed.
    """
    changed = 0
    for pid in {p for root in pids for p in _tree(root)}:
        for tid in _threads(pid):
            with contextlib.suppress(OSError):  # the thread is gone
                if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                    os.setpriority(os.PRIO_PROCESS, tid, niceness)
                    changed += 1
    return changed


ENGINE_HOST_SETUP_HOOK = "runtime.serve.options.engine_host_setup"
"""The function Ray runs first in each replica process that will hold an engine (see below)."""

_setup_at: float | None = None


def engine_host_runtime_env(runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """``runtime_env`` (not modified) plus what makes Ray run :func:`engine_host_setup` as the
    replica's worker process starts.

    Ray's ``worker_process_setup_hook`` is applied only to a job's runtime env (``ray.init``):
    on an actor's options Ray 2.60 accepts it and ignores it. What the job-level option does
    underneath is one environment variable naming the function, which every worker reads as
    it starts (``ray/_private/workers/default_worker.py``), before it takes a task; set in the
    actor's ``env_vars``, it does the same for that actor's process alone. A variable the
    caller set wins (a job-level hook of the user's is then not run in this replica).
    """
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR

    out = dict(runtime_env or {})
    env_vars = dict(out.get("env_vars") or {})
    env_vars.setdefault(WORKER_PROCESS_SETUP_HOOK_ENV_VAR, ENGINE_HOST_SETUP_HOOK)
    out["env_vars"] = env_vars
    return out


def engine_host_setup() -> None:
    """Run by Ray in a replica that will hold an engine, as soon as its worker process starts
    (:func:`engine_host_runtime_env`), before Serve builds the replica.

    A cold start's critical path is that one replica: its own start, then vLLM's chain (import
    vLLM here, spawn and import the engine core, spawn and import its worker, load, warm up),
    while every other replica of the application starts beside it. Two things move it forward:

    * priority from the first instruction (:func:`serve_at_node_priority`), so the other
      replicas' imports take what CPU the engine chain leaves, not half of it;
    * the vLLM import (seconds) happens now, before the worker takes the replica's creation
      task, instead of after the constructor has run;
    * a fork server imports vLLM beside it, and the engine core and its worker are forked from
      it already imported instead of spawned and importing one after the other
      (:mod:`runtime.serve.engine_procs`).

    The import runs here, not on a thread beside the replica's own set-up: the two import
    overlapping modules (``ray.serve``, ``runtime.*``), and Python resolves a cycle between
    two threads' imports by handing one of them a partially initialized module -- seen in CI
    as ``ImportError: cannot import name 'UserCallableWrapper' from partially initialized
    module 'ray.serve._private.replica'``, a failed replica and a retry.

    Measured on 2 cores (``serve run serve_app:app`` to ``/readyz`` 200): 46-48 s when the
    hook was set as an actor's ``worker_process_setup_hook`` and so never ran, 34-41 s now.
    """
    global _setup_at
    _setup_at = time.monotonic()
    raised = serve_at_node_priority()
    log.info("engine host: %d threads at the node's priority; importing vLLM", raised)
    from runtime.serve import engine_procs

    engine_procs.start_server()  # imports vLLM beside this import, for the engine's processes
    try:
        importlib.import_module("runtime.models.engine")
    except Exception:  # the replica's own import raises it again where it can be reported
        log.warning("early import of the engine module failed", exc_info=True)


def engine_host_setup_at() -> float | None:
    """When :func:`engine_host_setup` ran in this process (``time.monotonic()``), or None."""
    return _setup_at


def _cluster_root() -> int | None:
    """The process that started this node's raylet (``serve run``: its tree holds every Ray
    process of the node), or the raylet when that parent is gone (``ray start``); None
    outside Ray."""
    raylet = int(os.environ.get("RAY_RAYLET_PID") or 0)
    if raylet <= 0:
        return None
    try:
        parent = int(_stat_fields(raylet)[1])
    except (OSError, ValueError, IndexError):
        return None
    return parent if parent > 1 else raylet


def _tree(root: int) -> list[int]:
    """``root`` and every descendant (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int(_stat_fields(int(entry.name))[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, session, ..."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rfind(b")") + 2 :].decode().split()


def _has_gpu() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/accel"))


def _gpu_count() -> int:
    """GPUs of this node: Ray's count when connected, else the NVIDIA device files."""
    try:
        import ray

        if ray.is_initialized():
            return int(ray.cluster_resources().get("GPU", 0))
    except Exception:  # noqa: BLE001 - no Ray, or no cluster: look at the devices
        pass
    if not os.path.isdir("/dev"):
        return 0
    return sum(1 for n in os.listdir("/dev") if n.startswith("nvidia") and n[6:].isdigit())
