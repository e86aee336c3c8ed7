"""The fork server's rules (runtime.serve.engine_procs) without starting an engine: when a
child may be forked rather than spawned, and the OpenMP binding a forked worker applies."""

from __future__ import annotations

import logging
import os
from importlib.util import find_spec

import pytest

from runtime.serve import engine_procs


@pytest.fixture
def server(monkeypatch):
    """A process that started a fork server with the current environment (none is launched)."""
    recorded = {k: os.environ.get(k) for k in engine_procs._IMPORT_ENV + engine_procs._OMP_ENV}
    monkeypatch.setattr(engine_procs, "_server_env", recorded)
    return monkeypatch


def test_children_are_forked_while_the_environment_matches_the_servers(server):
    assert engine_procs._warm_context() is engine_procs._CONTEXT


def test_a_variable_read_at_import_that_changed_means_spawn(server, caplog):
    server.setenv("LD_PRELOAD", "/elsewhere/libtcmalloc.so")
    with caplog.at_level(logging.WARNING, logger=engine_procs.__name__):
        assert engine_procs._warm_context() is None
    assert "LD_PRELOAD" in caplog.text and "spawning instead" in caplog.text


def test_an_openmp_binding_is_applied_by_the_child_so_it_does_not_mean_spawn(server):
    server.setenv("OMP_NUM_THREADS", "1")
    server.setenv("GOMP_CPU_AFFINITY", "0")
    assert engine_procs._warm_context() is engine_procs._CONTEXT
    server.setenv("KMP_AFFINITY", "granularity=fine,explicit,proclist=[0]")  # Intel's: not ours
    assert engine_procs._warm_context() is None


def test_a_binding_the_server_had_and_the_parent_does_not_means_spawn(server):
    server.setattr(engine_procs, "_server_env", {**engine_procs._server_env, "OMP_PLACES": "{1}"})
    server.delenv("OMP_PLACES", raising=False)
    assert engine_procs._warm_context() is None


def test_no_server_no_warm_context(monkeypatch):
    monkeypatch.setattr(engine_procs, "_server_env", None)
    assert engine_procs._warm_context() is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GOMP_CPU_AFFINITY": "0 1", "OMP_NUM_THREADS": "2"}, ([0, 1], 2)),
        ({"OMP_PLACES": "{2,3}", "OMP_PROC_BIND": "true"}, ([2, 3], None)),
        ({"OMP_NUM_THREADS": "1"}, ([], 1)),
        ({}, ([], None)),
        ({"KMP_AFFINITY": "granularity=fine,explicit,proclist=[0]"}, None),
        ({"GOMP_CPU_AFFINITY": "0-3"}, None),  # a form vLLM does not write
        ({"OMP_NUM_THREADS": "0"}, None),
    ],
)
def test_openmp_binding_in_the_forms_vllm_writes(env, expected):
    assert engine_procs._omp_binding(env) == expected


needs_torch = pytest.mark.skipif(find_spec("torch") is None, reason="torch is not installed")


@needs_torch
def test_the_child_binds_itself_as_libgomp_would_have(monkeypatch):
    calls = {}
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: calls.update(cpus=cpus))
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.update(threads=n))
    engine_procs._bind_threads({"GOMP_CPU_AFFINITY": "0", "OMP_NUM_THREADS": "1"})
    assert calls == {"cpus": [0], "threads": 1}


def test_turned_off_or_a_foreign_fork_server_means_no_server(monkeypatch):
    monkeypatch.setattr(engine_procs, "_server_env", None)
    monkeypatch.setattr(engine_procs, "_vllm_cpu_build", lambda: True)
    monkeypatch.setenv(engine_procs.ENABLE_ENV, "0")
    assert engine_procs.start_server() is False
    monkeypatch.delenv(engine_procs.ENABLE_ENV)  # unset: not asked for (a ModelServer replica)
    assert engine_procs.start_server() is False
    monkeypatch.setenv(engine_procs.ENABLE_ENV, "1")
    monkeypatch.setattr(engine_procs.forkserver._forkserver, "_forkserver_pid", 12345)
    assert engine_procs.start_server() is False
    assert not engine_procs.server_started()


@needs_torch
def test_the_servers_environment_names_torchs_libgomp(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    env = engine_procs._import_env()
    assert env["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
    preload = env.get("LD_PRELOAD", "")
    assert "libgomp" in preload and all(os.path.exists(p) for p in preload.split(":"))
    monkeypatch.setenv("LD_PRELOAD", "/opt/libiomp5.so")  # an OpenMP preloaded already: kept
    assert "libgomp" not in engine_procs._import_env().get("LD_PRELOAD", "")
