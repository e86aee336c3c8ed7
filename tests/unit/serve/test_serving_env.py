"""What ``serve run serve_app:app`` sets up before Ray starts: the ingress switch and the
engine's cores (runtime.serve.options), on a fake environment and CPU set."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from runtime.config import GatewayConfig
from runtime.serve import options as serving


@pytest.fixture
def env(monkeypatch):
    for name in (
        serving.HA_PROXY_ENV,
        serving.HA_PROXY_THREADS_ENV,
        serving.OMP_BIND_ENV,
        "VLLM_CPU_NUM_OF_RESERVED_CPU",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(serving, "_has_gpu", lambda: False)
    return monkeypatch


def test_the_engine_gets_every_core_but_the_reserved_ones(env):
    env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert serving.split_cpus_for_engine() == [0, 1, 2]
    assert os.environ[serving.OMP_BIND_ENV] == "0,1,2"
    env.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "2")
    env.delenv(serving.OMP_BIND_ENV)
    assert serving.split_cpus_for_engine() == [0, 1]


def test_a_binding_the_user_chose_a_gpu_or_one_core_changes_nothing(env):
    env.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    env.setenv(serving.OMP_BIND_ENV, "1")
    assert serving.split_cpus_for_engine() is None and os.environ[serving.OMP_BIND_ENV] == "1"
    env.delenv(serving.OMP_BIND_ENV)
    env.setattr(serving, "_has_gpu", lambda: True)
    assert serving.split_cpus_for_engine() is None
    env.setattr(serving, "_has_gpu", lambda: False)
    env.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert serving.split_cpus_for_engine() is None
    assert serving.OMP_BIND_ENV not in os.environ


def test_the_ingress_is_chosen_only_before_ray_starts_and_a_users_choice_wins(env):
    ray = pytest.importorskip("ray")
    env.setattr(ray, "is_initialized", lambda: False)
    env.setattr(serving, "split_cpus_for_engine", lambda: None)
    assert serving.prepare_ray_env(GatewayConfig())
    assert os.environ[serving.HA_PROXY_ENV] == "1"
    env.setenv(serving.HA_PROXY_ENV, "0")
    serving.prepare_ray_env(GatewayConfig())
    assert os.environ[serving.HA_PROXY_ENV] == "0"
    env.delenv(serving.HA_PROXY_ENV)
    serving.prepare_ray_env(GatewayConfig(ingress="proxy"))
    assert os.environ[serving.HA_PROXY_ENV] == "0"
    env.delenv(serving.HA_PROXY_ENV)
    env.setattr(ray, "is_initialized", lambda: True)
    assert not serving.prepare_ray_env(GatewayConfig())
    assert serving.HA_PROXY_ENV not in os.environ


def test_haproxy_gets_one_thread_per_core_the_engine_leaves_unless_the_user_chose(env):
    ray = pytest.importorskip("ray")
    env.setattr(ray, "is_initialized", lambda: False)
    env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    env.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "2")
    serving.prepare_ray_env(GatewayConfig())
    assert os.environ[serving.HA_PROXY_THREADS_ENV] == "2"
    env.delenv(serving.OMP_BIND_ENV)
    env.setenv(serving.HA_PROXY_THREADS_ENV, "8")
    serving.prepare_ray_env(GatewayConfig())
    assert os.environ[serving.HA_PROXY_THREADS_ENV] == "8"
    env.delenv(serving.HA_PROXY_THREADS_ENV)
    env.delenv(serving.OMP_BIND_ENV)
    env.setattr(serving, "_has_gpu", lambda: True)  # no split: Serve's default stays
    serving.prepare_ray_env(GatewayConfig())
    assert serving.HA_PROXY_THREADS_ENV not in os.environ


_CHILD = """
import os, sys, threading, time
engine = {int(sys.argv[1])}
def bound():
    os.sched_setaffinity(0, engine)  # as vLLM binds its OpenMP thread
    time.sleep(60)
