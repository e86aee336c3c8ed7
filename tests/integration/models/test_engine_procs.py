"""vLLM's engine core and worker forked from the fork server (runtime.serve.engine_procs), with
the real engine on the tiny model, in a front end of its own (a subprocess this test can kill):
they are the server's children, the worker is bound as vLLM binds it and named as vLLM names
it, the environment the server was given is the one vLLM sets, and when the front end dies
without a word the engine's processes end too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def warm_engine(tmp_path_factory):
    env = dict(os.environ)
    env.update(
        VLLM_CPU_OMP_THREADS_BIND="0",  # what `serve run` sets on a 2-core box
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_CACHE_ROOT=str(tmp_path_factory.mktemp("vllm")),
    )
    env["RAYGENT_ENGINE_FORK_SERVER"] = "1"  # what the gateway sets on its replicas
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.models.warm_engine"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("{"):  # vLLM logs to stdout too
            line = proc.stdout.readline()
        assert line, f"the front end exited ({proc.wait()}) before reporting"
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_the_engine_core_and_worker_are_forked_from_the_server(warm_engine):
    _, report = warm_engine
    assert report["finish_reason"] == "length"
    assert report["server_started"] is True
    assert report["core_parent"] == report["server"] != report["front"]
    # The worker is the server's child too, in the engine core's process group.
    assert report["group_titles"] == ["VLLM::Worker"]


def test_the_worker_is_bound_as_vllm_binds_a_spawned_one(warm_engine):
    _, report = warm_engine
    assert report["group_affinity"] == [[0]]


def test_the_server_was_given_the_environment_vllm_sets(warm_engine):
    _, report = warm_engine
    assert report["predicted_env"] == report["vllm_env"]


def test_the_engine_ends_with_its_front_end(warm_engine):
    proc, report = warm_engine
    engine = [report["core"], *report["group"]]
    assert all(_alive(p) for p in engine)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in engine if _alive(p)], "engine processes outlived their front end"