threading.Thread(target=bound, daemon=True).start()
time.sleep(0.5)
print("ready", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def _child(code: str, *args: str) -> Iterator[int]:
    """A Python child running ``code``; yields its pid once it printed ``ready``."""
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def _masks(pid: int) -> dict[int, set[int]]:
    """Each thread's affinity, by thread id."""
    return {int(t): os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux only")
def test_the_cluster_moves_off_the_engine_cores_except_threads_bound_to_them(env):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two cores")
    engine, rest = {cpus[0]}, set(cpus) - {cpus[0]}
    env.setenv(serving.OMP_BIND_ENV, str(cpus[0]))
    with _child(_CHILD, str(cpus[0])) as pid:
        assert serving.keep_cluster_off_engine_cores(pid) == 1
        got = sorted(tuple(sorted(m)) for m in _masks(pid).values())
        assert got == sorted([tuple(sorted(engine)), tuple(sorted(rest))])


_TWO_THREADS = """
import threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux only")
def test_an_engine_loop_is_pinned_beside_its_worker_and_its_other_threads_are_not(env):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two cores")
    env.setenv(serving.OMP_BIND_ENV, str(cpus[0]))
    with _child(_TWO_THREADS) as pid:
        assert serving.pin_engine_loops([pid, 2**22 + 1]) == 1  # a gone pid is skipped
        masks = _masks(pid)
        assert masks.pop(pid) == {cpus[0]}
        assert list(masks.values()) == [set(cpus)]


def test_no_split_no_pinning(env):
    env.delenv(serving.OMP_BIND_ENV, raising=False)
    assert serving.pin_engine_loops([os.getpid()]) == 0


_FAMILY = """
import os, subprocess, sys, threading, time
def nicer():  # a thread already below the target: left alone
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
    time.sleep(60)
threading.Thread(target=nicer, daemon=True).start()
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
time.sleep(0.5)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux only")
def test_yield_cpu_lowers_every_thread_of_the_engine_and_its_children():
    parent = subprocess.Popen([sys.executable, "-c", _FAMILY], stdout=subprocess.PIPE)
    try:
        child = int(parent.stdout.readline())
        start = os.getpriority(os.PRIO_PROCESS, parent.pid)
        threads = len(os.listdir(f"/proc/{parent.pid}/task"))
        changed = serving.yield_cpu([parent.pid], 10)
        nice = {
            pid: sorted(
                os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")
            )
            for pid in (parent.pid, child)
        }
        assert nice[parent.pid] == [10] * (threads - 1) + [15], nice  # never raised
        assert set(nice[child]) == {10}
        assert changed == threads - 1 + len(nice[child]) and start < 10
        assert serving.yield_cpu([parent.pid], 10) == 0
    finally:
        parent.kill()
        parent.wait()


def test_gateway_replicas_auto_is_two_where_the_machine_has_room(env):
    from runtime.config import ModelConfig, ResourcesConfig

    cpu = ModelConfig()
    gpu = ModelConfig(resources=ResourcesConfig(num_cpus=1, num_gpus=1))
    auto = GatewayConfig()
    assert serving.gateway_replicas(GatewayConfig(replicas=3), [cpu]) == 3
    assert serving.gateway_replicas(auto, []) == 2  # thin: no engine in it
    assert serving.gateway_replicas(auto, [cpu]) == 1  # a CPU engine takes the machine
    env.setattr(serving, "_gpu_count", lambda: 1)
    assert serving.gateway_replicas(auto, [gpu]) == 1
    env.setattr(serving, "_gpu_count", lambda: 2)
    assert serving.gateway_replicas(auto, [gpu]) == 2
    assert serving.gateway_replicas(auto, [gpu, gpu]) == 1  # two GPUs per replica, two GPUs
    with pytest.raises(ValueError, match="'auto'"):
        GatewayConfig(replicas=0)


def test_engine_hosts_name_their_setup_hook_where_a_worker_reads_it_and_keep_the_callers_env():
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR as KEY

    given = {"env_vars": {"HF_HOME": "/models"}, "pip": ["x"]}
    out = serving.engine_host_runtime_env(given)
    assert out == {
        "env_vars": {"HF_HOME": "/models", KEY: serving.ENGINE_HOST_SETUP_HOOK},
        "pip": ["x"],
    }
    assert given == {"env_vars": {"HF_HOME": "/models"}, "pip": ["x"]}  # not modified
    assert "worker_process_setup_hook" not in out  # Ray ignores it on an actor
    mine = serving.engine_host_runtime_env({"env_vars": {KEY: "my.hook"}})
    assert mine["env_vars"][KEY] == "my.hook"
    # the name resolves to the function Ray will call
    from ray._common.utils import load_class

    assert load_class(serving.ENGINE_HOST_SETUP_HOOK) is serving.engine_host_setup
